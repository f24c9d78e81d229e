/**
 * The Node codec set: node:zlib for zlib (libuv thread pool); zstd through the native
 * zstd-napi addon in the calling thread when it is installed, else WebAssembly (decoding in the
 * calling thread, encoding on a worker-thread pool).
 */
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor, CodecSet, CompressionType } from './codec.js';
import { ZstdWorkerPool, zstdInThreadDecompressor } from './zstd-node.js';
import { deflateNodeCompressor, inflateSyncNode } from './deflate-node.js';
import { nativeZstdCompressor, nativeZstdDecompressor } from './zstd-native.js';

/** A codec set that owns worker threads; `close()` stops them (idle ones never block exit). */
export interface NodeCodecSet extends CodecSet {
  close(): Promise<void>;
}

/** Options of {@link createNodeCodecs}. */
export interface NodeCodecOptions {
  /**
   * Worker threads that compress zstd with WebAssembly when the native addon is not there;
   * 0 compresses in the calling thread. Default min(4, os.availableParallelism()).
   */
  readonly zstdThreads?: number;
  /**
   * Use the native zstd-napi addon for zstd when it is installed (default true); false always
   * uses WebAssembly.
   */
  readonly zstdNative?: boolean;
}

function unknownType(type: unknown): Qcow2Error {
  return new Qcow2Error('UNSUPPORTED', `unknown compression type: ${String(type)}`, { compressionType: type });
}

/**
 * Make a Node codec set with its own zstd worker pool (started on first zstd use).
 *
 * @example
 * ```ts
 * const codecs = createNodeCodecs({ zstdThreads: 2 });
 * const image = await openImage(storage, { codecs });
 * // ...
 * await codecs.close();
 * ```
 */
export function createNodeCodecs(options: NodeCodecOptions = {}): NodeCodecSet {
  // Without zstdThreads the pool works out its default size on first use (node:os, loaded then).
  const pool = new ZstdWorkerPool(options.zstdThreads === undefined ? {} : { threads: options.zstdThreads });
  // Decoding stays on the calling thread: measured here, worker threads cost ~40 MiB of memory
  // each and did not read faster on 2 cores. zlib compression runs on libuv's thread pool,
  // which uses every core without a JavaScript isolate per thread; WebAssembly zstd needs the
  // workers for that.
  const zlibDecompressor: ClusterDecompressor = { decompress: async (src, dst) => inflateSyncNode(src, dst) };
  const native = options.zstdNative !== false;
  const zstdDecompressor = native ? nativeZstdDecompressor(zstdInThreadDecompressor) : zstdInThreadDecompressor;
  // The native encoder in the calling thread beats the WebAssembly workers on memory (measured:
  // convert -c of 512 MiB, 123 MiB against 246 MiB with two workers) for ~15% more time.
  const zstdCompressor = native ? nativeZstdCompressor(pool.compressor) : pool.compressor;
  const zlibCompressor = deflateNodeCompressor;
  return {
    decompressor(type: CompressionType): ClusterDecompressor {
      if (type === 'zlib') return zlibDecompressor;
      if (type === 'zstd') return zstdDecompressor;
      throw unknownType(type);
    },
    compressor(type: CompressionType): ClusterCompressor {
      if (type === 'zlib') return zlibCompressor;
      if (type === 'zstd') return zstdCompressor;
      throw unknownType(type);
    },
    close: () => pool.close(),
  };
}

/**
 * The shared Node codec set. Its zstd workers start on first use and are unref'd when
 * idle, so a process exits normally without `close()`; call it to stop them early.
 *
 * @example
 * ```ts
 * const cluster = new Uint8Array(65536);
 * await nodeCodecs.decompressor('zlib').decompress(storedBytes, cluster);
 * ```
 */
export const nodeCodecs: NodeCodecSet = createNodeCodecs();
