/**
 * Interop suite for `dd`: the same operands through qemu-img 7.2 and qcow2kit must create outputs
 * of the same format, file size, content and allocation, with the same messages and exit codes.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { check, must, parseJson, qcow2kit, qemuImg, qemuIoWrite, requireQemu, stackTraceLines, tempDir, writeMixedRawFile, type RunResult } from './helpers.js';

function normalize(text: string): string {
  return text.replace(/^qcow2kit: /gm, 'qemu-img: ').replace(/'qcow2kit --help'/g, "'qemu-img --help'");
}

/** qemu-img map JSON without host offsets (the two tools may place clusters differently). */
async function mapOf(path: string): Promise<unknown> {
  const r = check(await qemuImg(['map', '--output=json', path]));
  return (parseJson(r.stdout, `map ${path}`) as Record<string, unknown>[]).map(({ offset: _offset, ...rest }) => rest);
}

/**
 * Runs `dd ARGS` with both tools in `dir`, the output name `OUT` replaced by a file in q/ and o/,
 * and requires the same result and equivalent outputs.
 */
async function sameDd(dir: string, args: readonly string[]): Promise<RunResult> {
  await mkdir(join(dir, 'q'), { recursive: true });
  await mkdir(join(dir, 'o'), { recursive: true });
  const n = `out-${Math.random().toString(36).slice(2, 8)}`;
  const qemu = await qemuImg(['dd', ...args.map((a) => a.replace('OUT', `q/${n}`))], { cwd: dir });
  const ours = await qcow2kit(['dd', ...args.map((a) => a.replace('OUT', `o/${n}`))], { cwd: dir });
  const what = `dd ${args.join(' ')}`;
  assert.deepEqual(stackTraceLines(ours.stderr), [], `${what}: stack trace:\n${ours.stderr}`);
  assert.deepEqual(
    { code: ours.code, stdout: ours.stdout, stderr: normalize(ours.stderr).replaceAll(`o/${n}`, `q/${n}`) },
    { code: qemu.code, stdout: qemu.stdout, stderr: qemu.stderr },
    what,
  );
  const q = join(dir, 'q', n);
  const o = join(dir, 'o', n);
  assert.equal(existsSync(o), existsSync(q), `${what}: output created by one tool only`);
  if (!existsSync(q)) return qemu;
  const [iq, io] = await Promise.all([q, o].map(async (p) => parseJson(check(await qemuImg(['info', '--output=json', p])).stdout, p) as Record<string, unknown>));
  assert.deepEqual([io!['format'], io!['virtual-size']], [iq!['format'], iq!['virtual-size']], `${what}: format and size`);
  assert.equal((await stat(o)).size, (await stat(q)).size, `${what}: file size`);
  assert.equal(check(await qemuImg(['compare', q, o])).stdout, 'Images are identical.\n', `${what}: content`);
  assert.deepEqual(await mapOf(o), await mapOf(q), `${what}: allocation`);
  if (iq!['format'] === 'qcow2') assert.equal((await qemuImg(['check', o])).code, 0, `${what}: qemu-img check`);
  return qemu;
}

describe('dd matches qemu-img', () => {
  test('copies, block sizes, count and skip (including qemu-img\'s count-before-skip)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await must('qemu-img', ['create', '-f', 'qcow2', join(dir, 'a.qcow2'), '3M']);
    await qemuIoWrite(join(dir, 'a.qcow2'), ['write -P 1 0 1M', 'write -c -P 2 2M 64k', 'write -z 1M 64k']);
    await writeMixedRawFile(join(dir, 'in.raw'), 1000 * 1000 + 7, 3);
    for (const args of [
      ['if=a.qcow2', 'of=OUT'],
      ['if=a.qcow2', 'of=OUT', 'bs=1M', 'count=2'],
      ['-O', 'qcow2', 'if=a.qcow2', 'of=OUT', 'bs=64k', 'skip=2', 'count=5'],
      ['-O', 'qcow2', 'if=a.qcow2', 'of=OUT', 'bs=1000', 'count=3'],
      ['if=a.qcow2', 'of=OUT', 'bs=1000', 'count=3'],
      ['-O', 'qcow2', '-f', 'raw', 'if=a.qcow2', 'of=OUT', 'bs=4k', 'skip=1'],
      ['if=a.qcow2', 'of=OUT', 'count=1k', 'bs=1'],
      ['-O', 'qcow2', 'if=a.qcow2', 'of=OUT', 'count=0'],
      ['if=in.raw', 'of=OUT', 'bs=3000', 'skip=7'],
      ['-O', 'qcow2', 'if=in.raw', 'of=OUT', 'bs=65536', 'count=4', 'skip=1'],
      ['of=OUT', 'if=in.raw', 'bs=1', 'bs=4096', 'count=100'],
    ]) {
      assert.equal((await sameDd(dir, args)).code, 0, args.join(' '));
    }
  });

  test('skip past the end: a warning and an empty output', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await must('qemu-img', ['create', '-f', 'qcow2', join(dir, 'a.qcow2'), '3M']);
    const r = await sameDd(dir, ['if=a.qcow2', 'of=OUT', 'bs=1M', 'skip=1000']);
    assert.match(r.stderr, /cannot skip to specified offset/);
    await sameDd(dir, ['-O', 'qcow2', 'if=a.qcow2', 'of=OUT', 'bs=1M', 'count=1', 'skip=2']);
  });

  test('errors: messages and exit codes', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await must('qemu-img', ['create', '-f', 'qcow2', join(dir, 'a.qcow2'), '1M']);
    for (const args of [
      ['if=a.qcow2', 'of=OUT', 'foo'],
      ['if=a.qcow2', 'of=OUT', 'foo=1'],
      ['if=a.qcow2', 'of=OUT', 'bs=0'],
      ['if=a.qcow2', 'of=OUT', 'bs=3G'],
      ['if=a.qcow2', 'of=OUT', 'count=-1'],
      ['if=a.qcow2', 'of=OUT', 'skip=abc'],
      ['if=a.qcow2'],
      ['of=OUT'],
      ['-O', 'foo', 'if=a.qcow2', 'of=OUT'],
      ['-O', 'vvfat', 'if=a.qcow2', 'of=OUT'],
      ['if=nonexistent', 'of=OUT'],
      ['if=a.qcow2', 'of=nonexistent-dir/x'],
      ['-x'],
      ['-f'],
    ]) {
      assert.equal((await sameDd(dir, args)).code, 1, args.join(' '));
    }
  });
});
