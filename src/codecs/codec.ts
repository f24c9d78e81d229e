/**
 * Cluster codecs. qcow2 compresses each guest cluster independently; the stored bytes are
 * sector-rounded, so a decoder must stop at the end of the stream and ignore what follows.
 */

/** qcow2 compression types (header byte 104). */
export type CompressionType = 'zlib' | 'zstd';

export interface ClusterDecompressor {
  /**
   * Decompress `src` into exactly `dst.byteLength` bytes. `src` may carry trailing bytes
   * after the compressed stream (sector rounding; the next cluster's data). Throws
   * Qcow2Error('DECOMPRESS') when the stream is invalid or yields less than `dst.byteLength`.
   */
  decompress(src: Uint8Array, dst: Uint8Array): Promise<void>;
}

export interface ClusterCompressor {
  /**
   * Compress one cluster. Returns `undefined` when the result does not fit in
   * `src.byteLength - 1` bytes (QEMU's output buffer; the cluster is then stored uncompressed).
   */
  compress(src: Uint8Array): Promise<Uint8Array | undefined>;
}

/** The codecs an image uses, chosen by the environment (Node: thread pool; browser: JS/WASM). */
export interface CodecSet {
  decompressor(type: CompressionType): ClusterDecompressor;
  compressor(type: CompressionType): ClusterCompressor;
}
