/**
 * The fuzz harness (Node): mutates qemu-made seed images and runs open/info/map/read/write/
 * reopen/check/repair on each in worker threads, watching them from here so that a synchronous
 * hang or a heap blow-up is caught too. Every outcome must be success or a Qcow2Error;
 * anything else is a finding, saved with its seed, mutation list (minimised when it
 * reproduces), the mutated image and the stack.
 *
 * Usage:
 *   node dist/fuzz/run-fuzz.js [--seconds N] [--execs N] [--seed S] [--workers K]
 *        [--seeds DIR] [--corpus DIR] [--timeout MS] [--slow-ms MS] [--memory-mb N]
 *        [--no-minimize] [--no-check] [--progress-ms MS]
 *   node dist/fuzz/run-fuzz.js --replay FINDING.json [--seeds DIR]
 * The budget defaults to QCOW2KIT_FUZZ_SECONDS (else 60 s). Prints a JSON summary on stdout;
 * exit code 0 without findings, 1 with findings, 2 when the harness itself failed.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { CaseResult, Finding } from './fuzz-exec.js';
import { signatureOf } from './finding-signature.js';
import type { FromWorker, ToWorker, WorkerOptions } from './fuzz-worker-node.js';
import type { Mutation } from './mutation.js';
import { loadOrCreateSeeds } from './seed-images-node.js';

/** Harness settings. */
export interface FuzzRunOptions {
  /** Stop after this many seconds. */
  seconds: number;
  /** Stop after this many executions (whichever comes first). */
  execs: number;
  /** First case seed; cases use seed, seed+1, ... */
  seed: number;
  workers: number;
  seedsDir: string;
  corpusDir: string;
  timeoutMs: number;
  memoryLimitBytes: number;
  minimize: boolean;
  useChecker: boolean;
  /** Progress lines (stderr) every this many ms; 0 for none. */
  progressMs: number;
  /** Cases slower than this are listed in the summary. */
  slowMs: number;
}

/** One distinct finding (same kind, error and top frame), with its first examples. */
export interface FindingGroup {
  signature: string;
  kind: string;
  step: string;
  name: string;
  message: string;
  count: number;
  seeds: number[];
  stack: string;
  base: string;
  mutations: Mutation[];
  minimized?: Mutation[];
  file: string;
}

export interface FuzzSummary {
  executions: number;
  seconds: number;
  execsPerSecond: number;
  firstSeed: number;
  lastSeed: number;
  workers: number;
  checker: boolean;
  findings: number;
  groups: FindingGroup[];
  /** Outcome counts per step: { "open-ro": { ok: 10, INVALID_IMAGE: 3 } }. */
  outcomes: Record<string, Record<string, number>>;
  /** Executions per seed image. */
  bases: Record<string, number>;
  /** Executions whose image opened read-only. */
  opened: number;
  slowest: { seed: number; ms: number };
  /** Cases slower than `slowMs` (not findings: the machine may just be busy), slowest first. */
  slow: { seed: number; base: string; ms: number; step: string; stepMs: number; mutations: string[] }[];
  /** Wall milliseconds spent per step, summed over all executions. */
  stepMs: Record<string, number>;
  /** CPU seconds of the whole harness (supervisor and workers). */
  cpuSeconds: number;
  peakMemory: { seed: number; bytes: number };
  workerRestarts: number;
}

// Small batches: the time budget is checked between batches, and a batch of slow cases overshoots it.
const BATCH = 10;
const WORKER_HEAP_MB = 1024;

function hashOf(s: string): string {
  return createHash('sha1').update(s).digest('hex').slice(0, 10);
}

/**
 * Run the fuzzer with the given options and return the summary.
 *
 * @example
 * ```ts
 * const summary = await runFuzz({ ...defaultOptions(), seconds: 30 });
 * if (summary.findings > 0) process.exitCode = 1;
 * ```
 */
