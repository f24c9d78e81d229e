/**
 * Interop suite for persistent dirty bitmaps (issue #5 point 4). QEMU is the oracle both ways:
 *   - `qcow2kit bitmap ...` and `qemu-img bitmap ...` run on copies of the same images must give
 *     the same exit code and messages, and leave the same bitmaps: same `qemu-img info`, same
 *     flags and the same dirty bits on disk (read by an independent parser below), `qemu-img check`
 *     clean on ours;
 *   - QEMU reads the bits we write (qemu-nbd exports a bitmap, `qemu-img map` with
 *     x-dirty-bitmap shows its dirty ranges) and we read the bits QEMU writes (we merge a QEMU
 *     bitmap into a new one, QEMU reads that back);
 *   - `qemu-img convert --bitmaps` copies our bitmaps;
 *   - writes through `qcow2kit io` dirty enabled bitmaps as qemu-io's writes dirty QEMU's.
 * Commands run in the image directory with relative names, as a user would type them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  check, hasQemu, must, parseJson, patchFile, qcow2kit, qemuImg, qemuIoWrite, requireQemu, stackTraceLines, tempDir, type RunResult,
} from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Range {
  offset: number;
  length: number;
}

interface DumpedBitmap {
  name: string;
  granularity: number;
  inUse: boolean;
  auto: boolean;
  tableSize: number;
  /** Dirty guest ranges; undefined for an in-use bitmap (its data is meaningless). */
  ranges: Range[] | undefined;
}

interface Dump {
  autoclear: boolean;
  bitmaps: DumpedBitmap[];
}

