/**
 * Browser-safe zlib-type (raw DEFLATE) cluster codecs in plain JavaScript.
 * Decoding stops as soon as the cluster is full, exactly like QEMU, so sector-rounding
 * tails and streams cut after the last needed byte are fine. Encoding keeps distances
 * within QEMU's 4 KiB inflate window (CompressionStream cannot: it uses 32 KiB).
 */
import type { ClusterCompressor, ClusterDecompressor } from './codec.js';
import { deflateRawWindow4k } from './deflate-raw.js';
import { inflateRawInto } from './inflate-raw.js';

/**
 * Raw-deflate cluster decompressor in JavaScript (runs in the calling thread).
 *
 * @example
 * ```ts
 * const cluster = new Uint8Array(65536);
 * await deflateJsDecompressor.decompress(storedBytes, cluster);
 * ```
 */
export const deflateJsDecompressor: ClusterDecompressor = {
  async decompress(src, dst) {
    inflateRawInto(src, dst);
  },
};

/**
 * Raw-deflate cluster compressor in JavaScript, QEMU-decodable (4 KiB window).
 * Returns undefined when the result would not be smaller than the cluster.
 *
 * @example
 * ```ts
 * const stored = await deflateJsCompressor.compress(cluster); // undefined: store raw
 * ```
 */
export const deflateJsCompressor: ClusterCompressor = {
  async compress(src) {
    return deflateRawWindow4k(src, src.byteLength);
  },
};
