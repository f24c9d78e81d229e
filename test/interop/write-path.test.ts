/**
 * Interop suite for the write path (issue #3, "Done when" #1). For each qcow2 create-option
 * combination, one seeded random qemu-io script (30-80 commands: `write -P` with unaligned
 * offsets and lengths, `write -z`, `write -z -u`, `discard`, `flush`) is applied
 *   - by real qemu-io to a qemu-img-created image ("reference"), and
 *   - by `bin/qcow2kit io` (same -c commands) to an identically created image ("ours"),
 * then `qemu-img check` must find ours clean (exit 0, no leaks), `qemu-img compare` must call
 * both identical, and `qemu-img info` must show the same format-specific data. A third image is
 * written alternately (qemu-io, then ours, then qemu-io, a third of the script each) and must end
 * up identical to the reference: each tool reads (for read-modify-write and copy-on-write) what
 * the other wrote.
 *
 * Images are created with `qcow2kit create` when that command is built, else with qemu-img
 * (QCOW2KIT_INTEROP_CREATE=qemu forces qemu-img). QCOW2KIT_WRITE_SEED changes the scripts;
 * a failure message names the seed and the combination, and QCOW2KIT_KEEP_TMP=1 keeps the files.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  check,
  parseJson,
  prng,
  qcow2kit,
  qemuImg,
  qemuIo,
  qemuIoWrite,
  randomBytes,
  repoRoot,
  requireQemu,
  stackTraceLines,
  tempDir,
  withoutTimings,
  writeRawFile,
  type RunResult,
} from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** One create-option combination. */
interface Combo {
  name: string;
  /** `-o` options for qcow2 create (data_file is added per image). */
  options: string;
  /** Virtual size in bytes. */
  size: number;
  clusterSize: number;
  backing?: 'qcow2' | 'raw';
  /** data_file (optionally raw). */
  dataFile?: 'plain' | 'raw';
}

const COMBOS: readonly Combo[] = [
  { name: 'v2 64k', options: 'compat=0.10', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'v2 64k, qcow2 backing', options: 'compat=0.10', size: 4 * MiB, clusterSize: 64 * KiB, backing: 'qcow2' },
  { name: 'v2 4k, raw backing', options: 'compat=0.10,cluster_size=4096', size: 2 * MiB, clusterSize: 4 * KiB, backing: 'raw' },
  { name: 'v3 512', options: 'cluster_size=512', size: 2 * MiB, clusterSize: 512 },
  { name: 'v3 4k', options: 'cluster_size=4096', size: 4 * MiB, clusterSize: 4 * KiB },
  { name: 'v3 64k', options: 'compat=1.1', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'v3 2M', options: 'cluster_size=2M', size: 8 * MiB, clusterSize: 2 * MiB },
  { name: 'refcount_bits=1', options: 'refcount_bits=1', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'refcount_bits=8', options: 'refcount_bits=8', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'refcount_bits=64', options: 'refcount_bits=64', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'refcount_bits=64, 512 clusters (refcount table grows)', options: 'refcount_bits=64,cluster_size=512', size: 2 * MiB, clusterSize: 512 },
  { name: 'refcount_bits=1, 4k clusters', options: 'refcount_bits=1,cluster_size=4096', size: 4 * MiB, clusterSize: 4 * KiB },
  { name: 'lazy_refcounts', options: 'lazy_refcounts=on', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'lazy_refcounts, qcow2 backing', options: 'lazy_refcounts=on,refcount_bits=8', size: 4 * MiB, clusterSize: 64 * KiB, backing: 'qcow2' },
  { name: 'extended_l2', options: 'extended_l2=on', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'extended_l2, qcow2 backing', options: 'extended_l2=on', size: 4 * MiB, clusterSize: 64 * KiB, backing: 'qcow2' },
  { name: 'extended_l2 32k, raw backing', options: 'extended_l2=on,cluster_size=32k', size: 4 * MiB, clusterSize: 32 * KiB, backing: 'raw' },
  { name: 'extended_l2 2M', options: 'extended_l2=on,cluster_size=2M', size: 8 * MiB, clusterSize: 2 * MiB },
  { name: 'compression_type=zstd', options: 'compression_type=zstd', size: 4 * MiB, clusterSize: 64 * KiB },
  { name: 'data_file', options: '', size: 4 * MiB, clusterSize: 64 * KiB, dataFile: 'plain' },
  { name: 'data_file, qcow2 backing', options: '', size: 4 * MiB, clusterSize: 64 * KiB, dataFile: 'plain', backing: 'qcow2' },
  { name: 'data_file_raw', options: '', size: 4 * MiB, clusterSize: 64 * KiB, dataFile: 'raw' },
  { name: 'data_file_raw, extended_l2', options: 'extended_l2=on', size: 4 * MiB, clusterSize: 64 * KiB, dataFile: 'raw' },
  { name: 'qcow2 backing', options: '', size: 4 * MiB, clusterSize: 64 * KiB, backing: 'qcow2' },
  { name: 'raw backing (shorter than the image)', options: '', size: 4 * MiB, clusterSize: 64 * KiB, backing: 'raw' },
  { name: '4k clusters over a 64k qcow2 backing', options: 'cluster_size=4096', size: 4 * MiB, clusterSize: 4 * KiB, backing: 'qcow2' },
];