/** Merge adjacent ranges. */
function coalesce(ranges: Range[]): Range[] {
  const out: Range[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last !== undefined && last.offset + last.length === r.offset) last.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

/**
 * The bitmaps stored in a qcow2 file, read straight from the bytes (docs/interop/qcow2.rst),
 * independently of the code under test.
 */
async function dumpBitmaps(path: string): Promise<Dump> {
  const bytes = new Uint8Array(await readFile(path));
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u64 = (at: number): number => v.getUint32(at) * 2 ** 32 + v.getUint32(at + 4);
  assert.equal(v.getUint32(0), 0x514649fb, `${path} is not qcow2`);
  if (v.getUint32(4) < 3) return { autoclear: false, bitmaps: [] };
  const cs = 2 ** v.getUint32(20);
  const size = u64(24);
  const autoclear = (v.getUint32(92) & 1) === 1;
  const end = u64(8) || cs;
  let ext: { nb: number; dirSize: number; dirOffset: number } | undefined;
  for (let off = v.getUint32(100); off + 8 <= end;) {
    const type = v.getUint32(off);
    const len = v.getUint32(off + 4);
    if (type === 0) break;
    if (type === 0x23852875) ext = { nb: v.getUint32(off + 8), dirSize: u64(off + 16), dirOffset: u64(off + 24) };
    off += 8 + Math.ceil(len / 8) * 8;
  }
  if (ext === undefined || !autoclear) return { autoclear, bitmaps: [] };
  const bitmaps: DumpedBitmap[] = [];
  let p = ext.dirOffset;
  for (let i = 0; i < ext.nb; i++) {
    const tableOffset = u64(p);
    const tableSize = v.getUint32(p + 8);
    const flags = v.getUint32(p + 12);
    const granularity = 2 ** v.getUint8(p + 17);
    const nameSize = v.getUint16(p + 18);
    const extra = v.getUint32(p + 20);
    const name = new TextDecoder().decode(bytes.subarray(p + 24 + extra, p + 24 + extra + nameSize));
    p += Math.ceil((24 + extra + nameSize) / 8) * 8;
    const inUse = (flags & 1) === 1;
    let ranges: Range[] | undefined;
    if (!inUse) {
      const bits = Math.ceil(size / granularity);
      const perCluster = cs * 8;
      const dirty: Range[] = [];
      for (let t = 0; t < tableSize; t++) {
        const hi = v.getUint32(tableOffset + t * 8);
        const lo = v.getUint32(tableOffset + t * 8 + 4);
        const data = (hi & 0x00ffffff) * 2 ** 32 + ((lo & 0xfffffe00) >>> 0);
        for (let b = 0; b < perCluster && t * perCluster + b < bits; b++) {
          const set = data !== 0 ? ((bytes[data + (b >> 3)] ?? 0) >> (b & 7)) & 1 : lo & 1;
          if (!set) continue;
          const bit = t * perCluster + b;
          dirty.push({ offset: bit * granularity, length: Math.min((bit + 1) * granularity, size) - bit * granularity });
        }
      }
      ranges = coalesce(dirty);
    }
    bitmaps.push({ name, granularity, inUse, auto: (flags & 2) === 2, tableSize, ranges });
  }
  return { autoclear, bitmaps };
}

let sockets = 0;

/** QEMU's view of a bitmap: qemu-nbd exports it, `qemu-img map` shows dirty areas as data: false. */
async function qemuDirtyRanges(dir: string, image: string, bitmap: string): Promise<Range[]> {
  const sock = join(dir, `nbd-${sockets++}.sock`);
  const child = spawn('qemu-nbd', ['-k', sock, '-r', '-f', 'qcow2', '-B', bitmap, image], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<void>((done) => child.on('exit', () => done()));
  try {
    for (let i = 0; !existsSync(sock); i++) {
      if (child.exitCode !== null || i > 500) throw new Error(`qemu-nbd -B ${bitmap} ${image} did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const r = check(await qemuImg(['map', '--output=json', '--image-opts', `driver=nbd,server.type=unix,server.path=${sock},x-dirty-bitmap=qemu:dirty-bitmap:${bitmap}`]));
    const entries = parseJson(r.stdout, 'qemu-img map') as { start: number; length: number; data: boolean }[];
    return coalesce(entries.filter((e) => !e.data).map((e) => ({ offset: e.start, length: e.length })));
  } finally {
    child.kill();
    await exited;
  }
}

/** Our messages say "qcow2kit:" where qemu-img says "qemu-img:"; QEMU's node names vary per run. */
function normalize(text: string): string {
  return text
    .replace(/^qcow2kit: /gm, 'qemu-img: ')
    .replace(/'qcow2kit --help'/g, "'qemu-img --help'")
    .replace(/#block\d+/g, '#block');
}

function assertSameResult(qemu: RunResult, ours: RunResult, what: string): void {
  assert.deepEqual(stackTraceLines(ours.stderr), [], `${what}: stack trace:\n${ours.stderr}`);
  assert.deepEqual(
    { code: ours.code, stdout: ours.stdout, stderr: normalize(ours.stderr) },
    { code: qemu.code, stdout: qemu.stdout, stderr: normalize(qemu.stderr) },
    what,
  );
}

async function formatSpecific(dir: string, image: string): Promise<unknown> {
  const r = check(await qemuImg(['info', '--output=json', image], { cwd: dir }));
  return (parseJson(r.stdout, 'qemu-img info') as { 'format-specific'?: unknown })['format-specific'];
}

async function assertCheckClean(dir: string, image: string, what: string): Promise<void> {
  const r = await qemuImg(['check', image], { cwd: dir });
  assert.equal(r.code, 0, `${what}: qemu-img check ${image}:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^No errors were found on the image\./, `${what}: qemu-img check ${image}`);
}

/** Patch the flags of bitmap `index` to in-use + auto: what a crash leaves behind. */
async function markInUse(path: string, index: number): Promise<void> {
  const bytes = new Uint8Array(await readFile(path));
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u64 = (at: number): number => v.getUint32(at) * 2 ** 32 + v.getUint32(at + 4);
  let dir = 0;
  for (let off = v.getUint32(100); ;) {
    const type = v.getUint32(off);
    if (type === 0) break;
    if (type === 0x23852875) dir = u64(off + 24);
    off += 8 + Math.ceil(v.getUint32(off + 4) / 8) * 8;
  }
  assert.notEqual(dir, 0, `${path} has no bitmaps`);
  for (let i = 0; i < index; i++) dir += Math.ceil((24 + v.getUint32(dir + 20) + v.getUint16(dir + 18)) / 8) * 8;
  await patchFile(path, dir + 12, new Uint8Array([0, 0, 0, 3]));
}

/**
 * The images every parity case starts from, made by QEMU: a.qcow2 (10 MiB) with an enabled
 * bitmap b1 (64 KiB) and a disabled b2 (512 B), dirtied by qemu-io writes; c.qcow2 (20 MiB)
 * with cb; small.qcow2 (512-byte clusters, all-ones bitmap clusters); inc.qcow2 (b1 in use);
 * a v2 image; a raw file.
 */
async function makeTemplate(dir: string): Promise<void> {
  const img = (args: string[]): Promise<RunResult> => must('qemu-img', args, { cwd: dir });
  await img(['create', '-q', '-f', 'qcow2', 'a.qcow2', '10M']);
  await img(['bitmap', '--add', 'a.qcow2', 'b1']);
  await img(['bitmap', '--add', '-g', '512', '--disable', 'a.qcow2', 'b2']);
  await qemuIoWrite('a.qcow2', ['write -P 0x11 0 64k', 'write -P 0x22 5M 3k', 'write -z 7M 200k'], { cwd: dir });
  await img(['bitmap', '--enable', 'a.qcow2', 'b2']);
  await qemuIoWrite('a.qcow2', ['write -P 0x33 9M 1536', 'discard 2M 128k'], { cwd: dir });
  await img(['create', '-q', '-f', 'qcow2', 'c.qcow2', '20M']);
  await img(['bitmap', '--add', 'c.qcow2', 'cb']);
  await img(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'small.qcow2', '6M']);
  await img(['bitmap', '--add', '-g', '512', 'small.qcow2', 's1']);
  await qemuIoWrite('small.qcow2', ['write -P 0x44 0 2M', 'write -P 0x55 4M 512'], { cwd: dir });
  await copyFile(join(dir, 'a.qcow2'), join(dir, 'inc.qcow2'));
  await markInUse(join(dir, 'inc.qcow2'), 0);
  await img(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '10M']);
  await img(['create', '-q', '-f', 'raw', 'r.raw', '10M']);
}

async function copyDir(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const f of await readdir(from)) await copyFile(join(from, f), join(to, f));
}

let cases = 0;

/**
 * Runs `bitmap ARGS` with both tools on copies of the template and requires the same result and
 * the same bitmaps in every qcow2 image afterwards.
 */
async function sameBitmap(root: string, template: string, args: readonly string[]): Promise<void> {
  const base = join(root, `case-${cases++}`);
  const qDir = join(base, 'qemu');
  const kDir = join(base, 'ours');
  await copyDir(template, qDir);
  await copyDir(template, kDir);
  const what = `bitmap ${args.join(' ')}`;
  const [qemu, ours] = await Promise.all([qemuImg(['bitmap', ...args], { cwd: qDir }), qcow2kit(['bitmap', ...args], { cwd: kDir })]);
  assertSameResult(qemu, ours, what);
  // The images the command names are the ones either tool may have changed.
  const named = (await readdir(kDir)).filter((n) => n.endsWith('.qcow2') && args.includes(n));
  for (const f of named) {
    assert.deepEqual(await dumpBitmaps(join(kDir, f)), await dumpBitmaps(join(qDir, f)), `${what}: bitmaps of ${f}`);
    const [mine, theirs] = await Promise.all([formatSpecific(kDir, f), formatSpecific(qDir, f), assertCheckClean(kDir, f, what)]);
    assert.deepEqual(mine, theirs, `${what}: qemu-img info of ${f}`);
  }
}

describe('bitmap: same results as qemu-img bitmap', { concurrency: 8 }, () => {
  const CASES: readonly (readonly string[])[] = [
    ['--add', 'a.qcow2', 'n1'],
    ['--add', '--disable', 'a.qcow2', 'n1'],
    ['--add', '-g', '512', 'a.qcow2', 'n1'],
    ['--add', '--granularity', '2G', 'a.qcow2', 'n1'],
    ['--add', '-g', '0', 'a.qcow2', 'n1'],
    ['--add', '-g', '4294967808', 'a.qcow2', 'n1'],
    ['--add', '--remove', 'a.qcow2', 'n1'],
    ['--add', '--merge', 'b1', 'a.qcow2', 'n1'],
    ['--add', '-g', '1M', '--merge', 'b2', 'a.qcow2', 'n1'],
    ['--clear', 'a.qcow2', 'b1'],
    ['--disable', 'a.qcow2', 'b1'],
    ['--enable', '--disable', '--enable', 'a.qcow2', 'b2'],
    ['--remove', 'a.qcow2', 'b1'],
    ['--remove', 'a.qcow2', 'b2'],
    ['--merge', 'b1', 'a.qcow2', 'b2'],
    ['--merge', 'b2', 'a.qcow2', 'b1'],
    ['--merge', 'b1', '--merge', 'b2', '--clear', 'a.qcow2', 'b1'],
    ['--add', '--merge', 's1', 'small.qcow2', 'copy'],
    ['--add', 'small.qcow2', 'n1'],
    ['--clear', 'small.qcow2', 's1'],
    ['--merge', 'cb', '-b', 'c.qcow2', 'a.qcow2', 'b1'],
    ['--merge', 'b1', '-b', 'a.qcow2', '-F', 'qcow2', 'inc.qcow2', 'b2'],
    ['--merge', 'cb', '-b', 'c.qcow2', '-F', 'raw', 'a.qcow2', 'b1'],
    ['--merge', 'b1', '-b', 'a.qcow2', 'a.qcow2', 'b2'],
    ['--merge', 'b1', '-b', 'missing.qcow2', 'a.qcow2', 'b2'],
    ['--add', 'n9', '--clear', '--merge', 'nope', '--disable', 'a.qcow2'],
    ['--add', 'a.qcow2', 'b1'],
    ['--add', 'a.qcow2', ''],
    ['--add', 'a.qcow2', 'y'.repeat(1024)],
    ['--add', '-g', '1000', 'a.qcow2', 'n1'],
    ['--add', '-g', '4G', 'a.qcow2', 'n1'],
    ['--add', '-g', 'abc', 'a.qcow2', 'n1'],
    ['--add', '-g', '99999999999999999999', 'a.qcow2', 'n1'],
    ['-g', '64k', '--remove', 'a.qcow2', 'b1'],
    ['--enable', '--add', 'a.qcow2', 'n1'],
    ['--clear', 'a.qcow2', 'nope'],
    ['--merge', 'nope', 'a.qcow2', 'b1'],
    ['--merge', 'b1', 'a.qcow2', 'nope'],
    ['--clear', 'inc.qcow2', 'b1'],
    ['--enable', 'inc.qcow2', 'b1'],
    ['--merge', 'b1', 'inc.qcow2', 'b2'],
    ['--merge', 'b2', 'inc.qcow2', 'b1'],
    ['--remove', 'inc.qcow2', 'b1'],
    ['--add', 'inc.qcow2', 'n1'],
    ['--add', 'v2.qcow2', 'b'],
    ['--add', '-f', 'raw', 'r.raw', 'b'],
    ['--remove', '-f', 'raw', 'r.raw', 'b'],
    ['--add', '-f', 'raw', 'a.qcow2', 'b'],
    ['--add', '-f', 'foo', 'a.qcow2', 'b'],
    ['--add', '-F', 'qcow2', 'a.qcow2', 'b'],
    ['--add', '-b', 'c.qcow2', 'a.qcow2', 'b'],
    ['--add', 'a.qcow2'],
    ['--add', 'a.qcow2', 'x', 'y'],
    ['a.qcow2', 'x'],
    ['--add', 'missing.qcow2', 'x'],
    ['--foo', 'a.qcow2', 'x'],
    ['--merge'],
    ['-g'],
    ['--sou', 'x', '--merge', 'b1', 'a.qcow2', 'b2'],
  ];
  let root = '';
  let template = '';
  // One set of QEMU-made images for all cases (each case works on its own copies).
  before(async () => {
    if (!hasQemu()) return;
    root = await mkdtemp(join(tmpdir(), 'qcow2kit-bitmap-'));
    template = join(root, 'template');
    await mkdir(template);
    await makeTemplate(template);
  });
  after(async () => {
    if (root !== '' && process.env['QCOW2KIT_KEEP_TMP'] !== '1') await rm(root, { recursive: true, force: true });
  });
  test('template images have dirty bits to compare', async (t) => {
    if (!requireQemu(t)) return;
    const a = await dumpBitmaps(join(template, 'a.qcow2'));
    assert.ok((a.bitmaps[0]?.ranges?.length ?? 0) >= 3 && (a.bitmaps[1]?.ranges?.length ?? 0) >= 2, JSON.stringify(a));
    const small = await dumpBitmaps(join(template, 'small.qcow2'));
    assert.deepEqual(small.bitmaps[0]?.ranges, [{ offset: 0, length: 2 * MiB }, { offset: 4 * MiB, length: 512 }]);
    assert.equal((await dumpBitmaps(join(template, 'inc.qcow2'))).bitmaps[0]?.inUse, true);
  });
  for (const args of CASES) {
    test(`bitmap ${args.join(' ').slice(0, 80)}`, async (t) => {
      if (!requireQemu(t)) return;
      await sameBitmap(root, template, args);
    });
  }
});

describe('bitmap data: QEMU and qcow2kit read each other', () => {
  test('QEMU reads the bits we write (data clusters and all-ones flags), we read the bits QEMU writes', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await makeTemplate(dir);
    for (const [image, bitmap, gran] of [['a.qcow2', 'b1', '64k'], ['a.qcow2', 'b2', '512'], ['small.qcow2', 's1', '512']] as const) {
      const copy = `copy-${bitmap}`;
      // Our merge reads QEMU's bitmap and writes a new one; QEMU then reads ours.
      check(await qcow2kit(['bitmap', '--add', '-g', gran, '--merge', bitmap, image, copy], { cwd: dir }));
      const theirs = await qemuDirtyRanges(dir, image, bitmap);
      assert.ok(theirs.length > 0, `${image}/${bitmap} has dirty bits`);
      assert.deepEqual(await qemuDirtyRanges(dir, image, copy), theirs, `${image}: QEMU reads our copy of ${bitmap}`);
      const dumped = (await dumpBitmaps(join(dir, image))).bitmaps;
      assert.deepEqual(dumped.find((b) => b.name === copy)?.ranges, theirs);
      assert.deepEqual(dumped.find((b) => b.name === bitmap)?.ranges, theirs);
      await assertCheckClean(dir, image, 'after our merge');
    }
  });

  test('qemu-img convert --bitmaps copies our bitmaps', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await makeTemplate(dir);
    check(await qcow2kit(['bitmap', '--add', '-g', '4k', '--merge', 'b1', 'a.qcow2', 'ours1'], { cwd: dir }));
    check(await qcow2kit(['bitmap', '--add', '--disable', '--merge', 'b2', 'a.qcow2', 'ours2'], { cwd: dir }));
    check(await qemuImg(['convert', '-O', 'qcow2', '--bitmaps', 'a.qcow2', 'copy.qcow2'], { cwd: dir }));
    assert.deepEqual(await formatSpecific(dir, 'copy.qcow2'), await formatSpecific(dir, 'a.qcow2'));
    const src = await dumpBitmaps(join(dir, 'a.qcow2'));
    const dst = await dumpBitmaps(join(dir, 'copy.qcow2'));
    assert.deepEqual(dst.bitmaps.map((b) => [b.name, b.ranges]), src.bitmaps.map((b) => [b.name, b.ranges]));
    assert.ok(src.bitmaps.some((b) => b.name === 'ours1' && (b.ranges?.length ?? 0) > 0));
    await assertCheckClean(dir, 'copy.qcow2', 'convert --bitmaps');
  });

  test('bitmaps we add keep working under QEMU: qemu-io writes dirty them, qemu-img check stays clean', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    check(await qemuImg(['create', '-q', '-f', 'qcow2', 'x.qcow2', '8M'], { cwd: dir }));
    check(await qcow2kit(['bitmap', '--add', '-g', '4096', 'x.qcow2', 'mine'], { cwd: dir }));
    check(await qcow2kit(['bitmap', '--add', '--disable', 'x.qcow2', 'off'], { cwd: dir }));
    await qemuIoWrite('x.qcow2', ['write -P 0x1 4096 1', 'write -z 1M 64k'], { cwd: dir });
    const d = await dumpBitmaps(join(dir, 'x.qcow2'));
    assert.equal(d.autoclear, true);
    assert.deepEqual(d.bitmaps.map((b) => [b.name, b.inUse, b.auto, b.ranges]), [
      ['mine', false, true, [{ offset: 4096, length: 4096 }, { offset: MiB, length: 64 * KiB }]],
      ['off', false, false, []],
    ]);
    assert.deepEqual(await qemuDirtyRanges(dir, 'x.qcow2', 'mine'), [{ offset: 4096, length: 4096 }, { offset: MiB, length: 64 * KiB }]);
    await assertCheckClean(dir, 'x.qcow2', 'after qemu-io');
  });
});

