/**
 * One fuzz execution: open a mutated image and drive it the way the tools do (open, info, map,
 * read everything that is cheap to read, write a little, reopen, check and repair when the
 * check module exists), then classify every outcome. Success and Qcow2Error are fine;
 * anything else escaping the library, a deadline passed, or memory growth past the bound is a
 * finding. Deterministic: the operations come from the case seed, not from the clock.
 */
import type { CodecSet } from '../codecs/codec.js';
import { Qcow2Error } from '../errors.js';
import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import type { Image } from '../image/image.js';
import { openImage, type OpenImageOptions } from '../image/open-image.js';
import type { OpenPolicy } from '../image/open-policy.js';
import type { BlockStatus, ImageReader } from '../image/types.js';
import { mapEntries, type MapEntry } from '../ops/map-entries.js';
import { inspectUntrusted } from '../ops/untrusted-inspect.js';
import { formatInfoHuman, formatInfoJson } from '../cli/format-info.js';
import { mapHumanWriter, mapJsonWriter } from '../cli/format-map.js';
import { imageInfo } from '../cli/image-info.js';
import { FuzzStorage, HarnessTimeout, HarnessViolation, type FuzzStorageLimits } from './fuzz-storage.js';
import type { Mutation } from './mutation.js';
import { applyMutations } from './mutation.js';
import { mutateImage, type SeedImage } from './mutator.js';
import { Prng } from './prng.js';

/** A seed with the dependency bytes the fuzz policy serves from memory. */
export interface FuzzSeed extends SeedImage {
  backing?: Uint8Array;
  backingFormat?: 'raw' | 'qcow2';
  data?: Uint8Array;
}

/** A mutated image, fully described by its case seed (and reproducible from it). */
export interface FuzzCase {
  seed: number;
  base: FuzzSeed;
  mutations: Mutation[];
  bytes: Uint8Array;
}

/** What a check/repair implementation must offer for the harness to drive it. */
export interface CheckDriver {
  /** Check (and with `repair`, repair) the image on `storage`; resolves with qemu-img's exit code. */
  check(storage: FuzzStorage, repair: 'none' | 'leaks' | 'all'): Promise<{ exitCode: number }>;
}

export interface ExecOptions {
  /** Per-execution time budget, milliseconds. */
  timeoutMs: number;
  /** Codec sets to alternate between (decoders are fuzzed too). */
  codecs: readonly CodecSet[];
  /** Peak memory growth (bytes) during one case that counts as a blow-up. */
  memoryLimitBytes: number;
  /** Current memory in use (heap + array buffers); the worker provides it. */
  sampleMemory?: () => number;
  /** The check command's library side, when it exists. */
  checker?: CheckDriver | undefined;
  /** Size cap of every in-memory storage (a full disk past it). */
  maxStorageBytes?: number;
}

export type FindingKind = 'crash' | 'timeout' | 'memory' | 'unhandled-rejection' | 'invariant' | 'worker-exit';

/** Something that must not happen. */
export interface Finding {
  kind: FindingKind;
  step: string;
  /** Error constructor name (TypeError, RangeError, HarnessViolation, ...). */
  name: string;
  message: string;
  stack: string;
}

export interface StepResult {
  step: string;
  /** 'ok', 'budget' (stopped by a harness budget), 'finding', a Qcow2Error code, or "exitN" for check steps. */
  outcome: string;
  /** Wall time of the step, milliseconds. */
  ms: number;
}

export interface CaseResult {
  seed: number;
  base: string;
  steps: StepResult[];
  finding?: Finding;
  /** Peak memory growth seen during the case, bytes. */
  peakBytes: number;
  durationMs: number;
}

/** Thrown inside a step to stop it early without it being an error (a harness budget). */
class StepBudget extends Error {}

