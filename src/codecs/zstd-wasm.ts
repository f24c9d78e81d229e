/**
 * zstd for qcow2 clusters over @bokuweb/zstd-wasm (WebAssembly: Node and browsers).
 * The package only offers one-shot calls, so input is cut into exact frames first
 * (zstd-frame.ts) and frames are decoded one after another until the cluster is full,
 * as QEMU's streaming loop does.
 */
// Loaded on first use: importing the package costs ~25 ms at startup, paid by every CLI run.
type ZstdModule = typeof import('@bokuweb/zstd-wasm');
let zstd: ZstdModule | undefined;
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor } from './codec.js';
import { decodeZstdFrames } from './zstd-frame.js';

/** QEMU compresses with ZSTD_CLEVEL_DEFAULT. */
export const ZSTD_DEFAULT_LEVEL = 3;

let ready: Promise<void> | undefined;
let initialized = false;
/** One decompression context for every call: creating one per frame costs ~20 µs. */
let dctx: number | undefined;
const NO_DICT = new Uint8Array(0);

/**
 * Load the WebAssembly module once. Called lazily by the codecs; call it yourself to
 * choose where the browser fetches `zstd.wasm` from (default: next to the package's
 * module, which bundlers resolve). Rejects with Qcow2Error('UNSUPPORTED') when the
 * module cannot be loaded; a later call tries again. An application that uses
 * @bokuweb/zstd-wasm itself must call the package's `init()` before any qcow2kit zstd
 * call or not at all: a second `init()` replaces the instance under existing users.
 *
 * @example
 * ```ts
 * await initZstdWasm('/assets/zstd.wasm');
 * ```
 */
export function initZstdWasm(wasmUrl?: string): Promise<void> {
  // Initialising the package twice swaps its wasm instance under in-flight callers, so
  // adopt an instance that the application already set up.
  ready ??= import('@bokuweb/zstd-wasm').then((m) => {
    zstd = m;
    if (isInitialisedElsewhere(m)) return;
    return (m.init as (path?: string) => Promise<void>)(wasmUrl);
  }).then(
    () => { initialized = true; },
    (cause: unknown) => {
      ready = undefined;
      throw new Qcow2Error('UNSUPPORTED', `zstd: cannot load the WebAssembly decoder: ${String(cause)}`, {}, { cause });
    },
  );
  return ready;
}

/** The package has no "is initialised" query; a tiny compression only works once it is. */
function isInitialisedElsewhere(m: ZstdModule): boolean {
  try {
    return m.compress(new Uint8Array(1), 1).byteLength > 0;
  } catch {
    return false;
  }
}

/**
 * Decode zstd frames from `src` until `dst` is full; bytes after that are ignored.
 * Synchronous; the wasm module must be initialised (`initZstdWasm`). Throws
 * Qcow2Error('DECOMPRESS') on invalid data, a frame larger than the space left, or
 * input that ends before `dst` is full.
 */
export function zstdDecompressSync(src: Uint8Array, dst: Uint8Array): void {
  if (!initialized) throw new Qcow2Error('UNSUPPORTED', 'zstd: WebAssembly decoder not initialised');
  decodeZstdFrames(src, dst, decodeFrameWasm);
}

function decodeFrameWasm(frame: Uint8Array, room: Uint8Array): number {
  dctx ??= zstd!.createDCtx();
  // The wrapper allocates `defaultHeapSize` when the header gives no content size.
  const out = zstd!.decompressUsingDict(dctx, frame, NO_DICT, { defaultHeapSize: room.byteLength });
  if (out.byteLength > room.byteLength) throw new Qcow2Error('DECOMPRESS', 'zstd: frame is larger than the cluster', { room: room.byteLength });
  room.set(out);
  return out.byteLength;
}

/**
 * Compress one cluster into a single zstd frame at QEMU's default level. Returns
 * undefined when the frame would not be smaller than the cluster (QEMU then stores the
 * cluster uncompressed). Synchronous; the wasm module must be initialised.
 */
export function zstdCompressSync(src: Uint8Array): Uint8Array | undefined {
  if (!initialized) throw new Qcow2Error('UNSUPPORTED', 'zstd: WebAssembly encoder not initialised');
  const out = zstd!.compress(src, ZSTD_DEFAULT_LEVEL);
  // QEMU's output buffer is cluster_size - 1 bytes; a frame that fits is kept.
  return out.byteLength < src.byteLength ? out : undefined;
}

/**
 * zstd cluster decompressor on the WebAssembly decoder, in the calling thread.
 *
 * @example
 * ```ts
 * const cluster = new Uint8Array(65536);
 * await zstdWasmDecompressor.decompress(storedBytes, cluster);
 * ```
 */
export const zstdWasmDecompressor: ClusterDecompressor = {
  async decompress(src, dst) {
    await initZstdWasm();
    zstdDecompressSync(src, dst);
  },
};

/**
 * zstd cluster compressor on the WebAssembly encoder, in the calling thread.
 *
 * @example
 * ```ts
 * const stored = await zstdWasmCompressor.compress(cluster); // undefined: store raw
 * ```
 */
export const zstdWasmCompressor: ClusterCompressor = {
  async compress(src) {
    await initZstdWasm();
    return zstdCompressSync(src);
  },
};