export async function runFuzz(o: FuzzRunOptions): Promise<FuzzSummary> {
  // Making the seeds (qemu-img, once per seed directory) is setup: the budget starts after it.
  await loadOrCreateSeeds(o.seedsDir);
  await mkdir(join(o.corpusDir, 'findings'), { recursive: true });
  const started = Date.now();
  const cpuStart = process.cpuUsage();
  const stopAt = started + o.seconds * 1000;
  let nextSeed = o.seed;
  let lastSeed = o.seed - 1;
  const summary: FuzzSummary = {
    executions: 0, seconds: 0, execsPerSecond: 0, firstSeed: o.seed, lastSeed: o.seed, workers: o.workers, checker: false,
    findings: 0, groups: [], outcomes: {}, bases: {}, opened: 0, slowest: { seed: -1, ms: 0 }, slow: [], stepMs: {}, cpuSeconds: 0, peakMemory: { seed: -1, bytes: 0 }, workerRestarts: 0,
  };
  const groups = new Map<string, FindingGroup>();
  const pendingWrites: Promise<void>[] = [];

  // SIGINT/SIGTERM: hand out no more cases, let the running ones finish, write the summary.
  let stopRequested = false;
  const onSignal = (): void => {
    stopRequested = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const budgetLeft = (): boolean => !stopRequested && Date.now() < stopAt && nextSeed - o.seed < o.execs;
  const takeBatch = (): number[] => {
    const out: number[] = [];
    while (out.length < BATCH && budgetLeft() && nextSeed - o.seed < o.execs) out.push(nextSeed++);
    return out;
  };

  const record = (r: CaseResult, mutations: Mutation[], minimized: Mutation[] | undefined, mutated: string | undefined): void => {
    summary.executions++;
    lastSeed = Math.max(lastSeed, r.seed);
    summary.bases[r.base] = (summary.bases[r.base] ?? 0) + 1;
    let worst = { step: '', ms: -1 };
    for (const s of r.steps) {
      summary.stepMs[s.step] = (summary.stepMs[s.step] ?? 0) + s.ms;
      if (s.ms > worst.ms) worst = { step: s.step, ms: s.ms };
      const per = (summary.outcomes[s.step] ??= {});
      per[s.outcome] = (per[s.outcome] ?? 0) + 1;
      if (s.step === 'open-ro' && s.outcome === 'ok') summary.opened++;
    }
    if (r.durationMs > summary.slowest.ms) summary.slowest = { seed: r.seed, ms: r.durationMs };
    if (r.durationMs > o.slowMs) {
      summary.slow.push({ seed: r.seed, base: r.base, ms: r.durationMs, step: worst.step, stepMs: worst.ms, mutations: mutations.map((m) => m.what) });
      summary.slow.sort((a, b) => b.ms - a.ms);
      if (summary.slow.length > 30) summary.slow.length = 30;
    }
    if (r.peakBytes > summary.peakMemory.bytes) summary.peakMemory = { seed: r.seed, bytes: r.peakBytes };
    if (r.finding !== undefined) addFinding(r.finding, r.seed, r.base, mutations, minimized, mutated);
  };

  const addFinding = (f: Finding, seed: number, base: string, mutations: Mutation[], minimized: Mutation[] | undefined, mutated: string | undefined): void => {
    summary.findings++;
    const sig = signatureOf(f);
    let g = groups.get(sig);
    const dir = join(o.corpusDir, 'findings', `${f.kind}-${hashOf(sig)}`);
    if (g === undefined) {
      g = {
        signature: sig, kind: f.kind, step: f.step, name: f.name, message: f.message, count: 0, seeds: [], stack: f.stack, base, mutations,
        ...(minimized !== undefined ? { minimized } : {}), file: join(dir, `seed-${seed}.json`),
      };
      groups.set(sig, g);
    }
    g.count++;
    if (g.minimized === undefined && minimized !== undefined) g.minimized = minimized;
    if (g.seeds.length < 10) {
      g.seeds.push(seed);
      const doc = { seed, base, finding: f, mutations, ...(minimized !== undefined ? { minimized } : {}) };
      pendingWrites.push((async () => {
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, `seed-${seed}.json`), JSON.stringify(doc, null, 2) + '\n');
        if (mutated !== undefined) await writeFile(join(dir, `seed-${seed}.qcow2`), Buffer.from(mutated, 'base64'));
      })().catch((e: unknown) => {
        // A full disk must not end the run: the summary still names the seed.
        process.stderr.write(`fuzz: could not save finding for seed ${seed}: ${e instanceof Error ? e.message : String(e)}\n`);
      }));
    }
  };

  const workerUrl = new URL('./fuzz-worker-node.js', import.meta.url);
  const wopts: WorkerOptions = { seedsDir: o.seedsDir, timeoutMs: o.timeoutMs, memoryLimitBytes: o.memoryLimitBytes, useChecker: o.useChecker, minimize: o.minimize };

  /** One supervised worker slot: restarts its worker after a hang, a crash or an exit. */
  const slot = (): Promise<void> =>
    new Promise<void>((resolveSlot) => {
      let queue: number[] = [];
      let running: { seed: number; at: number; base: string; mutations: Mutation[] } | undefined;
      let finished = false;
      let worker: Worker;
      let watchdog: ReturnType<typeof setInterval>;

      const finish = (): void => {
        if (finished) return;
        finished = true;
        clearInterval(watchdog);
        worker.postMessage({ type: 'stop' } satisfies ToWorker);
        setTimeout(() => void worker.terminate(), 1000).unref();
        resolveSlot();
      };

      const feed = (): void => {
        // Seeds left over from a batch whose worker was restarted count against the budget too.
        if (!budgetLeft()) queue = [];
        if (queue.length === 0) queue = takeBatch();
        if (queue.length === 0) return finish();
        const batch = queue;
        queue = [];
        inFlight = batch;
        worker.postMessage({ type: 'batch', seeds: batch } satisfies ToWorker);
      };
      let inFlight: number[] = [];

      const lost = (kind: Finding['kind'], name: string, message: string): void => {
        // The worker died or was stopped while running `running`: that case is the finding.
        if (running !== undefined) {
          const seed = running.seed;
          summary.executions++;
          addFinding({ kind, step: 'unknown', name, message, stack: '' }, seed, running.base, running.mutations, undefined, undefined);
          queue = inFlight.filter((s) => s > seed);
        } else {
          queue = inFlight;
        }
        running = undefined;
        summary.workerRestarts++;
        start();
      };

      const start = (): void => {
        worker = new Worker(workerUrl, { workerData: wopts, resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB }, stdout: false, stderr: false });
        let exited = false;
        worker.on('message', (m: FromWorker) => {
          switch (m.type) {
            case 'ready':
              summary.checker = m.checker;
              feed();
              break;
            case 'start':
              running = { seed: m.seed, at: Date.now(), base: m.base, mutations: m.mutations };
              break;
            case 'result':
              running = undefined;
              inFlight = inFlight.filter((s) => s !== m.result.seed);
              record(m.result, m.mutations, m.minimized, m.mutatedBase64);
              break;
            case 'idle':
              feed();
              break;
            case 'fatal':
              process.stderr.write(`fuzz worker failed: ${m.message}\n`);
              break;
          }
        });
        worker.on('error', (e: Error & { code?: string }) => {
          if (exited || finished) return;
          exited = true;
          clearInterval(watchdog);
          const oom = e.code === 'ERR_WORKER_OUT_OF_MEMORY';
          lost(oom ? 'memory' : 'worker-exit', e.name, oom ? `worker ran out of its ${WORKER_HEAP_MB} MiB heap: ${e.message}` : e.stack ?? e.message);
        });
        worker.on('exit', () => {
          if (exited || finished) return;
          exited = true;
          clearInterval(watchdog);
          // A worker exits on its own after reporting a timeout; otherwise it crashed.
          if (running !== undefined) lost('worker-exit', 'WorkerExit', 'worker exited while running the case');
          else {
            summary.workerRestarts++;
            if (inFlight.length > 0) queue = inFlight;
            start();
          }
        });
        watchdog = setInterval(() => {
          if (running !== undefined && Date.now() - running.at > o.timeoutMs * 3 + 5000) {
            exited = true;
            clearInterval(watchdog);
            void worker.terminate();
            lost('timeout', 'Hang', `case did not finish within ${o.timeoutMs * 3 + 5000} ms (synchronous hang; worker terminated)`);
          }
        }, 500);
      };
      start();
    });

  const progress = o.progressMs > 0
    ? setInterval(() => {
      const s = (Date.now() - started) / 1000;
      process.stderr.write(`fuzz: ${summary.executions} execs in ${s.toFixed(0)} s (${(summary.executions / s).toFixed(1)}/s), ${summary.findings} findings in ${groups.size} groups\n`);
      // A partial summary, so that a run that is killed still leaves its numbers behind.
      const partial = { ...summary, seconds: s, lastSeed, groups: [...groups.values()].map((g) => ({ signature: g.signature, count: g.count, seeds: g.seeds })) };
      writeFile(join(o.corpusDir, 'summary-partial.json'), JSON.stringify(partial, null, 2) + '\n').catch(() => {});
    }, o.progressMs)
    : undefined;
  await Promise.all(Array.from({ length: o.workers }, () => slot()));
  if (progress !== undefined) clearInterval(progress);
  await Promise.all(pendingWrites);

  summary.seconds = (Date.now() - started) / 1000;
  summary.execsPerSecond = Math.round((summary.executions / summary.seconds) * 10) / 10;
  summary.lastSeed = lastSeed;
  const cpu = process.cpuUsage(cpuStart);
  summary.cpuSeconds = Math.round((cpu.user + cpu.system) / 1e4) / 100;
  summary.groups = [...groups.values()];
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  await writeFile(join(o.corpusDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n').catch((e: unknown) => {
    process.stderr.write(`fuzz: could not write summary.json: ${e instanceof Error ? e.message : String(e)}\n`);
  });
  return summary;
}

