/**
 * Crash safety (issue #3, "Done when" #2). A child process (writer-child.ts, the library from
 * dist/node.js) writes, zeroes, discards and flushes at random with many requests in flight on a
 * qemu-img-created image, and is killed with SIGKILL 10-300 ms after it reports it is running.
 * Then:
 *   1. `qemu-img check` must find no corruption: exit 0, or 3 (leaked clusters, allowed).
 *      Lazy refcounts: the writer sets the dirty bit before deferring refcount updates, and
 *      QEMU's check reports the missing refcounts as errors until repaired (verified-notes.md,
 *      "check of an image with the dirty bit set ... exit 2 until -r all"). For an image left
 *      dirty we run `qemu-img check -r all` and then require a clean check (exit 0). A dirty bit
 *      on an image without lazy refcounts is a failure.
 *   2. The image opens read-only with our library and every byte reads without error.
 *   3. Every range the child reported as written and flushed ("stable") reads back with its
 *      pattern, through our library and through qemu-io.
 *   4. Our library opens the crashed image writable (a dirty lazy image must be repaired as QEMU
 *      does), takes a write and closes; `qemu-img check` must then find no corruption.
 *
 * QCOW2KIT_CRASH_TRIALS (default 20) sets the number of kills; QCOW2KIT_CRASH_BUDGET_S (default
 * 60) stops starting new ones after that many seconds; QCOW2KIT_CRASH_SEED picks the seeds.
 * A failure names the seed, options and kill delay, prints a shell reproduction, and keeps the
 * image in a directory it names.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { openImageFile } from '../../dist/node.js';
import {
  check, hasQemu, parseJson, patchFile, prng, qemuImg, qemuIo, qemuIoWrite, randomBytes, readAt, requireQemu, writeRawFile,
} from '../interop/helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** One image configuration a trial can use. */
interface Config {
  name: string;
  options: string;
  size: number;
  backing?: 'qcow2' | 'raw';
  dataFile?: boolean;
  lazy?: boolean;
}

const CONFIGS: readonly Config[] = [
  { name: '64k', options: 'cluster_size=64k', size: 8 * MiB },
  { name: 'lazy_refcounts', options: 'lazy_refcounts=on', size: 8 * MiB, lazy: true },
  { name: '4k, refcount_bits=1', options: 'cluster_size=4k,refcount_bits=1', size: 8 * MiB },
  { name: 'lazy_refcounts, qcow2 backing', options: 'lazy_refcounts=on,cluster_size=4k', size: 8 * MiB, backing: 'qcow2', lazy: true },
  { name: '512, refcount_bits=64 (refcount table grows)', options: 'cluster_size=512,refcount_bits=64', size: 8 * MiB },
  { name: 'qcow2 backing', options: '', size: 8 * MiB, backing: 'qcow2' },
  { name: 'compat=0.10', options: 'compat=0.10', size: 8 * MiB },
  { name: 'extended_l2, raw backing', options: 'extended_l2=on,cluster_size=32k', size: 8 * MiB, backing: 'raw' },
  { name: '2M, refcount_bits=8', options: 'cluster_size=2M,refcount_bits=8', size: 16 * MiB },
  { name: 'data_file', options: '', size: 8 * MiB, dataFile: true },
];

const TRIALS = Number(process.env['QCOW2KIT_CRASH_TRIALS'] ?? 20);
const BUDGET_MS = Number(process.env['QCOW2KIT_CRASH_BUDGET_S'] ?? 60) * 1000;
const BASE_SEED = Number(process.env['QCOW2KIT_CRASH_SEED'] ?? 4242);
const DEPTH = 32;
const childPath = fileURLToPath(new URL('./writer-child.js', import.meta.url));

interface Stable {
  offset: number;
  length: number;
  pattern: number;
}

interface ChildRun {
  stable: Stable[];
  ops: number;
  /** Child died on its own (an error) instead of being killed. */
  exitedEarly: string | undefined;
}

/** Starts the writer, kills it `delayMs` after it reports "ready". */
function runChild(dir: string, image: string, seed: number, delayMs: number): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [childPath, image, String(seed), String(DEPTH)], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let killed = false;
    let timer: NodeJS.Timeout | undefined;
    const watchdog = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, 30_000);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      out += s;
      if (timer === undefined && /^ready /m.test(out)) {
        timer = setTimeout(() => {
          killed = true;
          child.kill('SIGKILL');
        }, delayMs);
      }
    });
    child.stderr.on('data', (s: string) => {
      err += s;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(watchdog);
      if (timer !== undefined) clearTimeout(timer);
      // Only complete lines count: the kill may cut the last one.
      const lines = out.split('\n').slice(0, -1);
      const stable: Stable[] = [];
      let ops = 0;
      for (const line of lines) {
        const m = /^stable (\d+) (\d+) (\d+)$/.exec(line);
        if (m !== null) stable.push({ offset: Number(m[1]), length: Number(m[2]), pattern: Number(m[3]) });
        const o = /^ops (\d+)$/.exec(line);
        if (o !== null) ops = Number(o[1]);
      }
      const early = killed && signal === 'SIGKILL' ? undefined : `writer exited by itself (code ${code}, signal ${signal}):\n${err}`;
      resolve({ stable, ops, exitedEarly: early });
    });
  });
}

