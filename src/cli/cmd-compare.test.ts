import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildQcow2, pattern } from '../format/qcow2/qcow2-builder.test.helper.js';
import { createCaptureIO, main } from './main.js';

const K = 1024;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'qcow2kit-compare-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function cli(dir: string, args: string[]) {
  const io = createCaptureIO();
  const code = await main(['compare', ...args.map((a) => (a.startsWith('@') ? join(dir, a.slice(1)) : a))], io);
  return { code, stdout: io.stdoutText(), stderr: io.stderrText().replaceAll(dir + '/', '') };
}

async function setup(dir: string): Promise<void> {
  const c0 = pattern(64 * K, 1);
  await writeFile(join(dir, 'a.qcow2'), buildQcow2({ size: 512 * K, entries: [{ cluster: 0, kind: 'data', bytes: c0 }, { cluster: 3, kind: 'zero' }] }));
  const raw = new Uint8Array(512 * K);
  raw.set(c0, 0);
  await writeFile(join(dir, 'a.raw'), raw);
  raw[100 * K + 3] = 1;
  await writeFile(join(dir, 'b.raw'), raw);
  await writeFile(join(dir, 'long.raw'), (() => { const l = new Uint8Array(640 * K); l.set(c0, 0); return l; })());
}

test('compare prints qemu-img messages with its exit codes', async () => {
  await withDir(async (dir) => {
    await setup(dir);
    assert.deepEqual(await cli(dir, ['@a.qcow2', '@a.raw']), { code: 0, stdout: 'Images are identical.\n', stderr: '' });
    assert.deepEqual(await cli(dir, ['@a.qcow2', '@b.raw']), { code: 1, stdout: `Content mismatch at offset ${100 * K}!\n`, stderr: '' });
    assert.deepEqual(await cli(dir, ['-q', '@a.qcow2', '@b.raw']), { code: 1, stdout: '', stderr: '' });
    assert.deepEqual(await cli(dir, ['@a.qcow2', '@long.raw']), { code: 0, stdout: 'Warning: Image size mismatch!\nImages are identical.\n', stderr: '' });
    assert.deepEqual(await cli(dir, ['-s', '@a.qcow2', '@long.raw']), { code: 1, stdout: 'Strict mode: Image size mismatch!\n', stderr: '' });
    assert.deepEqual(await cli(dir, ['-s', '@a.qcow2', '@a.raw']), { code: 1, stdout: 'Strict mode: Offset 0 block status mismatch!\n', stderr: '' });
  });
});

test('compare errors: usage exits 1, open failures exit 2', async () => {
  await withDir(async (dir) => {
    await setup(dir);
    assert.deepEqual(await cli(dir, ['@a.qcow2']), { code: 1, stdout: '', stderr: "qcow2kit: Expecting two image file names\nTry 'qcow2kit --help' for more information\n" });
    assert.deepEqual(await cli(dir, ['@a.qcow2', '@nope']), { code: 2, stdout: '', stderr: "qcow2kit: Could not open 'nope': Could not open 'nope': No such file or directory\n" });
    assert.deepEqual(await cli(dir, ['-F', 'qcow2', '@a.qcow2', '@a.raw']), { code: 2, stdout: '', stderr: "qcow2kit: Could not open 'a.raw': Image is not in qcow2 format\n" });
    assert.deepEqual(await cli(dir, ['-T', 'bogus', '@a.qcow2', '@a.raw']), { code: 2, stdout: '', stderr: 'qcow2kit: Invalid source cache option: bogus\n' });
    assert.deepEqual(await cli(dir, ['-p', '@nope', '@a.raw']), { code: 2, stdout: '\n', stderr: "qcow2kit: Could not open 'nope': Could not open 'nope': No such file or directory\n" });
  });
});

test('compare -p prints progress in 2% steps', async () => {
  await withDir(async (dir) => {
    await setup(dir);
    const r = await cli(dir, ['-p', '@a.qcow2', '@long.raw']);
    assert.equal(r.code, 0);
    // Chunks follow the qcow2 runs (64k data, 128k unallocated, 64k zero, 256k unallocated) over 640k.
    assert.equal(
      r.stdout,
      '    (0.00/100%)\r    (10.00/100%)\r    (30.00/100%)\r    (40.00/100%)\r    (80.00/100%)\r' +
        'Warning: Image size mismatch!\n    (100.00/100%)\rImages are identical.\n\n',
    );
  });
});
