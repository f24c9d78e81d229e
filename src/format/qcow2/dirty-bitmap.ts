import { Qcow2Error } from '../../errors.js';
import { isZero } from '../../util/bytes.js';
import { MAX_BITMAP_PHYS_SIZE } from './bitmap-directory.js';

/** A run of dirty guest bytes. */
export interface DirtyRange {
  offset: number;
  length: number;
}

/** Most bits one bitmap may hold: QEMU's 512 MiB of bitmap data. */
export const MAX_BITMAP_BITS = MAX_BITMAP_PHYS_SIZE * 8;

/** How one bitmap cluster can be stored: a table flag, or a data cluster. */
export type BitmapClusterState = 'zero' | 'ones' | 'mixed';

/**
 * One dirty bitmap in memory: bit k says whether guest bytes
 * `[k * granularity, (k + 1) * granularity)` were written. The bytes are kept in the
 * on-disk serialisation (bit k in byte k/8, LSB first), so bitmap cluster i is simply bytes
 * `[i * clusterSize, (i + 1) * clusterSize)`. Bits past the end of the disk are always zero.
 *
 * Bit indexes go up to 2^32, so index arithmetic avoids 32-bit bitwise operators.
 *
 * @example
 * ```ts
 * const bm = new DirtyBitmap(1 << 30, 16); // 1 GiB disk, 64 KiB granularity
 * bm.setRange(4096, 100);
 * [...bm.ranges()]; // [{ offset: 0, length: 65536 }]
 * ```
 */
export class DirtyBitmap {
  readonly granularityBits: number;
  readonly granularity: number;
  #size: number;
  #bitCount: number;
  /** Length rounded up to 8 bytes so whole words can be tested. */
  #bytes: Uint8Array;
  #words: Uint32Array;