/** A map can have millions of entries on a huge sparse disk: stop after this many probes. */
const MAP_PROBES = 4000;
/** What one untrusted inspection may use: its metadata limits, cache budgets and slack. */
const UNTRUSTED_MEMORY_CAP = 64 << 20;
/** Guest bytes read per read step, at most. */
const READ_BUDGET = 8 << 20;

/**
 * Build the case for `seed` deterministically: pick a base image and mutate it.
 *
 * @example
 * ```ts
 * const c = buildCase(12345, seeds);
 * ```
 */
export function buildCase(seed: number, seeds: readonly FuzzSeed[]): FuzzCase {
  const rng = new Prng(seed);
  const base = rng.pick(seeds);
  const { bytes, mutations } = mutateImage(base, rng.fork());
  return { seed, base, mutations, bytes };
}

/** Rebuild a case from a (possibly minimised) mutation list. */
export function caseFromMutations(seed: number, base: FuzzSeed, mutations: Mutation[]): FuzzCase {
  return { seed, base, mutations, bytes: applyMutations(base.bytes, mutations) };
}

/** The open policy of the harness: dependencies come from memory, never from the host. */
function fuzzPolicy(base: FuzzSeed, limits: FuzzStorageLimits, readOnly: boolean): OpenPolicy {
  return {
    mode: 'custom',
    probeFormat: true,
    async open(req) {
      if (req.role === 'data-file') {
        const bytes = base.data ?? new Uint8Array(1 << 20);
        return { storage: new FuzzStorage(bytes.slice(), `data:${req.name}`, readOnly, limits) };
      }
      if (base.backing === undefined) return undefined;
      return { storage: new FuzzStorage(base.backing.slice(), `backing:${req.name}`, true, limits), format: base.backingFormat ?? 'raw' };
    },
  };
}

function errorParts(e: unknown): { name: string; message: string; stack: string } {
  if (e instanceof Error) return { name: e.name || e.constructor.name, message: e.message, stack: e.stack ?? '' };
  return { name: typeof e, message: String(e), stack: '' };
}

/** Counts block-status probes and checks what the engine answers. */
class ProbeGuard implements ImageReader {
  probes = 0;
  readonly #image: Image;

  constructor(image: Image) {
    this.#image = image;
  }

  get size(): number {
    return this.#image.size;
  }

  get driver() {
    return this.#image.driver;
  }

  get backing() {
    return this.#image.backing;
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#image.read(dst, offset);
  }

  async blockStatus(offset: number, maxLength: number): Promise<BlockStatus> {
    if (++this.probes > MAP_PROBES) throw new StepBudget('map probe budget');
    const st = await this.#image.blockStatus(offset, maxLength);
    // The engine's contract (types.ts): the run starts where asked, is non-empty and not longer
    // than asked; a host offset is a real byte offset. map-entries would turn a violation into
    // a Qcow2Error and hide the bug, so it is checked here.
    const bad =
      st.offset !== offset || !Number.isSafeInteger(st.length) || st.length <= 0 || st.length > maxLength ||
      (st.hostOffset !== undefined && (!Number.isSafeInteger(st.hostOffset) || st.hostOffset < 0));
    if (bad) throw new HarnessViolation(`blockStatus(${offset}, ${maxLength}) returned ${JSON.stringify(st)}`);
    return st;
  }

  close(): Promise<void> {
    return this.#image.close();
  }
}

/**
 * Run every step of one case. Never throws: the result carries the first finding, if any.
 *
 * @example
 * ```ts
 * const result = await runCase(buildCase(1, seeds), { timeoutMs: 5000, codecs: [jsCodecs], memoryLimitBytes: 512 << 20 });
 * if (result.finding) console.log(result.finding.stack);
 * ```
 */