describe('bitmap: guest writes dirty enabled bitmaps like QEMU', { concurrency: 4 }, () => {
  const WORKLOADS: readonly (readonly string[])[] = [
    ['write -P 0xab 0 1', 'write -P 0xcd 100k 300k', 'write -P 0xef 8M 512'],
    ['write -z 64k 64k', 'write -z 1M 3k', 'write -z -u 2M 128k'],
    ['write -P 0x11 0 4M', 'discard 64k 64k', 'discard 1M 1000', 'discard 3M 200k'],
    ['write -c -P 0x22 0 64k', 'write -c -P 0x33 6M 128k'],
  ];
  for (const cmds of WORKLOADS) {
    test(cmds.join('; '), async (t) => {
      if (!requireQemu(t)) return;
      const dir = await tempDir(t);
      for (const name of ['q.qcow2', 'k.qcow2']) {
        check(await qemuImg(['create', '-q', '-f', 'qcow2', name, '10M'], { cwd: dir }));
        check(await qemuImg(['bitmap', '--add', '-g', '512', name, 'fine'], { cwd: dir }));
        check(await qemuImg(['bitmap', '--add', name, 'coarse'], { cwd: dir }));
        check(await qemuImg(['bitmap', '--add', '--disable', name, 'off'], { cwd: dir }));
      }
      await qemuIoWrite('q.qcow2', cmds, { cwd: dir });
      const args = ['io'];
      for (const c of cmds) args.push('-c', c);
      check(await qcow2kit([...args, 'k.qcow2'], { cwd: dir }));
      const theirs = await dumpBitmaps(join(dir, 'q.qcow2'));
      const ours = await dumpBitmaps(join(dir, 'k.qcow2'));
      assert.ok((theirs.bitmaps[0]?.ranges?.length ?? 0) > 0, 'the workload dirties something');
      assert.deepEqual(ours, theirs);
      assert.deepEqual(await qemuDirtyRanges(dir, 'k.qcow2', 'fine'), theirs.bitmaps[0]!.ranges);
      await assertCheckClean(dir, 'k.qcow2', 'after qcow2kit io');
    });
  }
});
