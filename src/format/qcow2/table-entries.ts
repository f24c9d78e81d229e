/**
 * L1 and L2 entry codecs. An entry is a big-endian u64 read as two u32 halves: flags live in
 * the high half, so no BigInt is needed.
 */
import { TWO_32 } from '../../util/bytes.js';

/** Host offsets must stay exact doubles; anything near 2^53 is a broken entry. */
export const MAX_HOST_OFFSET = 2 ** 52;

/** Bits 9..55: the host offset of an L2 table, a data cluster or a refblock. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * TWO_32 + ((lo & 0xfffffe00) >>> 0);
}

/** Bit 63: refcount is exactly one (may be written in place). */
export function isCopied(hi: number): boolean {
  return (hi & 0x80000000) !== 0;
}

/** Bit 62 of an L2 entry: compressed cluster. */
export function isCompressed(hi: number): boolean {
  return (hi & 0x40000000) !== 0;
}

/** Bit 0 of a standard L2 entry: reads as zero (v3, not with extended L2). */
export function isZeroFlag(lo: number): boolean {
  return (lo & 1) !== 0;
}

/** Reserved bits of an L1 entry (0-8, 56-62). */
export function l1ReservedBits(hi: number, lo: number): boolean {
  return (hi & 0x7f000000) !== 0 || (lo & 0x1ff) !== 0;
}

/** Reserved bits of a standard (uncompressed) L2 entry (1-8, 56-61). */
export function l2ReservedBits(hi: number, lo: number): boolean {
  return (hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0;
}

/** Where a compressed cluster's bytes are: host byte offset and sector-rounded length. */
export interface CompressedDescriptor {
  hostOffset: number;
  /** Bytes to read from hostOffset: up to the end of the last 512-byte sector. */
  length: number;
}

/**
 * Decode a compressed L2 descriptor. With x = 62 - (clusterBits - 8), bits 0..x-1 hold the
 * byte offset and bits x..61 the count of additional 512-byte sectors.
 */
export function decodeCompressed(hi: number, lo: number, clusterBits: number): CompressedDescriptor {
  const shiftHi = 62 - (clusterBits - 8) - 32; // x - 32, in 17..29
  const body = hi & 0x3fffffff;
  const offsetHi = body & ((1 << shiftHi) - 1);
  const sectorMask = (1 << (clusterBits - 8)) - 1;
  const extraSectors = (body >>> shiftHi) & sectorMask;
  const hostOffset = offsetHi * TWO_32 + (lo >>> 0);
  const length = (extraSectors + 1) * 512 - (hostOffset % 512);
  return { hostOffset, length };
}

/** Encode a compressed descriptor (without flag bits) as [hi, lo]. */
export function encodeCompressed(hostOffset: number, compressedBytes: number, clusterBits: number): [number, number] {
  const shiftHi = 62 - (clusterBits - 8) - 32;
  const extraSectors = Math.floor((hostOffset + compressedBytes - 1) / 512) - Math.floor(hostOffset / 512);
  const hi = ((Math.floor(hostOffset / TWO_32) | (extraSectors << shiftHi)) | 0x40000000) >>> 0;
  return [hi, hostOffset >>> 0];
}

/** Subcluster bitmap of an extended L2 entry: `alloc` is bits 0-31, `zero` bits 32-63. */
export interface SubclusterBitmap {
  alloc: number;
  zero: number;
}

export const COPIED_HI = 0x80000000;
export const ZERO_LO = 1;

/** Entry words for a standard (uncompressed) cluster at `hostOffset`. */
export function encodeStandard(hostOffset: number, copied: boolean, zero = false): [number, number] {
  const hi = ((copied ? COPIED_HI : 0) | Math.floor(hostOffset / 2 ** 32)) >>> 0;
  const lo = ((hostOffset >>> 0) | (zero ? ZERO_LO : 0)) >>> 0;
  return [hi, lo];
}

/** Host clusters a compressed descriptor touches: [first offset, count]. */
export function compressedClusters(d: CompressedDescriptor, clusterSize: number): [number, number] {
  const first = Math.floor(d.hostOffset / clusterSize);
  const last = Math.floor((d.hostOffset + d.length - 1) / clusterSize);
  return [first * clusterSize, last - first + 1];
}
