/**
 * Interop suite for `compare`: pairs of images made by qemu-img/qemu-io at test time are compared
 * by both tools with the same command line; exit code (0 identical, 1 different, 2 open error),
 * stdout (messages, -p progress lines) and stderr must match, program name aside.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  must,
  patchFile,
  qcow2kit,
  qemuImg,
  qemuIoWrite,
  randomBytes,
  requireQemu,
  stackTraceLines,
  tempDir,
  writeMixedRawFile,
  writeRawFile,
  type RunResult,
} from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function normalize(text: string): string {
  return text.replace(/^qcow2kit: /gm, 'qemu-img: ').replace(/'qcow2kit --help'/g, "'qemu-img --help'");
}

function assertSameResult(qemu: RunResult, ours: RunResult, what: string): void {
  assert.deepEqual(stackTraceLines(ours.stderr), [], `${what}: stack trace:\n${ours.stderr}`);
  assert.deepEqual(
    { code: ours.code, stdout: ours.stdout, stderr: normalize(ours.stderr) },
    { code: qemu.code, stdout: qemu.stdout, stderr: qemu.stderr },
    what,
  );
}

/** Runs `compare ARGS` through both tools in `dir` and requires the same result; returns qemu's. */
async function sameCompare(dir: string, args: readonly string[]): Promise<RunResult> {
  const qemu = await qemuImg(['compare', ...args], { cwd: dir });
  const ours = await qcow2kit(['compare', ...args], { cwd: dir });
  assertSameResult(qemu, ours, `compare ${args.join(' ')}`);
  return qemu;
}

/** qcow2 image `name` of `size` with qemu-io commands applied. */
async function image(dir: string, name: string, size: string, commands: readonly string[], opts: string[] = []): Promise<void> {
  await must('qemu-img', ['create', '-f', 'qcow2', ...opts, name, size], { cwd: dir });
  if (commands.length > 0) await qemuIoWrite(join(dir, name), commands);
}

async function pairDir(t: TestContext): Promise<string> {
  const dir = await tempDir(t);
  const base = ['write -P 0xab 0 1M', 'write -P 0 2M 1M', 'write -z 4M 1M', 'write -P 0x11 6M 3M', 'write -P 0x55 31M 1M'];
  await image(dir, 'a.qcow2', '32M', base);
  // Same content, different allocation: zeros written as data, discarded, a different cluster size.
  await image(dir, 'same.qcow2', '32M', [...base, 'write -P 0 10M 2M', 'discard 2M 1M'], ['-o', 'cluster_size=4k']);
  await must('qemu-img', ['convert', '-O', 'raw', 'a.qcow2', 'a.raw'], { cwd: dir });
  await must('qemu-img', ['convert', '-S', '0', '-O', 'raw', 'a.qcow2', 'full.raw'], { cwd: dir });
  return dir;
}

