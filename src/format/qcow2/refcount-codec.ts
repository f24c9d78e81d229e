/**
 * Refcount block and refcount table entry codecs. Pure functions over Uint8Array; no I/O.
 *
 * A refcount block is one cluster of `clusterSize * 8 / bits` entries of `bits` = 1 << order
 * bits each (order 0..6). Sub-byte widths pack entry i into byte `i * bits / 8`, least
 * significant bits first (entry 0 of a 1-bit block is bit 0 of byte 0). Widths of 8 bits and
 * more are big-endian. Refcounts are JavaScript numbers: a 64-bit entry above 2^53 - 1 cannot
 * be represented exactly, so reading one throws and writing one is refused.
 */
import { invalidImage, Qcow2Error } from '../../errors.js';
import { getU16BE, getU32BE, setU16BE, setU32BE, TWO_32, viewOf } from '../../util/bytes.js';

/** Largest refcount_order qcow2 allows (64-bit refcounts). */
export const MAX_REFCOUNT_ORDER = 6;
/** Bytes per refcount table entry. */
export const REFTABLE_ENTRY_SIZE = 8;
/** Reserved low bits of a refcount table entry (`REFT_RESERVED_MASK`). */
export const REFTABLE_RESERVED_MASK = 0x1ff;

function checkOrder(order: number): void {
  if (!Number.isInteger(order) || order < 0 || order > MAX_REFCOUNT_ORDER) {
    throw new RangeError(`refcount order must be 0..${MAX_REFCOUNT_ORDER}, got ${order}`);
  }
}

/**
 * refcount_order for a width in bits (1, 2, 4, ..., 64).
 *
 * @example
 * ```ts
 * refcountOrder(16); // 4
 * ```
 */
export function refcountOrder(bits: number): number {
  const order = Math.log2(bits);
  if (!Number.isInteger(order) || order < 0 || order > MAX_REFCOUNT_ORDER) {
    throw new RangeError(`refcount width must be a power of two from 1 to 64, got ${bits}`);
  }
  return order;
}

/**
 * Number of entries in one refcount block.
 *
 * @example
 * ```ts
 * refblockEntries(65536, 4); // 32768
 * ```
 */
export function refblockEntries(clusterSize: number, order: number): number {
  checkOrder(order);
  return (clusterSize * 8) >>> order;
}

/**
 * Largest refcount a block of this order can hold, capped at 2^53 - 1 for 64-bit refcounts
 * (QEMU's limit is 2^64 - 1; this implementation never counts that high).
 */
export function refcountMax(order: number): number {
  checkOrder(order);
  return order === MAX_REFCOUNT_ORDER ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}

function checkIndex(block: Uint8Array, index: number, order: number): void {
  const entries = (block.byteLength * 8) >>> order;
  if (!Number.isInteger(index) || index < 0 || index >= entries) {
    throw new RangeError(`refcount index ${index} outside a block of ${entries} entries`);
  }
}

/**
 * Read entry `index` of refcount block `block` with refcount width `1 << order` bits.
 * Throws Qcow2Error('UNSUPPORTED') for a 64-bit refcount above 2^53 - 1.
 *
 * @example
 * ```ts
 * const block = new Uint8Array(512);
 * setRefcount(block, 3, 0, 1); // 1-bit refcounts: bit 3 of byte 0
 * getRefcount(block, 3, 0);    // 1
 * block[0];                    // 0b00001000
 * ```
 */
export function getRefcount(block: Uint8Array, index: number, order: number): number {
  checkOrder(order);
  checkIndex(block, index, order);
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const bit = index << order;
      return ((block[bit >>> 3] ?? 0) >>> (bit & 7)) & ((1 << bits) - 1);
    }
    case 3:
      return block[index] ?? 0;
    case 4:
      return getU16BE(block, index * 2);
    case 5:
      return getU32BE(block, index * 4);
    default: {
      const hi = getU32BE(block, index * 8);
      const lo = getU32BE(block, index * 8 + 4);
      if (hi > 0x1fffff) {
        throw new Qcow2Error('UNSUPPORTED', `Refcount of entry ${index} exceeds 2^53 - 1`, { index, hi, lo });
      }
      return hi * TWO_32 + lo;
    }
  }
}

/**
 * Write entry `index` of a refcount block. `value` must be an integer from 0 to
 * {@link refcountMax}(order); RangeError otherwise (a caller bug, not an image problem).
 */