interface CheckJson {
  'check-errors'?: number;
  corruptions?: number;
  leaks?: number;
}

async function checkJson(dir: string, image: string): Promise<{ code: number | null; json: CheckJson | undefined; text: string }> {
  const r = await qemuImg(['check', '--output=json', image], { cwd: dir });
  let json: CheckJson | undefined;
  try {
    json = JSON.parse(r.stdout) as CheckJson;
  } catch {
    json = undefined;
  }
  const human = r.code === 0 ? '' : (await qemuImg(['check', image], { cwd: dir })).stdout;
  return { code: r.code, json, text: `${r.stdout}${r.stderr}\n${human}` };
}

async function dirtyFlag(dir: string, image: string): Promise<boolean> {
  const r = check(await qemuImg(['info', '--output=json', '-U', image], { cwd: dir }));
  return (parseJson(r.stdout, 'qemu-img info') as { 'dirty-flag'?: boolean })['dirty-flag'] === true;
}

async function makeBacking(dir: string, kind: 'qcow2' | 'raw'): Promise<void> {
  if (kind === 'raw') {
    await writeRawFile(join(dir, 'base.raw'), 6 * MiB, [{ offset: 512 * KiB, data: randomBytes(3, 3 * MiB) }]);
    return;
  }
  check(await qemuImg(['create', '-q', '-f', 'qcow2', 'base.qcow2', String(8 * MiB)], { cwd: dir }));
  await qemuIoWrite('base.qcow2', ['write -P 0x5c 0 3M', 'write -P 0x6d 5M 2M'], { cwd: dir });
}

function createArgs(config: Config, image: string): string[] {
  const opts = [config.options, ...(config.dataFile === true ? [`data_file=${image}.data`] : [])].filter((s) => s !== '').join(',');
  return [
    'create', '-q', '-f', 'qcow2',
    ...(opts === '' ? [] : ['-o', opts]),
    ...(config.backing === undefined ? [] : ['-b', `base.${config.backing}`, '-F', config.backing]),
    image, String(config.size),
  ];
}

/** Reads the whole image with our library and checks the stable ranges. */
async function readWithLibrary(path: string, stable: readonly Stable[]): Promise<string[]> {
  const problems: string[] = [];
  const image = await openImageFile(path);
  try {
    const buf = new Uint8Array(MiB);
    for (let off = 0; off < image.size; off += buf.length) {
      const piece = buf.subarray(0, Math.min(buf.length, image.size - off));
      await image.read(piece, off);
    }
    for (const s of stable) {
      const got = new Uint8Array(s.length);
      await image.read(got, s.offset);
      const bad = got.findIndex((b) => b !== s.pattern);
      if (bad >= 0) problems.push(`our read: byte ${s.offset + bad} is 0x${got[bad]!.toString(16)}, flushed pattern 0x${s.pattern.toString(16)} (range ${s.offset}+${s.length})`);
    }
  } finally {
    await image.close();
  }
  return problems;
}

/** Opens writable with our library, writes a little, closes. */
const WRITE_AT = 128 * KiB + 1000;
const WRITE_LEN = 3 * KiB;

async function writeWithLibrary(path: string): Promise<void> {
  const image = await openImageFile(path, { readOnly: false });
  try {
    // Into a chunk the writer treats as random traffic (never a flushed range), and a fresh one.
    await image.write(new Uint8Array(WRITE_LEN).fill(0x77), WRITE_AT);
    await image.write(new Uint8Array(64 * KiB).fill(0x78), 6 * 128 * KiB);
    await image.discard(5 * 128 * KiB, 128 * KiB);
  } finally {
    await image.close();
  }
}

interface TrialResult {
  failures: string[];
  dirty: boolean;
  leaks: number;
  ops: number;
  stable: number;
}

/** What a trial found; `failures` empty means the image survived. */
interface Verdict {
  failures: string[];
  dirty: boolean;
  leaks: number;
}

/**
 * Steps 1-4 of the file comment on a crashed image `image` in `dir`. The image itself is
 * repaired (check -r all) when it was left dirty; the writable reopen runs on a copy.
 */
