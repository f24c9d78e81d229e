/**
 * Zstandard frame walker (RFC 8878 section 3.1). It finds where a frame ends without
 * decoding it, so that a one-shot decoder can be given exactly one frame: qcow2 stores
 * compressed clusters sector-rounded, and one-shot zstd decoders reject trailing bytes.
 */
import { Qcow2Error } from '../errors.js';

/** Magic number of a zstd frame (little-endian on disk: 28 b5 2f fd). */
export const ZSTD_FRAME_MAGIC = 0xfd2fb528;
/** Skippable frames use magics 0x184d2a50..0x184d2a5f. */
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
/** RFC 8878: Block_Maximum_Size is at most 128 KiB. */
const MAX_BLOCK_SIZE = 128 * 1024;

/** What the walker learned about one frame. */
export interface ZstdFrameInfo {
  /** Total bytes of the frame: header, blocks and checksum (or the whole skippable frame). */
  readonly length: number;
  /** A skippable frame carries no data and decodes to nothing. */
  readonly skippable: boolean;
  /**
   * Frame_Content_Size from the header, or undefined when the header omits it. Values
   * above 2^53 are inexact but still compare as huge.
   */
  readonly contentSize: number | undefined;
}

function fail(message: string, offset: number): Qcow2Error {
  return new Qcow2Error('DECOMPRESS', `zstd: ${message}`, { offset });
}

function readU32LE(src: Uint8Array, pos: number): number {
  return ((src[pos] ?? 0) | ((src[pos + 1] ?? 0) << 8) | ((src[pos + 2] ?? 0) << 16) | ((src[pos + 3] ?? 0) << 24)) >>> 0;
}

/**
 * Measure the zstd frame that starts at `offset` in `src`. Pure: reads headers only.
 * Throws Qcow2Error('DECOMPRESS') on a bad magic, a reserved bit or block type, an
 * oversized block, or a frame that runs past the end of `src`.
 *
 * @example
 * ```ts
 * const frame = readZstdFrame(sectorRoundedBytes, 0);
 * const exact = sectorRoundedBytes.subarray(0, frame.length); // safe for ZSTD_decompress
 * ```
 */
export function readZstdFrame(src: Uint8Array, offset: number): ZstdFrameInfo {
  const end = src.byteLength;
  if (!Number.isInteger(offset) || offset < 0 || offset + 4 > end) throw fail('truncated frame magic', offset);
  const magic = readU32LE(src, offset);

  if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) {
    if (offset + 8 > end) throw fail('truncated skippable frame header', offset);
    const length = 8 + readU32LE(src, offset + 4);
    if (offset + length > end) throw fail('skippable frame runs past the input', offset);
    return { length, skippable: true, contentSize: undefined };
  }
  if (magic !== ZSTD_FRAME_MAGIC) throw fail(`bad frame magic 0x${magic.toString(16)}`, offset);

  let pos = offset + 4;
  if (pos >= end) throw fail('truncated frame header', offset);
  const descriptor = src[pos++] ?? 0;
  const fcsFlag = descriptor >>> 6;
  const singleSegment = (descriptor & 0x20) !== 0;
  const checksum = (descriptor & 0x04) !== 0;
  const dictIdFlag = descriptor & 0x03;
  if (descriptor & 0x08) throw fail('reserved bit set in frame header descriptor', offset);

  const windowBytes = singleSegment ? 0 : 1;
  const dictIdBytes = dictIdFlag === 3 ? 4 : dictIdFlag;
  const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : 1 << fcsFlag;
  if (pos + windowBytes + dictIdBytes + fcsBytes > end) throw fail('truncated frame header', offset);
  pos += windowBytes + dictIdBytes;

  let contentSize: number | undefined;
  switch (fcsBytes) {
    case 1: contentSize = src[pos] ?? 0; break;
    case 2: contentSize = ((src[pos] ?? 0) | ((src[pos + 1] ?? 0) << 8)) + 256; break;
    case 4: contentSize = readU32LE(src, pos); break;
    case 8: contentSize = readU32LE(src, pos) + readU32LE(src, pos + 4) * 0x1_0000_0000; break;
    default: contentSize = undefined;
  }
  pos += fcsBytes;

  // Each block header is 3 bytes, so this loop ends within end/3 iterations.
  for (;;) {
    if (pos + 3 > end) throw fail('truncated block header', offset);
    const header = (src[pos] ?? 0) | ((src[pos + 1] ?? 0) << 8) | ((src[pos + 2] ?? 0) << 16);
    pos += 3;
    const last = (header & 1) !== 0;
    const type = (header >>> 1) & 3;
    const size = header >>> 3;
    if (type === 3) throw fail('reserved block type', offset);
    if (size > MAX_BLOCK_SIZE) throw fail(`block size ${size} exceeds 128 KiB`, offset);
    pos += type === 1 ? 1 : size; // RLE blocks store one byte; size is the regenerated length
    if (pos > end) throw fail('block runs past the input', offset);
    if (last) break;
  }
  if (checksum) {
    pos += 4;
    if (pos > end) throw fail('truncated content checksum', offset);
  }
  return { length: pos - offset, skippable: false, contentSize };
}

/**
 * Decodes one exact frame into `room` (the part of the cluster still free) and returns the
 * number of bytes it produced; throws when the frame is invalid or does not fit.
 */
export type ZstdFrameDecoder = (frame: Uint8Array, room: Uint8Array) => number;

/**
 * Decode zstd frames from `src` until `dst` is full, as QEMU's streaming loop does; bytes after
 * that (sector rounding) are ignored. Each frame goes to `decodeFrame` cut to its exact length,
 * which one-shot decoders need. Throws Qcow2Error('DECOMPRESS') on invalid data, a frame larger
 * than the space left, or input that ends before `dst` is full.
 *
 * @example
 * ```ts
 * decodeZstdFrames(stored, cluster, (frame, room) => dctx.decompress(room, frame));
 * ```
 */
export function decodeZstdFrames(src: Uint8Array, dst: Uint8Array, decodeFrame: ZstdFrameDecoder): void {
  let inPos = 0;
  let outPos = 0;
  // Every frame is at least 8 bytes long, so this loop ends within src.length/8 steps.
  while (outPos < dst.byteLength) {
    if (inPos >= src.byteLength) {
      throw new Qcow2Error('DECOMPRESS', 'zstd: input ended before the cluster was full', { produced: outPos, expected: dst.byteLength });
    }
    const frame = readZstdFrame(src, inPos);
    if (!frame.skippable) {
      const room = dst.byteLength - outPos;
      // Decoders size their output from the header: never let the image choose a bigger size.
      if (frame.contentSize !== undefined && frame.contentSize > room) {
        throw new Qcow2Error('DECOMPRESS', 'zstd: frame is larger than the cluster', { offset: inPos, contentSize: frame.contentSize, room });
      }
      let produced: number;
      try {
        produced = decodeFrame(src.subarray(inPos, inPos + frame.length), dst.subarray(outPos));
      } catch (cause) {
        if (cause instanceof Qcow2Error) throw cause;
        throw new Qcow2Error('DECOMPRESS', 'zstd: invalid frame', { offset: inPos }, { cause });
      }
      outPos += produced;
    }
    inPos += frame.length;
  }
}