export function setRefcount(block: Uint8Array, index: number, order: number, value: number): void {
  checkOrder(order);
  checkIndex(block, index, order);
  if (!Number.isInteger(value) || value < 0 || value > refcountMax(order)) {
    throw new RangeError(`refcount ${value} does not fit in ${1 << order} bits`);
  }
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bit = index << order;
      const mask = ((1 << (1 << order)) - 1) << (bit & 7);
      const byte = bit >>> 3;
      block[byte] = ((block[byte] ?? 0) & ~mask) | (value << (bit & 7));
      return;
    }
    case 3:
      block[index] = value;
      return;
    case 4:
      setU16BE(block, index * 2, value);
      return;
    case 5:
      setU32BE(block, index * 4, value);
      return;
    default:
      setU32BE(block, index * 8, Math.floor(value / TWO_32));
      setU32BE(block, index * 8 + 4, value);
  }
}

/**
 * Set entries `[from, to)` of a refcount block to `value`: the bulk form of
 * {@link setRefcount}, used to build refcount blocks of new images quickly.
 */
export function fillRefcounts(block: Uint8Array, order: number, from: number, to: number, value: number): void {
  checkOrder(order);
  if (from >= to) return;
  checkIndex(block, from, order);
  checkIndex(block, to - 1, order);
  if (order <= 2) {
    // Whole bytes in the middle take a repeated byte pattern; the ragged ends go one by one.
    const perByte = 8 >>> order;
    const firstWhole = Math.ceil(from / perByte) * perByte;
    const lastWhole = Math.floor(to / perByte) * perByte;
    if (firstWhole >= lastWhole) {
      for (let i = from; i < to; i++) setRefcount(block, i, order, value);
      return;
    }
    for (let i = from; i < firstWhole; i++) setRefcount(block, i, order, value);
    let pattern = 0;
    for (let k = 0; k < perByte; k++) pattern |= value << (k << order);
    block.fill(pattern & 0xff, firstWhole / perByte, lastWhole / perByte);
    for (let i = lastWhole; i < to; i++) setRefcount(block, i, order, value);
    return;
  }
  if (order === 3) {
    if (!Number.isInteger(value) || value < 0 || value > 0xff) throw new RangeError(`refcount ${value} does not fit in 8 bits`);
    block.fill(value, from, to);
    return;
  }
  setRefcount(block, from, order, value);
  // Double the filled prefix until the range is covered.
  const width = 1 << (order - 3);
  const start = from * width;
  const end = to * width;
  for (let filled = width; filled < end - start; filled *= 2) {
    block.copyWithin(start + filled, start, start + Math.min(filled, end - start - filled));
  }
}

/** A decoded refcount table entry. */
export interface ReftableEntry {
  /** Host offset of the refcount block (bits 9-63); 0 = not allocated, all refcounts 0. */
  offset: number;
  /** Bits 0-8, which must be zero (`qemu-img check` reports them). */
  reserved: number;
}

/**
 * Decode refcount table entry `index` of `table`. Offsets at or above 2^53 cannot be a
 * position in any file we can address; they are reported as an invalid image.
 *
 * @example
 * ```ts
 * const { offset, reserved } = decodeReftableEntry(reftable, 0); // e.g. { offset: 0x20000, reserved: 0 }
 * ```
 */
export function decodeReftableEntry(table: Uint8Array, index: number): ReftableEntry {
  const byte = index * REFTABLE_ENTRY_SIZE;
  if (!Number.isInteger(index) || index < 0 || byte + REFTABLE_ENTRY_SIZE > table.byteLength) {
    throw new RangeError(`refcount table index ${index} outside a table of ${table.byteLength} bytes`);
  }
  const v = viewOf(table);
  const hi = v.getUint32(byte);
  const lo = v.getUint32(byte + 4);
  if (hi > 0x1fffff) {
    throw invalidImage(`Refcount table entry ${index} points beyond 2^53`, { index, hi, lo });
  }
  return { offset: hi * TWO_32 + ((lo & ~REFTABLE_RESERVED_MASK) >>> 0), reserved: lo & REFTABLE_RESERVED_MASK };
}

/** Write refcount table entry `index` (reserved bits zero). `offset` must be a multiple of 512. */
export function encodeReftableEntry(table: Uint8Array, index: number, offset: number): void {
  const byte = index * REFTABLE_ENTRY_SIZE;
  if (!Number.isInteger(index) || index < 0 || byte + REFTABLE_ENTRY_SIZE > table.byteLength) {
    throw new RangeError(`refcount table index ${index} outside a table of ${table.byteLength} bytes`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 512 !== 0) {
    throw new RangeError(`refcount block offset ${offset} is not a multiple of 512`);
  }
  const v = viewOf(table);
  v.setUint32(byte, Math.floor(offset / TWO_32));
  v.setUint32(byte + 4, offset >>> 0);
}