async function evaluate(dir: string, image: string, config: Pick<Config, 'lazy'>, stable: readonly Stable[]): Promise<Verdict> {
  const failures: string[] = [];
  const dirty = await dirtyFlag(dir, image);
  if (dirty && config.lazy !== true) failures.push('dirty bit set on an image without lazy refcounts');
  const c = await checkJson(dir, image);
  const leaks = c.json?.leaks ?? 0;
  if (!dirty) {
    if ((c.code !== 0 && c.code !== 3) || (c.json?.corruptions ?? 0) !== 0 || (c.json?.['check-errors'] ?? 0) !== 0) {
      failures.push(`qemu-img check: exit ${c.code}\n${c.text}`);
    }
  }

  try {
    failures.push(...(await readWithLibrary(join(dir, image), stable)));
  } catch (e) {
    failures.push(`our library cannot read the crashed image: ${(e as Error).message}`);
  }

  if (stable.length > 0) {
    const cmds = stable.flatMap((s) => ['-c', `read -q -P ${s.pattern} ${s.offset} ${s.length}`]);
    const r = await qemuIo(['-r', ...cmds, image], { cwd: dir });
    if (r.code !== 0 || /fail|error/i.test(r.stdout + r.stderr)) failures.push(`qemu-io read of flushed ranges: exit ${r.code}\n${r.stdout}${r.stderr}`);
  }

  // Our writable open of the crashed image, on a copy (backing and data files are shared).
  const copy = `reopened-${image}`;
  await copyFile(join(dir, image), join(dir, copy));
  try {
    await writeWithLibrary(join(dir, copy));
    const after = await checkJson(dir, copy);
    const what = `after our writable reopen${dirty ? ' of the dirty image' : ''}`;
    if ((after.code !== 0 && after.code !== 3) || (after.json?.corruptions ?? 0) !== 0 || (after.json?.['check-errors'] ?? 0) !== 0) {
      failures.push(`${what}: qemu-img check exit ${after.code}\n${after.text}`);
    }
    // Its small write must not have landed on live data: the flushed ranges are intact.
    const kept = stable.filter((s) => s.offset + s.length <= WRITE_AT || s.offset >= WRITE_AT + WRITE_LEN);
    failures.push(...(await readWithLibrary(join(dir, copy), kept)).map((p) => `${what}: ${p}`));
  } catch (e) {
    failures.push(`our library cannot reopen the crashed image writable: ${(e as Error).message}`);
  }

  if (dirty) {
    const repair = await qemuImg(['check', '-r', 'all', image], { cwd: dir });
    const clean = await checkJson(dir, image);
    if (clean.code !== 0) failures.push(`dirty image: after qemu-img check -r all (exit ${repair.code}), check exit ${clean.code}\n${repair.stdout}${clean.text}`);
  }
  return { failures, dirty, leaks };
}

interface TrialResult extends Verdict {
  ops: number;
  stable: number;
}

async function trial(root: string, index: number): Promise<TrialResult> {
  const seed = BASE_SEED + index;
  const config = CONFIGS[index % CONFIGS.length]!;
  const rand = prng(seed * 31 + 7);
  const delayMs = 10 + (rand() % 291);
  const dir = join(root, `t${index}`);
  await mkdir(dir);
  if (config.backing !== undefined) await makeBacking(dir, config.backing);
  const image = 'crash.qcow2';
  const args = createArgs(config, image);
  check(await qemuImg(args, { cwd: dir }));

  const run = await runChild(dir, image, seed, delayMs);
  const verdict = await evaluate(dir, image, config, run.stable);
  const failures = [...(run.exitedEarly === undefined ? [] : [run.exitedEarly]), ...verdict.failures];
  if (failures.length > 0) {
    const keep = await mkdtemp(join(tmpdir(), `qcow2kit-crash-fail-${seed}-`));
    await cp(dir, keep, { recursive: true });
    const repro = [
      `cd $(mktemp -d)`,
      ...(config.backing === undefined ? [] : [`# backing file base.${config.backing}: see makeBacking() in test/crash/crash.test.ts`]),
      `qemu-img ${args.join(' ')}`,
      `node ${childPath} ${image} ${seed} ${DEPTH} & sleep ${(delayMs / 1000 + 0.15).toFixed(3)}; kill -9 $!`,
      `qemu-img check ${image}`,
    ].join('\n');
    failures.unshift(`trial ${index} [${config.name}] seed ${seed}, killed ${delayMs} ms after ready, ${run.ops}+ ops, ${run.stable.length} flushed ranges; files kept in ${keep}\nreproduce (timing-dependent):\n${repro}`);
  }
  return { ...verdict, failures, ops: run.ops, stable: run.stable.length };
}

/** Where trials run: tmpfs when there is one (SIGKILL does not care about the disk, and it is faster). */
async function workRoot(): Promise<string> {
  const base = process.env['QCOW2KIT_CRASH_DIR'] ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  return mkdtemp(join(base, 'qcow2kit-crash-'));
}