export async function runCase(c: FuzzCase, opts: ExecOptions): Promise<CaseResult> {
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  const limits: FuzzStorageLimits = { deadline, maxSize: opts.maxStorageBytes ?? Math.max(64 << 20, c.bytes.byteLength * 2) };
  // Operations come from their own stream so that a minimised mutation list keeps them.
  const rng = new Prng((c.seed ^ 0x5bd1e995) >>> 0);
  const codecs = opts.codecs[rng.int(opts.codecs.length)];
  const sample = opts.sampleMemory;
  const baseline = sample?.() ?? 0;
  let peak = 0;
  // Memory at the start of the current step and the most seen during it (for per-step caps).
  let stepBase = baseline;
  let stepPeak = 0;
  const measure = (): void => {
    if (sample === undefined) return;
    const now = sample();
    if (now - baseline > peak) peak = now - baseline;
    if (now - stepBase > stepPeak) stepPeak = now - stepBase;
  };
  const ticker = sample === undefined ? undefined : setInterval(measure, 5);
  const steps: StepResult[] = [];
  let finding: Finding | undefined;
  const open: Image[] = [];

  /** Runs one step; returns its value, or undefined after an expected error (or a finding). */
  const step = async <T>(name: string, fn: () => Promise<T>, memoryCap?: number): Promise<T | undefined> => {
    if (finding !== undefined) return undefined;
    const t0 = Date.now();
    stepBase = sample?.() ?? 0;
    stepPeak = 0;
    const remaining = deadline - t0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const value = await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new HarnessTimeout(`step ${name} still running after the ${opts.timeoutMs} ms budget`)), Math.max(1, remaining));
        }),
      ]);
      steps.push({ step: name, outcome: 'ok', ms: Date.now() - t0 });
      return value;
    } catch (e) {
      if (e instanceof StepBudget) {
        steps.push({ step: name, outcome: 'budget', ms: Date.now() - t0 });
        return undefined;
      }
      if (Date.now() > deadline || e instanceof HarnessTimeout) {
        finding = { kind: 'timeout', step: name, ...errorParts(e) };
      } else if (e instanceof Qcow2Error && typeof e.code === 'string') {
        steps.push({ step: name, outcome: e.code, ms: Date.now() - t0 });
        return undefined;
      } else {
        finding = { kind: e instanceof HarnessViolation ? 'invariant' : 'crash', step: name, ...errorParts(e) };
      }
      steps.push({ step: name, outcome: 'finding', ms: Date.now() - t0 });
      return undefined;
    } finally {
      clearTimeout(timer);
      measure();
      if (finding === undefined && peak > opts.memoryLimitBytes) {
        finding = { kind: 'memory', step: name, name: 'MemoryGrowth', message: `memory grew by ${peak} bytes (limit ${opts.memoryLimitBytes})`, stack: '' };
      }
      if (finding === undefined && memoryCap !== undefined && sample !== undefined && stepPeak > memoryCap) {
        finding = { kind: 'memory', step: name, name: 'MemoryCap', message: `step used ${stepPeak} bytes, more than its cap of ${memoryCap}`, stack: '' };
      }
    }
  };

  const openOpts = (readOnly: boolean): OpenImageOptions => ({
    readOnly,
    codecs: codecs!,
    policy: fuzzPolicy(c.base, limits, readOnly),
    maxChainDepth: 4,
    // Mostly the real format; sometimes let the top image be probed.
    ...(rng.chance(0.9) ? { format: 'qcow2' } : {}),
    ...(rng.chance(0.3) ? { l2CacheBytes: rng.pick([0, 1, 4096, 1 << 20]) } : {}),
    ...(rng.chance(0.2) ? { openBacking: false } : {}),
  });

  try {
    // Untrusted inspection: never opens a dependency (the policy has no way to), and its memory
    // is capped by the untrusted limits (16 MiB of metadata, 4 MiB of L2 cache) plus slack.
    await step('inspect-untrusted', async () => {
      const report = await inspectUntrusted(new FuzzStorage(c.bytes, 'fuzz.qcow2', true, limits), { format: 'qcow2', codecs: codecs! });
      if (report.safe !== (report.reasons.length === 0)) throw new HarnessViolation(`inconsistent untrusted report ${JSON.stringify(report)}`);
    }, UNTRUSTED_MEMORY_CAP);

    // Read-only: what info, map and convert do.
    const ro = await step('open-ro', () => openImage(new FuzzStorage(c.bytes, 'fuzz.qcow2', true, limits), openOpts(true)));
    if (ro !== undefined) {
      open.push(ro);
      await step('info', async () => {
        const info = await imageInfo(ro, 'fuzz.qcow2');
        formatInfoJson(info);
        formatInfoHuman(info);
      });
      const entries: MapEntry[] = [];
      await step('map', async () => {
        const guard = new ProbeGuard(ro);
        const json = rng.chance(0.5);
        const writer = json ? mapJsonWriter(() => {}, { start: 0 }) : mapHumanWriter(() => {});
        for await (const e of mapEntries(guard, {})) {
          writer.entry(e);
          if (entries.length < 64) entries.push(e);
        }
        writer.end();
      });
      await step('read', () => readSome(ro, entries, rng));
      const snaps = ro.driver instanceof Qcow2Driver ? ro.driver.meta.snapshots : [];
      if (snaps.length > 0 && rng.chance(0.5)) {
        const which = rng.pick(snaps);
        const snap = await step('open-snapshot', () => openImage(new FuzzStorage(c.bytes, 'fuzz.qcow2', true, limits), { ...openOpts(true), snapshot: rng.chance(0.5) ? which.id : which.name }));
        if (snap !== undefined) {
          open.push(snap);
          await step('read-snapshot', () => readSome(snap, [], rng));
        }
      }
    }
    await step('close-ro', () => closeAll(open));

    // Read-write: what io, resize, snapshot and commit do. The bytes it leaves are reopened.
    const rwStorage = new FuzzStorage(c.bytes.slice(), 'fuzz.qcow2', false, limits);
    const rw = await step('open-rw', () => openImage(rwStorage, openOpts(false)));
    if (rw !== undefined) {
      open.push(rw);
      await step('write', () => writeSome(rw, rng));
      await step('read-after-write', () => readSome(rw, [], rng));
      await step('close-rw', () => closeAll(open));
      const again = await step('reopen', () => openImage(new FuzzStorage(rwStorage.bytes().slice(), 'fuzz.qcow2', true, limits), openOpts(true)));
      if (again !== undefined) {
        open.push(again);
        await step('reread', () => readSome(again, [], rng));
        await step('close-reopen', () => closeAll(open));
      }
    }

    const checker = opts.checker;
    if (checker !== undefined) {
      // The exit code goes into the step outcome ("exit0".."exit3"): after `-r all` anything but
      // exit0 is worth a look (QEMU's repair leaves a clean image), though not a crash.
      const checkStep = async (name: string, storage: FuzzStorage, mode: 'none' | 'leaks' | 'all'): Promise<void> => {
        const r = await step(name, () => checker.check(storage, mode));
        const last = steps[steps.length - 1];
        if (r !== undefined && last !== undefined && last.step === name) last.outcome = `exit${r.exitCode}`;
      };
      await checkStep('check', new FuzzStorage(c.bytes.slice(), 'fuzz.qcow2', true, limits), 'none');
      const repaired = new FuzzStorage(c.bytes.slice(), 'fuzz.qcow2', false, limits);
      const mode = rng.chance(0.7) ? 'all' : 'leaks';
      await checkStep(`repair-${mode}`, repaired, mode);
      await checkStep(`check-after-repair-${mode}`, new FuzzStorage(repaired.bytes().slice(), 'fuzz.qcow2', true, limits), 'none');
      if (mode === 'all') {
        // A repaired image must open and read like any other.
        const fixed = await step('open-repaired', () => openImage(new FuzzStorage(repaired.bytes().slice(), 'fuzz.qcow2', true, limits), openOpts(true)));
        if (fixed !== undefined) {
          open.push(fixed);
          await step('read-repaired', () => readSome(fixed, [], rng));
          await step('close-repaired', () => closeAll(open));
        }
      }
    }
  } finally {
    if (open.length > 0) await step('close-leftover', () => closeAll(open));
    if (ticker !== undefined) clearInterval(ticker);
  }
  const result: CaseResult = { seed: c.seed, base: c.base.name, steps, peakBytes: peak, durationMs: Date.now() - started };
  if (finding !== undefined) result.finding = finding;
  return result;
}

