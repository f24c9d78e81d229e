/**
 * zlib-type (raw DEFLATE) cluster codecs on node:zlib. The asynchronous zlib calls run
 * on libuv's thread pool, so many clusters decode in parallel across cores.
 */
import { createRequire } from 'node:module';
import type { ZlibOptions } from 'node:zlib';
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor } from './codec.js';
import { inflateRawInto } from './inflate-raw.js';

let zlibModule: typeof import('node:zlib') | undefined;

/**
 * node:zlib, loaded on the first compressed cluster: requiring it costs ~3 ms of start-up,
 * and most CLI runs never meet one.
 */
function zlib(): typeof import('node:zlib') {
  zlibModule ??= createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib');
  return zlibModule;
}

function inflateRaw(src: Uint8Array, options: ZlibOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    zlib().inflateRaw(src, options, (err, out) => (err ? reject(err) : resolve(out)));
  });
}

function deflateRaw(src: Uint8Array, options: ZlibOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    zlib().deflateRaw(src, options, (err, out) => (err ? reject(err) : resolve(out)));
  });
}

/** A plain Uint8Array with its own ArrayBuffer (never a view into Node's Buffer pool). */
function ownBytes(buf: Buffer): Uint8Array {
  if (buf.byteOffset === 0 && buf.buffer.byteLength === buf.byteLength && buf.buffer instanceof ArrayBuffer) {
    return new Uint8Array(buf.buffer, 0, buf.byteLength);
  }
  return new Uint8Array(buf);
}

/**
 * Raw-deflate cluster decompressor on node:zlib (thread pool). Z_SYNC_FLUSH makes zlib
 * return what a cut stream holds instead of failing; bytes after the stream end are
 * ignored. A stream that would produce more than the cluster is decoded by the JS
 * inflater instead, which stops when the cluster is full as QEMU does.
 *
 * @example
 * ```ts
 * const cluster = new Uint8Array(65536);
 * await deflateNodeDecompressor.decompress(storedBytes, cluster);
 * ```
 */
export const deflateNodeDecompressor: ClusterDecompressor = {
  async decompress(src, dst) {
    let out: Buffer;
    try {
      out = await inflateRaw(src, { finishFlush: zlib().constants.Z_SYNC_FLUSH, maxOutputLength: dst.byteLength });
    } catch (cause) {
      if ((cause as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
        inflateRawInto(src, dst);
        return;
      }
      throw new Qcow2Error('DECOMPRESS', `deflate: ${(cause as Error).message}`, {}, { cause });
    }
    if (out.byteLength !== dst.byteLength) {
      throw new Qcow2Error('DECOMPRESS', 'deflate: stream ended before the cluster was full', {
        produced: out.byteLength, expected: dst.byteLength,
      });
    }
    dst.set(out);
  },
};

/**
 * Raw-deflate cluster compressor on node:zlib with QEMU's parameters (windowBits 12,
 * memLevel 9, default level). Returns undefined when the result would not be smaller
 * than the cluster (QEMU's output buffer is cluster_size - 1 bytes).
 *
 * @example
 * ```ts
 * const stored = await deflateNodeCompressor.compress(cluster); // undefined: store raw
 * ```
 */
export const deflateNodeCompressor: ClusterCompressor = {
  async compress(src) {
    const out = await deflateRaw(src, { windowBits: 12, memLevel: 9 });
    return out.byteLength < src.byteLength ? ownBytes(out) : undefined;
  },
};

/**
 * Synchronous raw-deflate decode into `dst` (for worker threads): stops at the end of the
 * stream, ignores trailing bytes, and keeps only the first cluster of a longer stream.
 */
export function inflateSyncNode(src: Uint8Array, dst: Uint8Array): void {
  let out: Buffer;
  try {
    const z = zlib();
    out = z.inflateRawSync(src, { finishFlush: z.constants.Z_SYNC_FLUSH });
  } catch (cause) {
    throw new Qcow2Error('DECOMPRESS', `deflate: ${(cause as Error).message}`, {}, { cause });
  }
  if (out.byteLength < dst.byteLength) {
    throw new Qcow2Error('DECOMPRESS', 'deflate: stream ended before the cluster was full', {
      produced: out.byteLength, expected: dst.byteLength,
    });
  }
  dst.set(out.subarray(0, dst.byteLength));
}

/** Synchronous raw-deflate encode with QEMU's parameters; undefined when it does not shrink. */
export function deflateSyncNode(src: Uint8Array): Uint8Array | undefined {
  const out = zlib().deflateRawSync(src, { windowBits: 12, memLevel: 9 });
  return out.byteLength < src.byteLength ? ownBytes(out) : undefined;
}
