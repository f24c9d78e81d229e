/**
 * zstd cluster codecs for Node with real parallelism: a small pool of worker threads,
 * each running the WebAssembly codec. Buffers travel as transferred copies, so callers'
 * buffers are never detached. If workers cannot start or die, work falls back to the
 * calling thread. Idle workers are unref'd: they never keep the process alive.
 */
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor, CompressionType } from './codec.js';
import { deflateSyncNode, inflateSyncNode } from './deflate-node.js';
import type { ZstdWorkerReply, ZstdWorkerRequest } from './zstd-node-protocol.js';
import { initZstdWasm, zstdCompressSync, zstdDecompressSync } from './zstd-wasm.js';

/** Options of {@link ZstdWorkerPool}. */
export interface ZstdWorkerPoolOptions {
  /** Worker threads; 0 decodes in the calling thread. Default min(4, availableParallelism()). */
  readonly threads?: number;
  /** Where the worker script is (default: zstd-node-worker.js next to this module). */
  readonly workerUrl?: URL;
}

interface Task {
  readonly request: ZstdWorkerRequest;
  readonly dst: Uint8Array | undefined;
  readonly resolve: (out: Uint8Array | undefined) => void;
  readonly reject: (err: unknown) => void;
}

interface PoolWorker {
  readonly worker: Worker;
  readonly tasks: Map<number, Task>;
}

