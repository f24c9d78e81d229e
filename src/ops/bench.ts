/**
 * The request loop of `qemu-img bench`: `count` reads or writes of `bufferSize` bytes, at
 * most `depth` in flight, each at the previous offset plus `step` (wrapping inside the
 * image), with an optional flush every `flushInterval` requests. Browser-safe.
 *
 * It follows qemu-img 7.2's bench_cb() decision for decision, so both tools put the same
 * load on an image: the same offsets in the same order, the same queue depth, flushes at
 * the same points (drained or not), and the clock stopped when the last request completes
 * (a flush still pending then is awaited afterwards, untimed, as qemu-img's close does).
 */
import { Qcow2Error } from '../errors.js';

/** What the loop drives; an Image satisfies it. */
export interface BenchTarget {
  readonly size: number;
  read(dst: Uint8Array, offset: number): Promise<void>;
  write(src: Uint8Array, offset: number): Promise<void>;
  flush(): Promise<void>;
}

/** Parameters of one run, with qemu-img bench's names in the comments. */
export interface BenchParams {
  /** -c: number of requests. */
  count: number;
  /** -d: requests in flight at most (> 0 unless count is 0). */
  depth: number;
  /** -s: bytes per request. */
  bufferSize: number;
  /** -S: distance between request offsets; 0 means bufferSize. */
  step: number;
  /** -o: offset of the first request. */
  offset: number;
  /** -w: write instead of read. */
  write: boolean;
  /** --pattern: the byte written (and the initial buffer content for reads). */
  pattern: number;
  /** --flush-interval: flush after every N requests (0: never). */
  flushInterval: number;
  /** --no-drain is the negation: wait for in-flight requests before each flush. */
  drainOnFlush: boolean;
  /** Cache mode writethrough/directsync: each write is flushed before it counts as done. */
  writethrough?: boolean;
  /** Cache mode unsafe: flushes do nothing. */
  noFlush?: boolean;
}

/** Thrown when a request fails; `op` tells which kind. */
export class BenchRequestError extends Error {
  readonly op: 'request' | 'flush';

  constructor(op: 'request' | 'flush', cause: unknown) {
    super(`${op} failed`, { cause });
    this.name = 'BenchRequestError';
    this.op = op;
  }
}

/** Result of {@link runBench}. */
export interface BenchResult {
  /** Wall-clock time from the first submission to the last completion, in milliseconds. */
  elapsedMs: number;
  /** Requests completed (always `count` on success). */
  completed: number;
  /** Flushes issued. */
  flushes: number;
}

/**
 * Run the bench loop against `target`.
 *
 * @example
 * ```ts
 * const r = await runBench(image, { count: 1000, depth: 8, bufferSize: 65536, step: 0,
 *   offset: 0, write: true, pattern: 0, flushInterval: 0, drainOnFlush: true });
 * console.log(`Run completed in ${(r.elapsedMs / 1000).toFixed(3)} seconds.`);
 * ```
 */
export async function runBench(target: BenchTarget, p: BenchParams, now: () => number = defaultNow): Promise<BenchResult> {
  checkParams(p);
  const step = p.step === 0 ? p.bufferSize : p.step;
  // One buffer for every request, as qemu-img does: writes only read it, and concurrent
  // reads into it only race on content nobody looks at.
  const buf = new Uint8Array(p.bufferSize).fill(p.pattern);
  const flushTarget = (): Promise<void> => (p.noFlush === true ? Promise.resolve() : target.flush());
  const doWrite = p.writethrough === true
    ? async (off: number): Promise<void> => {
        await target.write(buf, off);
        await flushTarget();
      }
    : (off: number): Promise<void> => target.write(buf, off);
  const issueIo = p.write ? doWrite : (off: number): Promise<void> => target.read(buf, off);

  let n = p.count;
  let inFlight = 0;
  let offset = p.offset;
  let flushes = 0;
  const start = now();
  let elapsedMs = 0;
  const pending: Promise<void>[] = [];

  await new Promise<void>((resolve, reject) => {
    let failed = false;
    const fail = (op: 'request' | 'flush') => (e: unknown): void => {
      if (failed) return;
      failed = true;
      reject(new BenchRequestError(op, e));
    };

    const finishIfDone = (): void => {
      if (n === 0 && !failed) {
        elapsedMs = now() - start;
        resolve();
      }
    };

    const submit = (): void => {
      while (n > inFlight && inFlight < p.depth) {
        const off = offset;
        inFlight++;
        // qemu-img 7.2 wraps at the image size, so a wrapped request can cross the end and
        // fail with EIO (fixed in QEMU 10.1, which wraps at size - bufferSize). Size 0 would
        // divide by zero there; it gets offset 0, as the later fix does.
        offset = target.size === 0 ? 0 : (offset + step) % target.size;
        // Start every request synchronously, then react to completions one at a time.
        let io: Promise<void>;
        try {
          io = issueIo(off);
        } catch (e) {
          io = Promise.reject(e);
        }
        io.then(completed, fail('request'));
      }
    };

    const issueFlush = (drained: boolean): void => {
      flushes++;
      const f = flushTarget();
      if (drained) {
        f.then(() => {
          if (failed) return;
          // A drained flush done: carry on submitting (qemu-img's in_flush branch).
          submit();
        }, fail('request'));
      } else {
        f.catch(fail('flush'));
      }
      if (n === 0) pending.push(f.catch(() => undefined));
    };

    const completed = (): void => {
      if (failed) return;
      const remaining = n - inFlight;
      n--;
      inFlight--;
      if (p.flushInterval > 0 && remaining % p.flushInterval === 0) {
        if (inFlight === 0 || !p.drainOnFlush) issueFlush(p.drainOnFlush);
        if (p.drainOnFlush) {
          finishIfDone();
          return;
        }
      }
      submit();
      finishIfDone();
    };

    submit();
    finishIfDone();
  });
  // A flush issued by the last completion runs on, untimed, like qemu-img's final drain.
  await Promise.all(pending);
  return { elapsedMs, completed: p.count, flushes };
}

function checkParams(p: BenchParams): void {
  const ints: Array<[string, number]> = [
    ['count', p.count],
    ['depth', p.depth],
    ['bufferSize', p.bufferSize],
    ['step', p.step],
    ['offset', p.offset],
    ['flushInterval', p.flushInterval],
  ];
  for (const [name, v] of ints) {
    if (!Number.isSafeInteger(v) || v < 0) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid bench ${name}: ${v}`, { [name]: v });
  }
  if (p.depth === 0 && p.count > 0) throw new Qcow2Error('INVALID_ARGUMENT', 'Queue depth must be at least 1', { depth: p.depth });
  if (!Number.isInteger(p.pattern) || p.pattern < 0 || p.pattern > 0xff) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid pattern byte: ${p.pattern}`, { pattern: p.pattern });
  }
}

const defaultNow = (): number => performance.now();