async function closeAll(open: Image[]): Promise<void> {
  while (open.length > 0) {
    const image = open.pop()!;
    await image.close();
  }
}

/** Reads the start of the disk, the mapped runs, and a few random unaligned pieces. */
async function readSome(image: Image, entries: readonly MapEntry[], rng: Prng): Promise<void> {
  let budget = READ_BUDGET;
  const size = image.size;
  const chunk = new Uint8Array(256 << 10);
  const readAt = async (offset: number, length: number): Promise<void> => {
    const n = Math.min(length, size - offset, budget, chunk.byteLength);
    if (n <= 0) return;
    budget -= n;
    await image.read(chunk.subarray(0, n), offset);
  };
  for (let off = 0; off < Math.min(size, 2 << 20); off += chunk.byteLength) await readAt(off, chunk.byteLength);
  for (const e of entries) {
    if (budget <= 0) break;
    if (e.data || e.zero) await readAt(e.start, Math.min(e.length, 1 << 20));
  }
  for (let i = 0; i < 8 && size > 0; i++) {
    const off = rng.chance(0.5) ? rng.int(Math.min(size, 8 << 20)) : rng.int(size);
    await readAt(off, rng.range(1, 70_000));
  }
  if (size > 0) await readAt(Math.max(0, size - 4096), 4096);
}