/** Replay one saved finding in a worker and return its new result. */
export async function replayFinding(file: string, seedsDir: string, timeoutMs: number): Promise<CaseResult> {
  const doc = JSON.parse(await readFile(file, 'utf8')) as { seed: number; base: string; mutations: Mutation[]; minimized?: Mutation[] };
  const wopts: WorkerOptions = { seedsDir, timeoutMs, memoryLimitBytes: 1 << 30, useChecker: true, minimize: false };
  const worker = new Worker(new URL('./fuzz-worker-node.js', import.meta.url), { workerData: wopts });
  try {
    return await new Promise<CaseResult>((resolve, reject) => {
      // A synchronous hang never answers: give up as the supervisor's watchdog would.
      const limit = timeoutMs * 3 + 5000;
      const watchdog = setTimeout(() => reject(new Error(`replay did not finish within ${limit} ms: the case hangs`)), limit);
      watchdog.unref();
      worker.on('message', (m: FromWorker) => {
        if (m.type === 'ready') worker.postMessage({ type: 'replay', seed: doc.seed, base: doc.base, mutations: doc.minimized ?? doc.mutations } satisfies ToWorker);
        if (m.type === 'result') resolve(m.result);
        if (m.type === 'fatal') reject(new Error(m.message));
      });
      worker.on('error', reject);
    });
  } finally {
    await worker.terminate();
  }
}