const BASE_SEED = Number(process.env['QCOW2KIT_WRITE_SEED'] ?? 20260301);

/** Our create when it is built (and not overridden), else qemu-img's. */
const useOurCreate = existsSync(join(repoRoot, 'dist', 'cli', 'cmd-create.js')) && process.env['QCOW2KIT_INTEROP_CREATE'] !== 'qemu';

/**
 * A random qemu-io script. Offsets and lengths mix cluster-aligned, sector-aligned and
 * byte-granular values, so writes hit partial clusters (read-modify-write, COW from the
 * backing file) and span several clusters; zero writes and discards land on data written
 * earlier in the script.
 */
export function randomScript(seed: number, size: number, clusterSize: number): string[] {
  const next = prng(seed);
  const rand = (n: number): number => next() % n;
  const count = 30 + rand(51);
  const cmds: string[] = [];
  const pickRange = (): [number, number] => {
    let len: number;
    switch (rand(5)) {
      case 0:
        len = 1 + rand(4096);
        break;
      case 1:
        len = clusterSize * (1 + rand(3));
        break;
      case 2:
        len = 512 * (1 + rand(Math.max(1, (3 * clusterSize) / 512)));
        break;
      case 3:
        len = 1 + rand(2 * clusterSize + 1);
        break;
      default:
        len = Math.min(size, 256 * KiB) - rand(1000);
    }
    len = Math.max(1, Math.min(len, size, 1 * MiB));
    let off: number;
    switch (rand(3)) {
      case 0:
        off = clusterSize * rand(Math.floor(size / clusterSize));
        break;
      case 1:
        off = 512 * rand(size / 512);
        break;
      default:
        off = rand(size);
    }
    if (off + len > size) off = size - len;
    return [off, len];
  };
  for (let i = 0; i < count; i++) {
    const [off, len] = pickRange();
    const r = rand(100);
    if (r < 55) cmds.push(`write -P 0x${(1 + rand(255)).toString(16)} ${off} ${len}`);
    else if (r < 68) cmds.push(`write -z ${off} ${len}`);
    else if (r < 80) cmds.push(`write -z -u ${off} ${len}`);
    else if (r < 93) cmds.push(`discard ${off} ${len}`);
    else cmds.push('flush');
  }
  return cmds;
}

function ioArgs(image: string, cmds: readonly string[]): string[] {
  return [...cmds.flatMap((c) => ['-c', c]), image];
}

/** Runs a script with `qcow2kit io` and checks it reports no failure and no stack trace. */
async function oursIo(dir: string, image: string, cmds: readonly string[]): Promise<RunResult> {
  const r = check(await qcow2kit(['io', ...ioArgs(image, cmds)], { cwd: dir }));
  assert.deepEqual(stackTraceLines(r.stderr), [], `${r.command}: stack trace\n${r.stderr}`);
  assert.doesNotMatch(r.stdout + r.stderr, /failed|error/i, `${r.command}:\n${r.stdout}${r.stderr}`);
  return r;
}

