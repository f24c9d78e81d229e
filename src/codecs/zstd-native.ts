/**
 * Node-only: zstd through the native zstd-napi addon, an optional dependency that npm builds
 * from source with node-gyp (no compiler at install time: no addon). Measured here it decodes
 * qcow2 clusters ~1.6x faster than the WebAssembly decoder, writing straight into the caller's
 * cluster buffer, and compresses them ~2.5x faster. Callers fall back to WebAssembly when it is
 * missing.
 */
import { createRequire } from 'node:module';
import type { ClusterCompressor, ClusterDecompressor } from './codec.js';
import { decodeZstdFrames, type ZstdFrameDecoder } from './zstd-frame.js';
import { ZSTD_DEFAULT_LEVEL } from './zstd-wasm.js';

/** The part of zstd-napi's binding used here (ZSTD_decompressDCtx and ZSTD_compressCCtx). */
interface NativeBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  CCtx: new () => { compress(dst: Uint8Array, src: Uint8Array, level: number): number };
}

let binding: NativeBinding | null | undefined;

/** The addon, or null when it is not installed or does not load. */
function nativeBinding(): NativeBinding | null {
  if (binding === undefined) {
    try {
      // A name in a variable: bundlers must leave this require to run time.
      const name = 'zstd-napi/binding';
      binding = createRequire(import.meta.url)(name) as NativeBinding;
    } catch {
      binding = null;
    }
  }
  return binding;
}

// One context of each kind, reused for every frame like the WebAssembly path does (a context
// per frame costs ~20 µs).
let frameDecoder: ZstdFrameDecoder | undefined;
let compressor: InstanceType<NativeBinding['CCtx']> | undefined;

/** The native frame decoder, or null when the addon is not available. */
function nativeFrameDecoder(): ZstdFrameDecoder | null {
  const b = nativeBinding();
  if (b === null) return null;
  if (frameDecoder === undefined) {
    const dctx = new b.DCtx();
    frameDecoder = (frame, room) => dctx.decompress(room, frame);
  }
  return frameDecoder;
}

/**
 * Compress one cluster into one zstd frame at QEMU's level with the addon. Returns the frame
 * when it is smaller than the cluster, undefined when it is not (QEMU then stores the cluster
 * uncompressed), or null when the addon is not available.
 *
 * @example
 * ```ts
 * const stored = zstdCompressNative(cluster) ?? zstdCompressSync(cluster);
 * ```
 */
export function zstdCompressNative(src: Uint8Array): Uint8Array | undefined | null {
  const b = nativeBinding();
  if (b === null) return null;
  compressor ??= new b.CCtx();
  // Room for one byte less than the cluster: a frame that does not fit is not kept anyway.
  const dst = new Uint8Array(Math.max(0, src.byteLength - 1));
  let length: number;
  try {
    length = compressor.compress(dst, src, ZSTD_DEFAULT_LEVEL);
  } catch (e) {
    if (e instanceof Error && /too small/.test(e.message)) return undefined;
    throw e;
  }
  return dst.slice(0, length);
}

/** True when the native addon loads (the first call loads it). */
export function zstdNativeAvailable(): boolean {
  return nativeFrameDecoder() !== null;
}

/**
 * A zstd cluster decompressor on the native addon, in the calling thread, or `fallback` when the
 * addon is not available. The addon is loaded on the first call, not at import.
 *
 * @example
 * ```ts
 * const zstd = nativeZstdDecompressor(zstdInThreadDecompressor);
 * await zstd.decompress(storedBytes, new Uint8Array(65536));
 * ```
 */
export function nativeZstdDecompressor(fallback: ClusterDecompressor): ClusterDecompressor {
  return {
    decompress(src, dst) {
      const decode = nativeFrameDecoder();
      if (decode === null) return fallback.decompress(src, dst);
      try {
        decodeZstdFrames(src, dst, decode);
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}

/**
 * A zstd cluster compressor on the native addon, in the calling thread, or `fallback` when the
 * addon is not available. The addon is loaded on the first call, not at import.
 *
 * @example
 * ```ts
 * const zstd = nativeZstdCompressor(pool.compressor);
 * const stored = await zstd.compress(cluster); // undefined: store the cluster uncompressed
 * ```
 */
export function nativeZstdCompressor(fallback: ClusterCompressor): ClusterCompressor {
  return {
    compress(src) {
      try {
        const frame = zstdCompressNative(src);
        return frame === null ? fallback.compress(src) : Promise.resolve(frame);
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}