const USAGE = `usage: node dist/fuzz/run-fuzz.js [--seconds N] [--execs N] [--seed S] [--workers K]
         [--seeds DIR] [--corpus DIR] [--timeout MS] [--slow-ms MS] [--memory-mb N]
         [--no-minimize] [--no-check] [--progress-ms MS]
       node dist/fuzz/run-fuzz.js --replay FINDING.json [--seeds DIR]
The budget defaults to QCOW2KIT_FUZZ_SECONDS (else 60 s). Exit 0 without findings, 1 with, 2 on errors.
`;

/** A command-line mistake: the usage is printed instead of a stack trace. */
class UsageError extends Error {}

function parseCli(argv: readonly string[]): { options: FuzzRunOptions; replay?: string } {
  const env = process.env['QCOW2KIT_FUZZ_SECONDS'];
  const o: FuzzRunOptions = {
    seconds: env !== undefined && env !== '' ? Number(env) : 60,
    execs: Number.MAX_SAFE_INTEGER,
    seed: 1,
    workers: 1,
    seedsDir: join(tmpdir(), 'qcow2kit-fuzz-seeds'),
    corpusDir: join(tmpdir(), 'qcow2kit-fuzz-corpus'),
    timeoutMs: 30_000,
    memoryLimitBytes: 512 << 20,
    minimize: true,
    useChecker: true,
    progressMs: 10_000,
    slowMs: 2000,
  };
  let replay: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    const int = (): number => {
      const v = Number(val());
      if (!Number.isSafeInteger(v) || v < 0) throw new UsageError(`${a} needs a non-negative integer`);
      return v;
    };
    switch (a) {
      case '--seconds': o.seconds = int(); break;
      case '--execs': o.execs = int(); break;
      case '--seed': o.seed = int(); break;
      case '--workers': o.workers = Math.max(1, int()); break;
      case '--seeds': o.seedsDir = val(); break;
      case '--corpus': o.corpusDir = val(); break;
      case '--timeout': o.timeoutMs = int(); break;
      case '--memory-mb': o.memoryLimitBytes = int() * 1024 * 1024; break;
      case '--no-minimize': o.minimize = false; break;
      case '--no-check': o.useChecker = false; break;
      case '--progress-ms': o.progressMs = int(); break;
      case '--slow-ms': o.slowMs = int(); break;
      case '--replay': replay = val(); break;
      case '--help': throw new UsageError('');
      default: throw new UsageError(`unknown option ${a}`);
    }
  }
  if (!Number.isFinite(o.seconds) || o.seconds < 0) throw new UsageError('QCOW2KIT_FUZZ_SECONDS must be a number of seconds');
  return replay === undefined ? { options: o } : { options: o, replay };
}

/** Write to stdout and wait until it is handed over (a pipe would lose the tail on exit). */
function writeOut(text: string): Promise<void> {
  return new Promise((resolve) => process.stdout.write(text, () => resolve()));
}

async function cli(): Promise<number> {
  const { options, replay } = parseCli(process.argv.slice(2));
  if (replay !== undefined) {
    const r = await replayFinding(replay, options.seedsDir, options.timeoutMs);
    await writeOut(JSON.stringify(r, null, 2) + '\n');
    return r.finding === undefined ? 0 : 1;
  }
  const summary = await runFuzz(options);
  await writeOut(JSON.stringify(summary, null, 2) + '\n');
  return summary.findings === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  cli().then(
    (code) => process.exit(code),
    (e: unknown) => {
      if (e instanceof UsageError) {
        if (e.message === '') process.stdout.write(USAGE, () => process.exit(0));
        else process.stderr.write(`run-fuzz: ${e.message}\n${USAGE}`, () => process.exit(2));
        return;
      }
      process.stderr.write(`run-fuzz: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(2);
    },
  );
}
