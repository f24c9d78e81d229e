/**
 * Big-endian helpers. The 16/32-bit ones work on the bytes themselves, for accessors called
 * per cluster (refcounts), where a DataView per call would be an allocation and a builtin call
 * each time. The 64-bit ones work on a DataView without BigInt: values above
 * Number.MAX_SAFE_INTEGER are returned as NaN-free but inexact doubles, so callers that need
 * exactness test the high half first (see `readU64Checked`).
 */

export const TWO_32 = 0x1_0000_0000;

/** A DataView over exactly `bytes`, whatever its offset in the underlying buffer. */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Big-endian u16 at `at`; the caller checks `at + 2 <= bytes.length`. */
export function getU16BE(bytes: Uint8Array, at: number): number {
  return ((bytes[at] ?? 0) << 8) | (bytes[at + 1] ?? 0);
}

/** Big-endian u32 at `at`; the caller checks `at + 4 <= bytes.length`. */
export function getU32BE(bytes: Uint8Array, at: number): number {
  return (((bytes[at] ?? 0) << 24) | ((bytes[at + 1] ?? 0) << 16) | ((bytes[at + 2] ?? 0) << 8) | (bytes[at + 3] ?? 0)) >>> 0;
}

/** Store the low 16 bits of `value` big-endian at `at`. */
export function setU16BE(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 8;
  bytes[at + 1] = value;
}

/** Store `value` (taken as u32) big-endian at `at`. */
export function setU32BE(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}

/** Read a big-endian u64 as a number (exact up to 2^53). */
export function readU64(view: DataView, offset: number): number {
  return view.getUint32(offset) * TWO_32 + view.getUint32(offset + 4);
}

/** High 32 bits of a big-endian u64. */
export function readHi(view: DataView, offset: number): number {
  return view.getUint32(offset);
}

/** Low 32 bits of a big-endian u64. */
export function readLo(view: DataView, offset: number): number {
  return view.getUint32(offset + 4);
}

/** Write a non-negative integer < 2^53 as a big-endian u64. */
export function writeU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, Math.floor(value / TWO_32));
  view.setUint32(offset + 4, value >>> 0);
}

/** Write a u64 from its halves (for flag words whose high bits exceed 2^53). */
export function writeU64Parts(view: DataView, offset: number, hi: number, lo: number): void {
  view.setUint32(offset, hi >>> 0);
  view.setUint32(offset + 4, lo >>> 0);
}

/** True when every byte of `bytes` is zero. Word-at-a-time where alignment allows. */
export function isZero(bytes: Uint8Array): boolean {
  const len = bytes.byteLength;
  let i = 0;
  if ((bytes.byteOffset & 7) === 0 && len >= 64) {
    const words = new Float64Array(bytes.buffer, bytes.byteOffset, len >>> 3);
    // Float64 compare: +0 only matches all-zero bits except -0 (sign bit), handled by Object.is below.
    for (let w = 0; w < words.length; w++) {
      if (words[w] !== 0 || Object.is(words[w], -0)) return false;
    }
    i = words.length << 3;
  }
  for (; i < len; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Round `value` up to a multiple of `align` (a power of two or any positive integer). */
export function roundUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/** Round `value` down to a multiple of `align`. */
export function roundDown(value: number, align: number): number {
  return Math.floor(value / align) * align;
}

/** Decode ASCII/UTF-8 bytes (names in headers and tables). */
export function decodeText(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** Encode a string as UTF-8. */
export function encodeText(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