  /** An empty bitmap for a disk of `size` bytes. */
  constructor(size: number, granularityBits: number) {
    if (!Number.isInteger(granularityBits) || granularityBits < 0 || granularityBits > 63) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Invalid bitmap granularity 2^${granularityBits}`, { granularityBits });
    }
    this.granularityBits = granularityBits;
    this.granularity = 2 ** granularityBits;
    this.#size = 0;
    this.#bitCount = 0;
    this.#bytes = new Uint8Array(0);
    this.#words = new Uint32Array(0);
    this.#allocate(size);
  }

  /** Bits needed to cover `size` bytes at `2^granularityBits` bytes per bit. */
  static bitsFor(size: number, granularityBits: number): number {
    return Math.ceil(size / 2 ** granularityBits);
  }

  /** Entries of the bitmap table for this disk size, granularity and cluster size (QEMU's rule). */
  static tableSizeFor(size: number, granularityBits: number, clusterSize: number): number {
    return Math.ceil(DirtyBitmap.bitsFor(size, granularityBits) / (clusterSize * 8));
  }

  /** Disk size in bytes the bitmap covers. */
  get size(): number {
    return this.#size;
  }

  get bitCount(): number {
    return this.#bitCount;
  }

  /** Serialised contents: exactly ceil(bitCount / 8) bytes (a view, not a copy). */
  get bytes(): Uint8Array {
    return this.#bytes.subarray(0, Math.ceil(this.#bitCount / 8));
  }

  /** Mark guest bytes `[offset, offset + length)` dirty (clamped to the disk). */
  setRange(offset: number, length: number): void {
    if (!(length > 0) || offset >= this.#size) return;
    const end = Math.min(offset + length, this.#size);
    const g = this.granularity;
    this.#setBits(Math.floor(Math.max(0, offset) / g), Math.ceil(end / g));
  }

  /** True when the bit covering guest byte `offset` is set. */
  isDirty(offset: number): boolean {
    if (offset < 0 || offset >= this.#size) return false;
    const bit = Math.floor(offset / this.granularity);
    return ((this.#bytes[Math.floor(bit / 8)]! >> (bit % 8)) & 1) === 1;
  }

  /** Clear every bit. */
  clear(): void {
    this.#bytes.fill(0);
  }

  /** Number of set bits. */
  count(): number {
    let n = 0;
    const words = this.#words;
    for (let w = 0; w < words.length; w++) {
      let v = words[w]!;
      if (v === 0) continue;
      v = v - ((v >>> 1) & 0x55555555);
      v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
      n += (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
    }
    return n;
  }

  /** Dirty runs of guest bytes in ascending order, adjacent bits merged, clamped to the disk. */
  *ranges(): Generator<DirtyRange> {
    const g = this.granularity;
    const bytes = this.#bytes;
    const words = this.#words;
    let start = -1;
    const flush = (endBit: number): DirtyRange => {
      const offset = start * g;
      const range = { offset, length: Math.min(endBit * g, this.#size) - offset };
      start = -1;
      return range;
    };
    for (let w = 0; w < words.length; w++) {
      const v = words[w]!;
      // Whole-word tests are endian-neutral; mixed words are read byte by byte.
      if (v === 0) {
        if (start >= 0) yield flush(w * 32);
        continue;
      }
      if (v === 0xffffffff) {
        if (start < 0) start = w * 32;
        continue;
      }
      for (let k = 0; k < 4; k++) {
        const b = bytes[w * 4 + k]!;
        for (let bit = 0; bit < 8; bit++) {
          const index = w * 32 + k * 8 + bit;
          if ((b >> bit) & 1) {
            if (start < 0) start = index;
          } else if (start >= 0) {
            yield flush(index);
          }
        }
      }
    }
    if (start >= 0) yield flush(this.#bitCount);
  }

  /**
   * Set every bit that `src` has set (same disk size; granularities may differ: a source run
   * dirties every destination bit it touches, as QEMU's merge does).
   */
  merge(src: DirtyBitmap): void {
    if (src.size !== this.#size) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Bitmaps are of different sizes (destination size is ${this.#size}, source size is ${src.size}) and can't be merged`, {});
    }
    if (src.granularityBits === this.granularityBits) {
      const a = this.#words;
      const b = src.#words;
      for (let i = 0; i < a.length; i++) a[i] = (a[i]! | b[i]!) >>> 0;
      return;
    }
    for (const r of src.ranges()) this.setRange(r.offset, r.length);
  }

  /** A deep copy. */
  clone(): DirtyBitmap {
    const copy = new DirtyBitmap(this.#size, this.granularityBits);
    copy.#bytes.set(this.#bytes);
    return copy;
  }

  /** Cover a new disk size: growing adds clean bits, shrinking drops bits past the end. */
  resize(size: number): void {
    const old = this.#bytes;
    this.#allocate(size);
    this.#bytes.set(old.subarray(0, Math.min(old.byteLength, this.#bytes.byteLength)));
    this.#clearTail();
  }

  /** How bitmap cluster `index` can be stored. 'ones' only for clusters wholly inside the disk. */
  clusterState(index: number, clusterSize: number): BitmapClusterState {
    const data = this.#clusterSlice(index, clusterSize);
    if (isZero(data)) return 'zero';
    if ((index + 1) * clusterSize * 8 > this.#bitCount) return 'mixed';
    for (let i = 0; i < data.byteLength; i++) if (data[i] !== 0xff) return 'mixed';
    return 'ones';
  }

  /** Bitmap cluster `index` as stored on disk: `clusterSize` bytes, zero padded. */
  clusterBytes(index: number, clusterSize: number): Uint8Array {
    const out = new Uint8Array(clusterSize);
    out.set(this.#clusterSlice(index, clusterSize));
    return out;
  }

  /** Load bitmap cluster `index` from its on-disk bytes (bits past the disk are ignored). */
  loadCluster(index: number, clusterSize: number, data: Uint8Array): void {
    const slice = this.#clusterSlice(index, clusterSize);
    slice.set(data.subarray(0, slice.byteLength));
    this.#clearTail();
  }

  /** Set every bit of bitmap cluster `index` (an all-ones table entry). */
  fillCluster(index: number, clusterSize: number): void {
    this.#clusterSlice(index, clusterSize).fill(0xff);
    this.#clearTail();
  }

  #clusterSlice(index: number, clusterSize: number): Uint8Array {
    const used = Math.ceil(this.#bitCount / 8);
    const start = Math.min(index * clusterSize, used);
    return this.#bytes.subarray(start, Math.min(start + clusterSize, used));
  }

  #allocate(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid disk size ${size}`, { size });
    const bits = DirtyBitmap.bitsFor(size, this.granularityBits);
    if (bits > MAX_BITMAP_BITS) {
      throw new Qcow2Error('INVALID_ARGUMENT', 'Too much space will be occupied by the bitmap. Use larger granularity', { size, bits });
    }
    this.#size = size;
    this.#bitCount = bits;
    this.#bytes = new Uint8Array(Math.ceil(bits / 64) * 8);
    this.#words = new Uint32Array(this.#bytes.buffer, 0, this.#bytes.byteLength / 4);
  }

  /** Set bits `[first, end)`. */
  #setBits(first: number, end: number): void {
    const bytes = this.#bytes;
    let i = first;
    while (i < end && i % 8 !== 0) {
      bytes[Math.floor(i / 8)]! |= 1 << (i % 8);
      i++;
    }
    const wholeEnd = Math.floor(end / 8) * 8;
    if (i < wholeEnd) {
      bytes.fill(0xff, i / 8, wholeEnd / 8);
      i = wholeEnd;
    }
    while (i < end) {
      bytes[Math.floor(i / 8)]! |= 1 << (i % 8);
      i++;
    }
  }

  /** Keep the invariant: no bit at or past `bitCount` is set. */
  #clearTail(): void {
    const bits = this.#bitCount;
    const bytes = this.#bytes;
    const firstWhole = Math.ceil(bits / 8);
    if (bits % 8 !== 0) bytes[firstWhole - 1]! &= (1 << (bits % 8)) - 1;
    bytes.fill(0, firstWhole);
  }
}
