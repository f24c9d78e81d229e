import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildQcow2, pattern } from '../format/qcow2/qcow2-builder.test.helper.js';
import { createCaptureIO, main } from './main.js';

const K = 1024;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'qcow2kit-convert-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** 1 MiB qcow2 (64 KiB clusters): data in clusters 0 and 5, a zero cluster at 2. */
function sampleImage(): { image: Uint8Array; content: Uint8Array } {
  const c0 = pattern(64 * K, 1);
  const c5 = pattern(64 * K, 2);
  const image = buildQcow2({
    size: 1024 * K,
    entries: [
      { cluster: 0, kind: 'data', bytes: c0 },
      { cluster: 2, kind: 'zero' },
      { cluster: 5, kind: 'data', bytes: c5 },
    ],
  });
  const content = new Uint8Array(1024 * K);
  content.set(c0, 0);
  content.set(c5, 5 * 64 * K);
  return { image, content };
}

async function cli(dir: string, args: string[]) {
  const io = createCaptureIO();
  const abs = args.map((a) => (a.startsWith('@') ? join(dir, a.slice(1)) : a));
  const code = await main(['convert', ...abs], io);
  return { code, stdout: io.stdoutText(), stderr: io.stderrText().replaceAll(dir + '/', '') };
}

test('convert writes the guest content of a qcow2 image to a raw file', async () => {
  await withDir(async (dir) => {
    const { image, content } = sampleImage();
    await writeFile(join(dir, 'a.qcow2'), image);
    const r = await cli(dir, ['-O', 'raw', '@a.qcow2', '@out.raw']);
    assert.deepEqual(r, { code: 0, stdout: '', stderr: '' });
    assert.deepEqual(new Uint8Array(await readFile(join(dir, 'out.raw'))), content);
  });
});

test('convert -p prints qemu-img progress lines on stdout', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'a.qcow2'), sampleImage().image);
    const r = await cli(dir, ['-p', '@a.qcow2', '@out.raw']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, '    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n');
    const q = await cli(dir, ['-p', '-q', '@a.qcow2', '@out.raw']);
    assert.equal(q.stdout, '');
  });
});

test('convert concatenates sources and -n keeps the rest of a larger target', async () => {
  await withDir(async (dir) => {
    const { image, content } = sampleImage();
    await writeFile(join(dir, 'a.qcow2'), image);
    await writeFile(join(dir, 'b.raw'), pattern(1000, 3));
    const target = new Uint8Array(3 * 1024 * K).fill(0xcc);
    await writeFile(join(dir, 'out.raw'), target);
    const r = await cli(dir, ['-n', '@a.qcow2', '@b.raw', '@out.raw']);
    assert.deepEqual(r, { code: 0, stdout: '', stderr: '' });
    const out = new Uint8Array(await readFile(join(dir, 'out.raw')));
    assert.equal(out.length, 3 * 1024 * K);
    assert.deepEqual(out.subarray(0, 1024 * K), content);
    assert.deepEqual(out.subarray(1024 * K, 1024 * K + 1000), pattern(1000, 3));
    assert.ok(out.subarray(1024 * K + 1000, 1024 * K + 1024).every((b) => b === 0), 'sector padding is zero');
    assert.ok(out.subarray(1024 * K + 1024).every((b) => b === 0xcc), 'tail untouched');
  });
});

test('convert -O qcow2 (plain and compressed) reads back the source content', async () => {
  await withDir(async (dir) => {
    const { image, content } = sampleImage();
    await writeFile(join(dir, 'a.qcow2'), image);
    for (const extra of [[], ['-c'], ['-o', 'cluster_size=4k,compression_type=zstd', '-c'], ['-t', 'writeback']]) {
      const r = await cli(dir, ['-O', 'qcow2', ...extra, '@a.qcow2', '@out.qcow2']);
      assert.deepEqual(r, { code: 0, stdout: '', stderr: '' }, extra.join(' '));
      const back = await cli(dir, ['@out.qcow2', '@back.raw']);
      assert.equal(back.code, 0);
      const bytes = new Uint8Array(await readFile(join(dir, 'back.raw')));
      assert.deepEqual(bytes.subarray(0, content.byteLength), content, extra.join(' '));
    }
    const bad = await cli(dir, ['-O', 'qcow2', '-o', 'foo=bar', '@a.qcow2', '@bad.qcow2']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /Invalid parameter 'foo'/);
  });
});

test('convert rejects bad options with qemu-img messages', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'a.qcow2'), sampleImage().image);
    const cases: [string[], string][] = [
      [['@a.qcow2'], 'qcow2kit: Must specify image file name\n'],
      [['-S', '100', '@a.qcow2', '@x'], 'qcow2kit: Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).\n'],
      [['-m', '17', '@a.qcow2', '@x'], 'qcow2kit: Invalid number of coroutines. Allowed number of coroutines is between 1 and 16\n'],
      [['-O', 'qcow3', '@a.qcow2', '@x'], "qcow2kit: Unknown file format 'qcow3'\n"],
      [['--target-is-zero', '@a.qcow2', '@x'], 'qcow2kit: --target-is-zero requires use of -n flag\n'],
      [['-t', 'bogus', '@a.qcow2', '@x'], 'qcow2kit: Invalid cache option: bogus\n'],
      [['-O', 'qcow2', '-t', 'bogus', '@a.qcow2', '@x'], 'qcow2kit: Invalid cache option: bogus\n'],
      [['@missing', '@x'], "qcow2kit: Could not open 'missing': Could not open 'missing': No such file or directory\n"],
      [['-l', 'snap', '@a.qcow2', '@x'], "qcow2kit: Failed to load snapshot: Can't find snapshot\n"],
      [['-l', 'snapshot.x=1', '@a.qcow2', '@x'], "qcow2kit: Invalid parameter 'snapshot.x'\nqcow2kit: Failed in parsing snapshot param 'snapshot.x=1'\n"],
      [['@a.qcow2', '@a.qcow2'], 'qcow2kit: a.qcow2: error while converting raw: Failed to get "write" lock\nIs another process using the image [a.qcow2]?\n'],
      [['-n', '@a.qcow2', '@a.qcow2'], 'qcow2kit: Could not open \'a.qcow2\': Failed to get "write" lock\nIs another process using the image [a.qcow2]?\n'],
    ];
    for (const [args, stderr] of cases) {
      const r = await cli(dir, args);
      assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 1, stderr }, args.join(' '));
    }
    // The refused self-overwrite left the source intact.
    assert.deepEqual(new Uint8Array(await readFile(join(dir, 'a.qcow2'))), sampleImage().image);
    await writeFile(join(dir, 'small.raw'), new Uint8Array(512));
    const r = await cli(dir, ['-n', '@a.qcow2', '@small.raw']);
    assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 1, stderr: 'qcow2kit: output file is smaller than input file\n' });
    assert.equal((await stat(join(dir, 'small.raw'))).size, 512);
  });
});
