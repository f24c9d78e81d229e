/**
 * The browser-safe codec set: JavaScript raw deflate and WebAssembly zstd, all in the
 * calling thread. The default when no codecs are given.
 */
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor, CodecSet, CompressionType } from './codec.js';
import { deflateJsCompressor, deflateJsDecompressor } from './deflate-js.js';
import { zstdWasmCompressor, zstdWasmDecompressor } from './zstd-wasm.js';

function unknownType(type: unknown): Qcow2Error {
  return new Qcow2Error('UNSUPPORTED', `unknown compression type: ${String(type)}`, { compressionType: type });
}

/**
 * Codecs that run anywhere (browsers, workers, Node, Deno): zlib in JavaScript
 * (QEMU-compatible 4 KiB window), zstd in WebAssembly.
 *
 * @example
 * ```ts
 * const cluster = new Uint8Array(65536);
 * await jsCodecs.decompressor('zstd').decompress(storedBytes, cluster);
 * ```
 */
export const jsCodecs: CodecSet = {
  decompressor(type: CompressionType): ClusterDecompressor {
    if (type === 'zlib') return deflateJsDecompressor;
    if (type === 'zstd') return zstdWasmDecompressor;
    throw unknownType(type);
  },
  compressor(type: CompressionType): ClusterCompressor {
    if (type === 'zlib') return deflateJsCompressor;
    if (type === 'zstd') return zstdWasmCompressor;
    throw unknownType(type);
  },
};
