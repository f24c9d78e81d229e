/**
 * Worker thread of the fuzz harness. Runs cases in-process (src/fuzz/fuzz-exec.ts) for batches
 * of seeds handed out by the supervisor (run-fuzz.ts), which watches it from the outside: a
 * synchronous hang or a heap blow-up can only be caught by a thread that is not the one stuck.
 *
 * Messages to the supervisor: `start` before each case (so a hang is attributed to its seed),
 * `result` after it (with the minimised mutation list for reproducible findings), `idle` when a
 * batch is done. After a timeout the worker exits: the abandoned work must not leak into the
 * next case.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { jsCodecs } from '../codecs/codecs-js.js';
import { createNodeCodecs } from '../codecs/codecs-node.js';
import { loadCheckDriver } from './check-driver.js';
import { buildCase, caseFromMutations, runCase, type CaseResult, type ExecOptions, type FuzzSeed } from './fuzz-exec.js';
import { signatureOf } from './finding-signature.js';
import { minimizeMutations } from './minimize.js';
import type { Mutation } from './mutation.js';
import { makeSeed } from './mutator.js';
import { loadSeeds } from './seed-images-node.js';

/** Options the supervisor passes in `workerData`. */
export interface WorkerOptions {
  seedsDir: string;
  timeoutMs: number;
  memoryLimitBytes: number;
  /** Drive check/repair when the check module exists. */
  useChecker: boolean;
  /** Minimise reproducible findings before reporting them. */
  minimize: boolean;
}

export type ToWorker =
  | { type: 'batch'; seeds: number[] }
  | { type: 'replay'; seed: number; base: string; mutations: Mutation[] }
  | { type: 'stop' };

export type FromWorker =
  | { type: 'ready'; seeds: number; checker: boolean }
  | { type: 'start'; seed: number; at: number; base: string; mutations: Mutation[] }
  | { type: 'result'; result: CaseResult; mutations: Mutation[]; minimized?: Mutation[]; mutatedBase64?: string }
  | { type: 'idle' }
  | { type: 'fatal'; message: string };

function memoryNow(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('fuzz-worker-node must run as a worker thread');
  const opts = workerData as WorkerOptions;
  const files = await loadSeeds(opts.seedsDir);
  const seeds: FuzzSeed[] = files.map((f) => ({
    ...makeSeed(f.name, f.bytes),
    ...(f.backing !== undefined ? { backing: f.backing } : {}),
    ...(f.backingFormat !== undefined ? { backingFormat: f.backingFormat } : {}),
    ...(f.data !== undefined ? { data: f.data } : {}),
  }));
  const checker = opts.useChecker ? await loadCheckDriver() : undefined;
  const exec: ExecOptions = {
    timeoutMs: opts.timeoutMs,
    codecs: [jsCodecs, createNodeCodecs({ zstdThreads: 0 })],
    memoryLimitBytes: opts.memoryLimitBytes,
    sampleMemory: memoryNow,
    checker,
  };

  // Errors nobody awaited: always bugs (Node would crash the CLI on them).
  const late: unknown[] = [];
  process.on('unhandledRejection', (reason) => late.push(reason));
  process.on('uncaughtException', (err) => late.push(err));

  const minimizedSignatures = new Set<string>();
  const post = (m: FromWorker): void => port.postMessage(m);

  const runOne = async (seed: number, mutations?: Mutation[], baseName?: string): Promise<boolean> => {
    const c = mutations === undefined ? buildCase(seed, seeds) : caseFromMutations(seed, seeds.find((s) => s.name === baseName) ?? seeds[0]!, mutations);
    post({ type: 'start', seed, at: Date.now(), base: c.base.name, mutations: c.mutations });
    const result = await runCase(c, exec);
    // Let rejections of this case surface before it is declared clean.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 0));
    if (result.finding === undefined && late.length > 0) {
      const e = late.shift();
      const err = e instanceof Error ? e : new Error(String(e));
      result.finding = { kind: 'unhandled-rejection', step: 'after-case', name: err.name, message: err.message, stack: err.stack ?? '' };
    }
    late.length = 0;
    let minimized: Mutation[] | undefined;
    const f = result.finding;
    // Minimise the first finding of each kind of bug only: re-running costs up to 64 executions.
    if (f !== undefined && opts.minimize && (f.kind === 'crash' || f.kind === 'invariant') && !minimizedSignatures.has(signatureOf(f))) {
      minimizedSignatures.add(signatureOf(f));
      minimized = await minimizeMutations(c.mutations, async (ms) => {
        const r = await runCase(caseFromMutations(seed, c.base, ms), exec);
        return r.finding !== undefined && r.finding.kind === f.kind && r.finding.name === f.name && r.finding.step === f.step;
      });
    }
    post({
      type: 'result',
      result,
      mutations: c.mutations,
      ...(minimized !== undefined ? { minimized } : {}),
      ...(f !== undefined ? { mutatedBase64: Buffer.from(c.bytes).toString('base64') } : {}),
    });
    return f === undefined || f.kind !== 'timeout';
  };

  port.on('message', (m: ToWorker) => {
    void (async () => {
      try {
        if (m.type === 'stop') process.exit(0);
        if (m.type === 'replay') {
          await runOne(m.seed, m.mutations, m.base);
          post({ type: 'idle' });
          return;
        }
        for (const seed of m.seeds) {
          if (!(await runOne(seed))) process.exit(0);
        }
        post({ type: 'idle' });
      } catch (e) {
        post({ type: 'fatal', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
        process.exit(1);
      }
    })();
  });
  post({ type: 'ready', seeds: seeds.length, checker: checker !== undefined });
}

main().catch((e: unknown) => {
  parentPort?.postMessage({ type: 'fatal', message: e instanceof Error ? (e.stack ?? e.message) : String(e) } satisfies FromWorker);
  process.exit(1);
});
