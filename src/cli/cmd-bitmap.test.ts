import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jsCodecs } from '../codecs/codecs-js.js';
import { Qcow2Bitmaps, type BitmapInfo } from '../format/qcow2/bitmaps.js';
import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import { buildQcow2 } from '../format/qcow2/qcow2-builder.test.helper.js';
import { MemoryStorage } from '../storage/memory-storage.js';
import { viewOf } from '../util/bytes.js';
import { createCaptureIO, main } from './main.js';

const MiB = 1024 * 1024;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'qcow2kit-bitmap-'));
  try {
    await writeFile(join(dir, 'a.qcow2'), buildQcow2({ size: 8 * MiB }));
    await writeFile(join(dir, 'b.qcow2'), buildQcow2({ size: 8 * MiB }));
    await writeFile(join(dir, 'v2.qcow2'), buildQcow2({ size: 8 * MiB, version: 2 }));
    await writeFile(join(dir, 'r.raw'), new Uint8Array(MiB));
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Run `qcow2kit bitmap ARGS`; `@name` is a file in `dir`. */
async function bitmap(dir: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const io = createCaptureIO();
  const code = await main(['bitmap', ...args.map((a) => (a.startsWith('@') ? join(dir, a.slice(1)) : a))], io);
  return { code, stdout: io.stdoutText(), stderr: io.stderrText().replaceAll(dir + '/', '') };
}

/** The bitmaps of an image file, read independently of the CLI. */
async function list(path: string): Promise<{ info: BitmapInfo[]; ranges: Record<string, unknown> }> {
  const drv = await Qcow2Driver.open(new MemoryStorage(new Uint8Array(await readFile(path)), 'x', true), { readOnly: true, codecs: jsCodecs });
  const bm = (drv as unknown as { bitmaps?: Qcow2Bitmaps }).bitmaps ?? new Qcow2Bitmaps(drv.state, undefined);
  const ranges: Record<string, unknown> = {};
  for (const b of bm.list()) if (!b.inconsistent) ranges[b.name] = await bm.dirtyRanges(b.name);
  return { info: bm.list(), ranges };
}

const err = (stderr: string): { code: number; stdout: string; stderr: string } => ({ code: 1, stdout: '', stderr });

test('argument errors, in qemu-img order and wording', async () => {
  await withDir(async (dir) => {
    assert.deepEqual(await bitmap(dir, ['@a.qcow2', 'x']), err('qcow2kit: Need at least one of --add, --remove, --clear, --enable, --disable, or --merge\n'));
    assert.deepEqual(await bitmap(dir, ['-g', '64k', '--remove', '@a.qcow2', 'x']), err('qcow2kit: granularity only supported with --add\n'));
    assert.deepEqual(await bitmap(dir, ['-F', 'qcow2', '--add', '@a.qcow2', 'x']), err('qcow2kit: -F only supported with -b\n'));
    assert.deepEqual(await bitmap(dir, ['-b', '@b.qcow2', '--add', '@a.qcow2', 'x']), err('qcow2kit: Merge bitmap source file only supported with --merge\n'));
    assert.deepEqual(await bitmap(dir, ['--add', '@a.qcow2']), err('qcow2kit: Expecting filename and bitmap name\n'));
    assert.deepEqual(await bitmap(dir, ['--add', '@a.qcow2', 'x', 'y']), err('qcow2kit: Expecting filename and bitmap name\n'));
    // -g is parsed where it stands: its error comes before a later unknown option's.
    assert.deepEqual(
      await bitmap(dir, ['-g', 'abc', '--foo']),
      err('qcow2kit: Invalid granularity specified. You may use k, M, G, T, P or E suffixes for\nqcow2kit: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n'),
    );
    assert.deepEqual(await bitmap(dir, ['--foo', '-g', 'abc']), err("qcow2kit: unrecognized option '--foo'\nTry 'qcow2kit --help' for more information\n"));
    assert.deepEqual(await bitmap(dir, ['--add', '@missing.qcow2', 'x']), err("qcow2kit: Could not open 'missing.qcow2': Could not open 'missing.qcow2': No such file or directory\n"));
    assert.deepEqual((await list(join(dir, 'a.qcow2'))).info, []);
  });
});

test('actions run in order; a failure stops the rest but keeps what was done', async () => {
  await withDir(async (dir) => {
    assert.deepEqual(await bitmap(dir, ['--add', '-g', '512', '--disable', '@a.qcow2', 'b1']), { code: 0, stdout: '', stderr: '' });
    assert.deepEqual(await bitmap(dir, ['--add', '@a.qcow2', 'n', '--merge', 'nope', '--disable']), err("qcow2kit: Operation merge on bitmap n failed: Dirty bitmap 'nope' not found\n"));
    const { info } = await list(join(dir, 'a.qcow2'));
    assert.deepEqual(info, [
      { name: 'b1', granularity: 512, enabled: false, inconsistent: false },
      { name: 'n', granularity: 65536, enabled: true, inconsistent: false },
    ]);
    assert.deepEqual(await bitmap(dir, ['--add', '@a.qcow2', 'n']), err('qcow2kit: Operation add on bitmap n failed: Bitmap already exists: n\n'));
    assert.deepEqual(await bitmap(dir, ['--remove', '--add', '--remove', '@a.qcow2', 'n']), { code: 0, stdout: '', stderr: '' });
    assert.deepEqual((await list(join(dir, 'a.qcow2'))).info.map((b) => b.name), ['b1']);
  });
});

test('merge from another file; the same file twice is refused like a locked image', async () => {
  await withDir(async (dir) => {
    await bitmap(dir, ['--add', '@b.qcow2', 'src']);
    await bitmap(dir, ['--add', '@a.qcow2', 'dst']);
    assert.deepEqual(await bitmap(dir, ['--merge', 'src', '-b', '@b.qcow2', '-F', 'qcow2', '@a.qcow2', 'dst']), { code: 0, stdout: '', stderr: '' });
    assert.deepEqual(await bitmap(dir, ['--merge', 'src', '-b', '@b.qcow2', '-F', 'raw', '@a.qcow2', 'dst']), err("qcow2kit: Operation merge on bitmap dst failed: Dirty bitmap 'src' not found\n"));
    const same = await bitmap(dir, ['--merge', 'dst', '-b', '@a.qcow2', '@a.qcow2', 'dst']);
    assert.deepEqual(same, err(`qcow2kit: Could not open 'a.qcow2': Failed to get shared "write" lock\nIs another process using the image [a.qcow2]?\n`));
    assert.deepEqual((await list(join(dir, 'a.qcow2'))).info.map((b) => [b.name, b.inconsistent]), [['dst', false]]);
  });
});

test('what QEMU refuses: v2 images, other formats, inconsistent bitmaps (with the hint line)', async () => {
  await withDir(async (dir) => {
    assert.deepEqual(await bitmap(dir, ['--add', '@v2.qcow2', 'b']), err("qcow2kit: Operation add on bitmap b failed: Can't make bitmap 'b' persistent in '#block100': Cannot store dirty bitmaps in qcow2 v2 files\n"));
    assert.deepEqual(await bitmap(dir, ['--add', '-f', 'raw', '@r.raw', 'b']), err("qcow2kit: Operation add on bitmap b failed: Can't store persistent bitmaps to #block100: Operation not supported\n"));
    assert.deepEqual(await bitmap(dir, ['--clear', '-f', 'raw', '@r.raw', 'b']), err("qcow2kit: Operation clear on bitmap b failed: Dirty bitmap 'b' not found\n"));
    assert.deepEqual(await bitmap(dir, ['--add', '-g', '1000', '@a.qcow2', 'g']), err('qcow2kit: Operation add on bitmap g failed: Granularity must be power of 2 and at least 512\n'));
    await bitmap(dir, ['--add', '@a.qcow2', 'bad']);
    // Flag it in use, as a crash would leave it.
    const bytes = new Uint8Array(await readFile(join(dir, 'a.qcow2')));
    const drv = await Qcow2Driver.open(new MemoryStorage(bytes.slice(), 'x', true), { readOnly: true, codecs: jsCodecs });
    const ext = drv.meta.extensions.find((e) => e.type === 0x23852875)!;
    const dirOffset = viewOf(ext.data).getUint32(16) * 2 ** 32 + viewOf(ext.data).getUint32(20);
    viewOf(bytes).setUint32(dirOffset + 12, 3);
    await writeFile(join(dir, 'a.qcow2'), bytes);
    assert.deepEqual(
      await bitmap(dir, ['--clear', '@a.qcow2', 'bad']),
      err("qcow2kit: Operation clear on bitmap bad failed: Bitmap 'bad' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk\n"),
    );
    assert.deepEqual((await list(join(dir, 'a.qcow2'))).info, [{ name: 'bad', granularity: 65536, enabled: true, inconsistent: true }]);
    assert.deepEqual(await bitmap(dir, ['--remove', '@a.qcow2', 'bad']), { code: 0, stdout: '', stderr: '' });
    assert.deepEqual((await list(join(dir, 'a.qcow2'))).info, []);
  });
});

test('a zero-size image loses its bitmaps at close, with QEMU\'s warning and exit 0', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'z.qcow2'), buildQcow2({ size: 0 }));
    assert.deepEqual(await bitmap(dir, ['--add', '@z.qcow2', 'z']), { code: 0, stdout: '', stderr: "qcow2kit: Lost persistent bitmaps during inactivation of node '#block100': No memory\n" });
    assert.deepEqual((await list(join(dir, 'z.qcow2'))).info, []);
  });
});