describe('compare matches qemu-img', () => {
  test('identical content whatever the allocation', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await pairDir(t);
    assert.equal((await sameCompare(dir, ['a.qcow2', 'same.qcow2'])).code, 0);
    await sameCompare(dir, ['a.qcow2', 'a.raw']);
    await sameCompare(dir, ['-f', 'qcow2', '-F', 'raw', 'a.qcow2', 'full.raw']);
    await sameCompare(dir, ['a.qcow2', 'a.qcow2']);
    await sameCompare(dir, ['-s', 'a.qcow2', 'a.qcow2']);
    await sameCompare(dir, ['-s', 'full.raw', 'full.raw']);
    await sameCompare(dir, ['-q', 'a.qcow2', 'same.qcow2']);
  });

  test('content mismatch reports the first differing sector', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await pairDir(t);
    for (const [i, offset] of [1000, 512, 3 * MiB + 77, 5 * MiB + 4095, 31 * MiB + 1, 32 * MiB - 1].entries()) {
      const name = `p${i}.qcow2`;
      await image(dir, name, '32M', []);
      await must('qemu-img', ['convert', '-n', '-O', 'qcow2', 'a.qcow2', name], { cwd: dir });
      await qemuIoWrite(join(dir, name), [`write -P 0x5a ${offset} 1`]);
      const r = await sameCompare(dir, ['a.qcow2', name]);
      assert.equal(r.code, 1);
      await sameCompare(dir, [name, 'a.raw']);
      await sameCompare(dir, ['-q', name, 'a.qcow2']);
    }
    // A raw byte changed in place, inside a data region and inside a zero region.
    await writeRawFile(join(dir, 'b.raw'), 32 * MiB, []);
    await must('qemu-img', ['convert', '-n', '-f', 'qcow2', '-O', 'raw', 'a.qcow2', 'b.raw'], { cwd: dir });
    await patchFile(join(dir, 'b.raw'), 7 * MiB + 3, new Uint8Array([1]));
    await sameCompare(dir, ['a.qcow2', 'b.raw']);
    await sameCompare(dir, ['b.raw', 'a.qcow2']);
  });

  test('different sizes: warning, then the longer tail must read as zeros', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await pairDir(t);
    await image(dir, 'long.qcow2', '40M', []);
    await must('qemu-img', ['convert', '-n', '-O', 'qcow2', 'a.qcow2', 'long.qcow2'], { cwd: dir });
    assert.equal((await sameCompare(dir, ['a.qcow2', 'long.qcow2'])).code, 0);
    await sameCompare(dir, ['long.qcow2', 'a.qcow2']);
    await sameCompare(dir, ['-s', 'a.qcow2', 'long.qcow2']);
    await qemuIoWrite(join(dir, 'long.qcow2'), ['write -z 33M 1M', 'write -P 0 34M 1M', 'write -P 9 39846588 1']);
    assert.equal((await sameCompare(dir, ['a.qcow2', 'long.qcow2'])).code, 1);
    await sameCompare(dir, ['long.qcow2', 'a.qcow2']);
    await sameCompare(dir, ['-p', 'long.qcow2', 'a.qcow2']);
  });

  test('strict mode: allocation differences count', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await pairDir(t);
    await sameCompare(dir, ['-s', 'a.qcow2', 'same.qcow2']);
    await image(dir, 'empty.qcow2', '32M', []);
    await image(dir, 'zeros.qcow2', '32M', ['write -z 0 32M']);
    await sameCompare(dir, ['-s', 'empty.qcow2', 'zeros.qcow2']);
    await sameCompare(dir, ['empty.qcow2', 'zeros.qcow2']);
    await sameCompare(dir, ['-s', 'a.qcow2', 'empty.qcow2']);
  });

  test('backing chains and compressed clusters compare by content', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await writeMixedRawFile(join(dir, 'mixed.raw'), 12 * MiB, 3);
    await must('qemu-img', ['convert', '-c', '-O', 'qcow2', 'mixed.raw', 'c.qcow2'], { cwd: dir });
    await sameCompare(dir, ['c.qcow2', 'mixed.raw']);
    await image(dir, 'base.qcow2', '12M', ['write -P 1 0 6M']);
    await image(dir, 'top.qcow2', '16M', ['write -P 2 1M 1M', 'write -z 3M 1M'], ['-b', 'base.qcow2', '-F', 'qcow2']);
    await must('qemu-img', ['convert', '-O', 'raw', 'top.qcow2', 'flat.raw'], { cwd: dir });
    await sameCompare(dir, ['top.qcow2', 'flat.raw']);
    await sameCompare(dir, ['top.qcow2', 'base.qcow2']);
    await sameCompare(dir, ['-p', 'top.qcow2', 'base.qcow2']);
  });

  test('-p prints the same progress lines', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await pairDir(t);
    await sameCompare(dir, ['-p', 'a.qcow2', 'same.qcow2']);
    await sameCompare(dir, ['-p', 'a.qcow2', 'a.qcow2']);
    await sameCompare(dir, ['-p', '-q', 'a.qcow2', 'same.qcow2']);
    await sameCompare(dir, ['-p', '-s', 'a.qcow2', 'same.qcow2']);
  });

  test('errors: usage (1), open failures (2)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await pairDir(t);
    await writeRawFile(join(dir, 'junk.raw'), 4096, [{ offset: 0, data: randomBytes(1, 4096) }]);
    for (const args of [
      [],
      ['a.qcow2'],
      ['a.qcow2', 'b', 'c'],
      ['-Z', 'a.qcow2', 'a.raw'],
      ['-f'],
      ['missing', 'a.qcow2'],
      ['a.qcow2', 'missing'],
      ['-f', 'bogus', 'a.qcow2', 'a.raw'],
      ['-F', 'qcow2', 'a.qcow2', 'junk.raw'],
      ['-T', 'bogus', 'a.qcow2', 'a.raw'],
      ['-p', 'missing', 'a.qcow2'],
    ]) {
      await sameCompare(dir, args);
    }
  });
});