test('the verdict catches corruption and lost flushed data (control)', async (t) => {
  if (!requireQemu(t)) return;
  const dir = await workRoot();
  t.after(() => rm(dir, { recursive: true, force: true }));
  check(await qemuImg(['create', '-q', '-f', 'qcow2', 'a.qcow2', String(MiB)], { cwd: dir }));
  await qemuIoWrite('a.qcow2', ['write -P 0x42 0 64k'], { cwd: dir });
  // A good image with a correct flushed range passes.
  const good = await evaluate(dir, 'a.qcow2', {}, [{ offset: 100, length: 1000, pattern: 0x42 }]);
  assert.deepEqual(good.failures, []);
  // A wrong pattern is reported by both readers, and again on the reopened copy.
  const lost = await evaluate(dir, 'a.qcow2', {}, [{ offset: 100, length: 1000, pattern: 0x43 }]);
  assert.equal(lost.failures.length, 3, lost.failures.join('\n'));
  assert.match(lost.failures[0]!, /^our read: byte 100 is 0x42, flushed pattern 0x43/);
  assert.match(lost.failures[1]!, /^qemu-io read of flushed ranges: exit 1/);
  // Refcount 0 for the data cluster: QEMU calls that corruption.
  const header = await readAt(join(dir, 'a.qcow2'), 48, 8);
  const reftable = Number(new DataView(header.buffer, header.byteOffset).getBigUint64(0));
  const refblock = Number(new DataView((await readAt(join(dir, 'a.qcow2'), reftable, 8)).buffer).getBigUint64(0));
  const map = parseJson(check(await qemuImg(['map', '--output=json', 'a.qcow2'], { cwd: dir })).stdout, 'map') as Array<{ offset?: number }>;
  const dataCluster = map[0]!.offset! / 65536;
  await patchFile(join(dir, 'a.qcow2'), refblock + 2 * dataCluster, new Uint8Array(2));
  const broken = await evaluate(dir, 'a.qcow2', {}, []);
  assert.ok(broken.failures.some((f) => f.startsWith('qemu-img check: exit 2')), broken.failures.join('\n'));
});

test('an image QEMU left dirty (lazy refcounts, qemu-io abort) survives our writable open', async (t) => {
  if (!requireQemu(t)) return;
  const dir = await workRoot();
  t.after(() => rm(dir, { recursive: true, force: true }));
  check(await qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'q.qcow2', String(8 * MiB)], { cwd: dir }));
  // qemu-io's abort command crashes QEMU with its refcount updates still deferred.
  await qemuIo(['-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 512k', '-c', 'abort', 'q.qcow2'], { cwd: dir });
  assert.equal(await dirtyFlag(dir, 'q.qcow2'), true, 'qemu-io abort should leave the dirty bit set');
  const verdict = await evaluate(dir, 'q.qcow2', { lazy: true }, [
    { offset: 0, length: MiB, pattern: 0x11 },
    { offset: 3 * MiB, length: 512 * KiB, pattern: 0x22 },
  ]);
  assert.deepEqual(verdict.failures, []);
});

test('SIGKILL during random concurrent writes never corrupts the image', { timeout: Math.max(BUDGET_MS * 2, 120_000) }, async (t) => {
  if (!requireQemu(t)) return;
  assert.ok(hasQemu());
  const root = await workRoot();
  t.after(() => (process.env['QCOW2KIT_KEEP_TMP'] === '1' ? undefined : rm(root, { recursive: true, force: true })));
  const start = Date.now();
  const failures: string[] = [];
  let ran = 0;
  let dirty = 0;
  let leaky = 0;
  let ops = 0;
  let stable = 0;
  for (let i = 0; i < TRIALS; i++) {
    if (i > 0 && Date.now() - start > BUDGET_MS) break;
    const r = await trial(root, i);
    ran++;
    if (r.dirty) dirty++;
    if (r.leaks > 0) leaky++;
    ops += r.ops;
    stable += r.stable;
    failures.push(...(r.failures.length > 0 ? [r.failures.join('\n')] : []));
  }
  const seconds = ((Date.now() - start) / 1000).toFixed(1);
  t.diagnostic(
    `${ran}/${TRIALS} trials in ${seconds} s (seeds ${BASE_SEED}..${BASE_SEED + ran - 1}); ${failures.length} failed; ` +
      `${dirty} left dirty (lazy refcounts, repaired by check -r all); ${leaky} with leaked clusters; ` +
      `${ops}+ operations before the kills; ${stable} flushed ranges verified`,
  );
  assert.ok(ran >= Math.min(TRIALS, 5), `only ${ran} trials fit in the time budget`);
  assert.deepEqual(failures, [], `${failures.length} of ${ran} crash trials failed:\n\n${failures.join('\n\n')}`);
});