/** Default pool size: at most 4 threads, fewer on small machines. */
export function defaultZstdThreads(): number {
  // Loaded here, not at start-up: node:os costs ~0.4 ms, and most runs never start a pool.
  const os = createRequire(import.meta.url)('node:os') as typeof import('node:os');
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

/** Run one request in the calling thread. */
async function runInThread(request: ZstdWorkerRequest, dst: Uint8Array | undefined): Promise<Uint8Array | undefined> {
  if (request.codec === 'zlib') {
    if (request.op === 'decompress') {
      inflateSyncNode(request.src, dst ?? new Uint8Array(request.dstLength));
      return undefined;
    }
    return deflateSyncNode(request.src);
  }
  await initZstdWasm();
  if (request.op === 'decompress') {
    zstdDecompressSync(request.src, dst ?? new Uint8Array(request.dstLength));
    return undefined;
  }
  return zstdCompressSync(request.src);
}

/**
 * A pool of zstd worker threads. Create one per process (or use `nodeCodecs`), and
 * `close()` it when done; idle workers do not hold the process open anyway.
 *
 * @example
 * ```ts
 * const pool = new ZstdWorkerPool({ threads: 2 });
 * await pool.decompressor.decompress(storedBytes, new Uint8Array(65536));
 * await pool.close();
 * ```
 */
export class ZstdWorkerPool {
  /** Undefined: the default, worked out on first use (see defaultZstdThreads). */
  #threads: number | undefined;
  /** Decompressor that runs on the pool. */
  readonly decompressor: ClusterDecompressor;
  /** Compressor that runs on the pool. */
  readonly compressor: ClusterCompressor;
  readonly #workerUrl: URL;
  #workers: PoolWorker[] = [];
  #nextId = 1;
  /** Set when a worker failed: from then on work runs in the calling thread. */
  #broken = false;

  constructor(options: ZstdWorkerPoolOptions = {}) {
    const threads = options.threads;
    if (threads !== undefined && (!Number.isInteger(threads) || threads < 0 || threads > 64)) {
      throw new Qcow2Error('INVALID_ARGUMENT', `zstd pool: invalid thread count ${threads}`);
    }
    this.#threads = threads;
    // Via ../codecs/ so that it resolves both from dist/codecs/ and from the CLI bundle in dist/cli/.
    this.#workerUrl = options.workerUrl ?? new URL('../codecs/zstd-node-worker.js', import.meta.url);
    this.decompressor = this.decompressorFor('zstd');
    this.compressor = this.compressorFor('zstd');
  }

  /** A decompressor for `codec` that runs on the pool's threads. */
  decompressorFor(codec: CompressionType): ClusterDecompressor {
    return {
      decompress: async (src, dst) => {
        await this.#run({ id: 0, codec, op: 'decompress', src, dstLength: dst.byteLength }, dst);
      },
    };
  }

  /** A compressor for `codec` that runs on the pool's threads. */
  compressorFor(codec: CompressionType): ClusterCompressor {
    return { compress: (src) => this.#run({ id: 0, codec, op: 'compress', src }, undefined) };
  }

  /** Most worker threads the pool runs. */
  get threads(): number {
    this.#threads ??= defaultZstdThreads();
    return this.#threads;
  }

  /** Number of running worker threads (started lazily on first use). */
  get running(): number {
    return this.#workers.length;
  }

  /**
   * Terminate the workers. Requests still in flight finish in the calling thread. The
   * pool stays usable: later calls start new workers.
   */
  async close(): Promise<void> {
    const workers = this.#workers;
    this.#workers = [];
    await Promise.all(workers.map((w) => w.worker.terminate()));
    for (const w of workers) this.#finishHere(w);
  }

  #run(request: ZstdWorkerRequest, dst: Uint8Array | undefined): Promise<Uint8Array | undefined> {
    const w = this.threads > 0 && !this.#broken ? this.#pick() : undefined;
    if (!w) return runInThread(request, dst);
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      // Copy: transferring the caller's buffer would detach it (it may be a view of a larger one).
      const src = request.src.slice();
      const msg: ZstdWorkerRequest = request.op === 'decompress'
        ? { id, codec: request.codec, op: 'decompress', src, dstLength: request.dstLength }
        : { id, codec: request.codec, op: 'compress', src };
      if (w.tasks.size === 0) w.worker.ref();
      w.tasks.set(id, { request, dst, resolve, reject });
      w.worker.postMessage(msg, [src.buffer]);
    });
  }

  /** The least busy worker; a new one only when all are busy and the pool may grow. */
  #pick(): PoolWorker | undefined {
    let best: PoolWorker | undefined;
    for (const w of this.#workers) if (!best || w.tasks.size < best.tasks.size) best = w;
    if ((!best || best.tasks.size > 0) && this.#workers.length < this.threads) return this.#start() ?? best;
    return best;
  }

  #start(): PoolWorker | undefined {
    let worker: Worker;
    try {
      // Loaded on the first worker: most runs never start one, and loading it costs ~1.5 ms.
      const { Worker: WorkerThread } = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
      worker = new WorkerThread(this.#workerUrl);
    } catch {
      this.#broken = true;
      return undefined;
    }
    worker.unref();
    const pw: PoolWorker = { worker, tasks: new Map() };
    worker.on('message', (reply: ZstdWorkerReply) => this.#onReply(pw, reply));
    worker.on('error', () => this.#onDeath(pw));
    worker.on('exit', () => this.#onDeath(pw));
    this.#workers.push(pw);
    return pw;
  }

  #onReply(pw: PoolWorker, reply: ZstdWorkerReply): void {
    const task = pw.tasks.get(reply.id);
    if (!task) return;
    pw.tasks.delete(reply.id);
    if (pw.tasks.size === 0) pw.worker.unref();
    if (!reply.ok) {
      // Unexpected decoder failures are still bad input; unexpected encoder failures are bugs.
      task.reject(reply.code ? new Qcow2Error(reply.code, reply.message, reply.context)
        : task.dst ? new Qcow2Error('DECOMPRESS', `zstd worker: ${reply.message}`, reply.context)
          : new Error(`zstd worker: ${reply.message}`));
      return;
    }
    if (task.dst && reply.out) {
      if (reply.out.byteLength !== task.dst.byteLength) {
        task.reject(new Qcow2Error('DECOMPRESS', 'zstd worker returned a wrong-sized cluster'));
        return;
      }
      task.dst.set(reply.out);
      task.resolve(undefined);
    } else {
      task.resolve(reply.out);
    }
  }

  /** A worker failed to start or died: finish its work here and stop using workers. */
  #onDeath(pw: PoolWorker): void {
    const index = this.#workers.indexOf(pw);
    if (index < 0) return; // closed on purpose, or already handled
    this.#workers.splice(index, 1);
    this.#broken = true;
    void pw.worker.terminate();
    this.#finishHere(pw);
  }

  #finishHere(pw: PoolWorker): void {
    const tasks = [...pw.tasks.values()];
    pw.tasks.clear();
    for (const t of tasks) runInThread(t.request, t.dst).then(t.resolve, t.reject);
  }
}

/**
 * zstd cluster decompressor in the calling thread (WebAssembly). Use when threads do
 * not pay off (small clusters, few cores) or are not allowed.
 *
 * @example
 * ```ts
 * await zstdInThreadDecompressor.decompress(storedBytes, new Uint8Array(65536));
 * ```
 */
export const zstdInThreadDecompressor: ClusterDecompressor = {
  async decompress(src, dst) {
    await runInThread({ id: 0, codec: 'zstd', op: 'decompress', src, dstLength: dst.byteLength }, dst);
  },
};

/**
 * zstd cluster compressor in the calling thread (WebAssembly).
 *
 * @example
 * ```ts
 * const stored = await zstdInThreadCompressor.compress(cluster);
 * ```
 */
export const zstdInThreadCompressor: ClusterCompressor = {
  compress: (src) => runInThread({ id: 0, codec: 'zstd', op: 'compress', src }, undefined),
};