/** A few writes of each kind, mostly near data the image already has. */
async function writeSome(image: Image, rng: Prng): Promise<void> {
  const size = image.size;
  if (size === 0) return;
  const cs = image.driver.clusterSize;
  const ops = rng.range(1, 6);
  const offset = (): number => (rng.chance(0.7) ? rng.int(Math.min(size, 4 << 20)) : rng.int(size));
  for (let i = 0; i < ops; i++) {
    const at = offset();
    const len = Math.max(1, Math.min(size - at, rng.pick([1, 512, 4096, cs, cs + 512, 3 * cs, 70_000])));
    switch (rng.int(8)) {
      case 0:
      case 1:
      case 2:
        await image.write(new Uint8Array(len).fill(0x40 + i), at);
        break;
      case 3:
        await image.writeZeroes(at, len, { unmap: rng.chance(0.5) });
        break;
      case 4:
        await image.discard(at, len, { full: rng.chance(0.3) });
        break;
      case 5: {
        const c = Math.floor(at / cs) * cs;
        const n = Math.min(cs, size - c);
        if (n > 0) await image.writeCompressed(new Uint8Array(n).fill(0x33), c);
        break;
      }
      case 6:
        if (rng.chance(0.3)) await image.resize(rng.chance(0.5) ? size + rng.pick([512, cs, 1 << 20]) : Math.max(0, size - rng.pick([512, cs])));
        break;
      default: {
        const d = image.driver;
        if (d instanceof Qcow2Driver && d.snapshots !== undefined) {
          const snaps = d.meta.snapshots;
          const op = rng.int(3);
          if (op === 0 || snaps.length === 0) await d.snapshots.create({ name: `fuzz${i}`, dateSec: 0, dateNsec: 0, vmClockNsec: 0 });
          else if (op === 1) await d.snapshots.apply(rng.pick(snaps).id);
          else await d.snapshots.delete(rng.pick(snaps).id);
        }
      }
    }
  }
  await image.flush();
}