/** `qemu-img check --output=json` finds the image clean: exit 0, no errors, no leaks. */
async function assertClean(dir: string, image: string, what: string): Promise<void> {
  const r = await qemuImg(['check', '--output=json', image], { cwd: dir });
  const human = await qemuImg(['check', image], { cwd: dir });
  assert.equal(r.code, 0, `${what}: qemu-img check exit ${r.code}\n${human.stdout}${human.stderr}`);
  const j = parseJson(r.stdout, 'qemu-img check --output=json') as Record<string, unknown>;
  for (const key of ['check-errors', 'leaks', 'corruptions']) {
    assert.equal(j[key] ?? 0, 0, `${what}: ${key} = ${String(j[key])}\n${human.stdout}`);
  }
}

async function assertIdentical(dir: string, a: string, b: string, what: string): Promise<void> {
  const r = await qemuImg(['compare', a, b], { cwd: dir });
  assert.equal(r.code, 0, `${what}: qemu-img compare ${a} ${b}: exit ${r.code}\n${r.stdout}${r.stderr}`);
}

/** The parts of `qemu-img info --output=json` both images must share. */
async function infoOf(dir: string, image: string): Promise<Record<string, unknown>> {
  const r = check(await qemuImg(['info', '--output=json', '-U', image], { cwd: dir }));
  const j = parseJson(r.stdout, 'qemu-img info') as Record<string, unknown>;
  const fs = structuredClone(j['format-specific']) as { data?: Record<string, unknown> } | undefined;
  // Each image has its own data file; only its presence matters here.
  if (fs?.data !== undefined && 'data-file' in fs.data) fs.data['data-file'] = '<data file>';
  return {
    'virtual-size': j['virtual-size'],
    'cluster-size': j['cluster-size'],
    'backing-filename': j['backing-filename'],
    'backing-filename-format': j['backing-filename-format'],
    'dirty-flag': j['dirty-flag'],
    'format-specific': fs,
  };
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** The backing file of a combination (it must come out of the test unchanged). */
async function makeBacking(dir: string, kind: 'qcow2' | 'raw'): Promise<void> {
  if (kind === 'qcow2') {
    await makeQcow2Backing(dir);
    return;
  }
  // Raw backing: 3 MiB of random data with a hole, shorter than the 4 MiB overlays.
  await writeRawFile(join(dir, 'base.raw'), 3 * MiB, [
    { offset: 0, data: randomBytes(7, 1 * MiB + 1234) },
    { offset: 2 * MiB - 4096, data: randomBytes(8, 1 * MiB + 4096) },
  ]);
}

async function makeQcow2Backing(dir: string): Promise<void> {
  check(await qemuImg(['create', '-f', 'qcow2', 'base.qcow2', String(4 * MiB)], { cwd: dir }));
  await qemuIoWrite('base.qcow2', [
    'write -P 0x11 0 1M',
    'write -P 0x22 1100k 300k',
    'write -P 0x33 2M 64k',
    'write -z 2100k 100k',
    'write -P 0x44 3000k 1000k',
  ], { cwd: dir });
}

/** Creates one image of a combination, with its own data file when it uses one. */
async function createImage(dir: string, combo: Combo, name: string, tool: 'qemu' | 'ours'): Promise<void> {
  const opts = [combo.options];
  if (combo.dataFile !== undefined) opts.push(`data_file=${name}.data`);
  if (combo.dataFile === 'raw') opts.push('data_file_raw=on');
  const o = opts.filter((x) => x !== '').join(',');
  const args = ['create', '-q', '-f', 'qcow2'];
  if (o !== '') args.push('-o', o);
  if (combo.backing !== undefined) args.push('-b', `base.${combo.backing}`, '-F', combo.backing);
  args.push(name, String(combo.size));
  check(tool === 'ours' ? await qcow2kit(args, { cwd: dir }) : await qemuImg(args, { cwd: dir }));
}

function failureNote(combo: Combo, seed: number): string {
  return `[${combo.name}] seed ${seed} (QCOW2KIT_WRITE_SEED=${BASE_SEED}); options '${combo.options}'` +
    `${combo.backing !== undefined ? `, backing ${combo.backing}` : ''}${combo.dataFile !== undefined ? `, data file ${combo.dataFile}` : ''}`;
}

async function runCombo(t: TestContext, dir: string, combo: Combo, index: number): Promise<void> {
  const seed = BASE_SEED + index * 7919;
  const note = failureNote(combo, seed);
  const script = randomScript(seed, combo.size, combo.clusterSize);
  const tag = `c${index}`;
  const ref = `${tag}-ref.qcow2`;
  const ours = `${tag}-ours.qcow2`;
  const shared = `${tag}-shared.qcow2`;
  await createImage(dir, combo, ref, 'qemu');
  await createImage(dir, combo, ours, useOurCreate ? 'ours' : 'qemu');
  await createImage(dir, combo, shared, 'qemu');
  const backingHash = combo.backing === undefined ? undefined : await sha256(join(dir, `base.${combo.backing}`));

  try {
    // 1. Same script through both tools; qemu-io's output (timings aside) is the oracle for ours.
    const q = check(await qemuIo(ioArgs(ref, script), { cwd: dir }));
    assert.doesNotMatch(q.stdout + q.stderr, /failed|error/i, `qemu-io itself failed:\n${q.stdout}${q.stderr}`);
    const o = await oursIo(dir, ours, script);
    assert.deepEqual(withoutTimings(o.stdout), withoutTimings(q.stdout), 'io output differs from qemu-io');

    await assertClean(dir, ours, 'ours');
    await assertIdentical(dir, ref, ours, 'ours vs reference');
    assert.deepEqual(await infoOf(dir, ours), await infoOf(dir, ref), 'qemu-img info differs');
    if (combo.dataFile === 'raw') {
      // A raw data file stays a valid raw image of the guest content.
      await assertIdentical(dir, `${ours}.data`, `${ref}.data`, 'raw data files');
    }

    // 2. Alternate writers on one image: qemu-io, ours, qemu-io.
    const third = Math.ceil(script.length / 3);
    const parts = [script.slice(0, third), script.slice(third, 2 * third), script.slice(2 * third)];
    await qemuIoWrite(shared, parts[0]!, { cwd: dir });
    await oursIo(dir, shared, parts[1]!);
    await assertClean(dir, shared, 'shared image after our part');
    await qemuIoWrite(shared, parts[2]!, { cwd: dir });
    await assertClean(dir, shared, 'shared image at the end');
    await assertIdentical(dir, ref, shared, 'alternately written image vs reference');
    // And our reader agrees that the alternately written image is the reference.
    const cmp = await qcow2kit(['compare', ref, shared], { cwd: dir });
    assert.equal(cmp.code, 0, `qcow2kit compare: exit ${cmp.code}\n${cmp.stdout}${cmp.stderr}`);

    if (backingHash !== undefined) {
      assert.equal(await sha256(join(dir, `base.${combo.backing}`)), backingHash, 'the backing file was modified');
    }
  } catch (e) {
    t.diagnostic(`${note}\nscript:\n${script.join('\n')}`);
    if (e instanceof Error) e.message = `${note}: ${e.message}\n(script: ${script.map((c) => `-c '${c}'`).join(' ')})`;
    throw e;
  }
}

describe('write path interop: random io scripts, qemu-io vs qcow2kit', { concurrency: 2 }, () => {
  test('the script generator is seeded and mixes every command', () => {
    const a = randomScript(1, 4 * MiB, 64 * KiB);
    assert.deepEqual(a, randomScript(1, 4 * MiB, 64 * KiB));
    assert.notDeepEqual(a, randomScript(2, 4 * MiB, 64 * KiB));
    const all = COMBOS.flatMap((c, i) => randomScript(BASE_SEED + i * 7919, c.size, c.clusterSize));
    for (const kind of [/^write -P /, /^write -z \d/, /^write -z -u /, /^discard /, /^flush$/]) {
      assert.ok(all.some((c) => kind.test(c)), `no command matches ${kind}`);
    }
    // Unaligned offsets and lengths occur.
    assert.ok(all.some((c) => /^write -P \S+ \d*[1-9]\d* \d+$/.test(c) && Number(c.split(' ')[2]) % 512 !== 0));
    for (const [i, c] of COMBOS.entries()) {
      const s = randomScript(BASE_SEED + i * 7919, c.size, c.clusterSize);
      assert.ok(s.length >= 30 && s.length <= 80);
      for (const cmd of s) {
        const nums = cmd.split(' ').filter((w) => /^\d+$/.test(w)).map(Number);
        if (nums.length === 2) assert.ok(nums[0]! + nums[1]! <= c.size, `${cmd} beyond ${c.size}`);
      }
    }
  });

  for (const [index, combo] of COMBOS.entries()) {
    test(combo.name, async (t) => {
      if (!requireQemu(t)) return;
      const dir = await tempDir(t, 'qcow2kit-write-');
      if (combo.backing !== undefined) await makeBacking(dir, combo.backing);
      await runCombo(t, dir, combo, index);
    });
  }
});

/** `bench -w` workloads: many concurrent, overlapping, unaligned writes through the async API. */
const BENCH_CASES: ReadonlyArray<{ name: string; create: string[]; bench: string[] }> = [
  // 4 MiB images: with 7.2's wrap at the image size, -S 4k wraps cleanly; 1365 requests of 4k
  // every 3k stay inside (the next one would cross the end and fail in both tools).
  { name: 'overlapping 4k writes every 3k, depth 64', create: ['-o', 'cluster_size=64k'], bench: ['-c', '1365', '-d', '64', '-s', '4k', '-S', '3k'] },
  { name: 'wrapping 4k writes, depth 64', create: ['-o', 'cluster_size=4k'], bench: ['-c', '3000', '-d', '64', '-s', '4k'] },
  { name: 'extended_l2 over a qcow2 backing, 100k every 37k', create: ['-o', 'extended_l2=on', '-b', 'base.qcow2', '-F', 'qcow2'], bench: ['-c', '100', '-d', '16', '-s', '100k', '-S', '37k', '-o', '5', '--pattern=0x5a'] },
  { name: '512-byte clusters, refcount_bits=64, drained flushes', create: ['-o', 'cluster_size=512,refcount_bits=64'], bench: ['-c', '300', '-d', '8', '-s', '64k', '--flush-interval=8'] },
  { name: 'compat=0.10, 1536 bytes every 512, undrained flushes', create: ['-o', 'compat=0.10'], bench: ['-c', '1000', '-d', '32', '-s', '1536', '-S', '512', '-o', '1M', '--flush-interval=40', '--no-drain'] },
  { name: 'lazy_refcounts, writethrough', create: ['-o', 'lazy_refcounts=on,cluster_size=4k'], bench: ['-t', 'writethrough', '-c', '200', '-d', '4', '-s', '8k', '-S', '5k'] },
];

describe('bench -w: qemu-img bench and qcow2kit bench leave the same image', { concurrency: 2 }, () => {
  for (const c of BENCH_CASES) {
    test(c.name, async (t) => {
      if (!requireQemu(t)) return;
      const dir = await tempDir(t, 'qcow2kit-bench-');
      if (c.create.includes('base.qcow2')) await makeBacking(dir, 'qcow2');
      for (const name of ['q.qcow2', 'o.qcow2']) {
        check(await qemuImg(['create', '-q', '-f', 'qcow2', ...c.create, name, String(4 * MiB)], { cwd: dir }));
      }
      const q = check(await qemuImg(['bench', '-w', ...c.bench, 'q.qcow2'], { cwd: dir }));
      const o = check(await qcow2kit(['bench', '-w', ...c.bench, 'o.qcow2'], { cwd: dir }));
      assert.equal(o.stdout.split('\n')[0], q.stdout.split('\n')[0]);
      assert.equal(o.stderr, '');
      assert.match(o.stdout, /\nRun completed in \d+\.\d{3} seconds\.\n$/);
      await assertClean(dir, 'o.qcow2', c.name);
      await assertIdentical(dir, 'q.qcow2', 'o.qcow2', c.name);
    });
  }
});

test('bench: a wrapped request that crosses the end fails in both tools (qemu-img 7.2)', async (t) => {
  if (!requireQemu(t)) return;
  const dir = await tempDir(t, 'qcow2kit-bench-');
  for (const name of ['q.qcow2', 'o.qcow2']) check(await qemuImg(['create', '-q', '-f', 'qcow2', name, String(4 * MiB)], { cwd: dir }));
  const args = ['bench', '-w', '-c', '1366', '-d', '1', '-s', '4k', '-S', '3k'];
  const q = await qemuImg([...args, 'q.qcow2'], { cwd: dir });
  const o = await qcow2kit([...args, 'o.qcow2'], { cwd: dir });
  assert.equal(q.code, 1);
  assert.equal(o.code, 1);
  assert.equal(o.stdout, q.stdout);
  assert.equal(o.stderr, q.stderr.replace(/^qemu-img:/, 'qcow2kit:'));
});
