/**
 * The Node codec set: node:zlib for zlib (libuv thread pool); zstd decoded by the native
 * zstd-napi addon when it is installed (WebAssembly otherwise) and compressed by a
 * worker-thread pool running WebAssembly.
 */
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor, CodecSet, CompressionType } from './codec.js';
import { ZstdWorkerPool, defaultZstdThreads, zstdInThreadDecompressor } from './zstd-node.js';
import { deflateNodeCompressor, inflateSyncNode } from './deflate-node.js';
import { nativeZstdDecompressor } from './zstd-native.js';

/** A codec set that owns worker threads; `close()` stops them (idle ones never block exit). */
export interface NodeCodecSet extends CodecSet {
  close(): Promise<void>;
}

/** Options of {@link createNodeCodecs}. */
export interface NodeCodecOptions {
  /**
   * zstd worker threads; 0 decodes in the calling thread.
   * Default min(4, os.availableParallelism()).
   */
  readonly zstdThreads?: number;
  /**
   * Decode zstd with the native zstd-napi addon when it is installed (default true); false
   * always uses the WebAssembly decoder.
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
  const pool = new ZstdWorkerPool({ threads: options.zstdThreads ?? defaultZstdThreads() });
  // Decoding stays on the calling thread: measured here, worker threads cost ~40 MiB of memory
  // each and did not read faster on 2 cores. zlib compression runs on libuv's thread pool,
  // which uses every core without a JavaScript isolate per thread; zstd needs the workers.
  const zlibDecompressor: ClusterDecompressor = { decompress: async (src, dst) => inflateSyncNode(src, dst) };
  const zstdDecompressor = options.zstdNative === false ? zstdInThreadDecompressor : nativeZstdDecompressor(zstdInThreadDecompressor);
  const zlibCompressor = deflateNodeCompressor;
  return {
    decompressor(type: CompressionType): ClusterDecompressor {
      if (type === 'zlib') return zlibDecompressor;
      if (type === 'zstd') return zstdDecompressor;
      throw unknownType(type);
    },
    compressor(type: CompressionType): ClusterCompressor {
      if (type === 'zlib') return zlibCompressor;
      if (type === 'zstd') return pool.compressor;
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
