/**
 * The refcounts the image itself stores (refcount table + refcount blocks), read and updated
 * the way QEMU's qcow2_get_refcount / update_refcount do during a check: a refcount table
 * entry past the table or zero means refcount 0, an unaligned refcount block is a corruption
 * (signalled once) and makes every read through it fail with EIO.
 */
import { TWO_32, viewOf } from '../../util/bytes.js';
import { getRefcount, setRefcount } from '../../format/qcow2/refcount-codec.js';
import type { CheckImage } from './check-image.js';
import { guardRepairWrite } from './repair-overlap.js';
import { hex64Alt } from './snapshot-entry.js';
import type { CheckReporter, Errno } from './check-types.js';

/** Refcount blocks kept in memory: a byte budget, so small clusters get many blocks. */
const CACHE_BYTES = 8 * 1024 * 1024;
const MIN_CACHE_BLOCKS = 32;
/** QEMU refuses I/O beyond BDRV_MAX_LENGTH (about 2^63); the top 2^30 are a safe margin. */
const MAX_IO_HI = 0x7fffffff;

/**
 * All entries of an on-disk refcount block as numbers. 64-bit refcounts of 2^53 and above
 * (never reached by real references, but possible in a damaged image) read as Infinity: they
 * are above any counted reference; {@link diskRefcountText} prints them exactly.
 */
export function decodeRefblock(block: Uint8Array, order: number): Float64Array {
  const count = (block.byteLength * 8) >>> order;
  const out = new Float64Array(count);
  const v = viewOf(block);
  switch (order) {
    case 6:
      for (let i = 0; i < count; i++) {
        const hi = v.getUint32(i * 8);
        out[i] = hi > 0x1fffff ? Number.POSITIVE_INFINITY : hi * TWO_32 + v.getUint32(i * 8 + 4);
      }
      break;
    case 5: for (let i = 0; i < count; i++) out[i] = v.getUint32(i * 4); break;
    case 4: for (let i = 0; i < count; i++) out[i] = v.getUint16(i * 2); break;
    case 3: for (let i = 0; i < count; i++) out[i] = block[i]!; break;
    default: {
      const bits = 2 ** order;
      const mask = (1 << bits) - 1;
      for (let i = 0; i < count; i++) out[i] = (block[(i * bits) >>> 3]! >>> ((i * bits) & 7)) & mask;
    }
  }
  return out;
}

/** One entry of an on-disk refcount block, as {@link decodeRefblock} would give it. */
export function refcountAt(block: Uint8Array, index: number, order: number, v: DataView): number {
  switch (order) {
    case 6: {
      const hi = v.getUint32(index * 8);
      return hi > 0x1fffff ? Number.POSITIVE_INFINITY : hi * TWO_32 + v.getUint32(index * 8 + 4);
    }
    case 5: return v.getUint32(index * 4);
    case 4: return v.getUint16(index * 2);
    case 3: return block[index]!;
    default: {
      const bits = 2 ** order;
      return (block[(index * bits) >>> 3]! >>> ((index * bits) & 7)) & ((1 << bits) - 1);
    }
  }
}

/** Decimal text of an on-disk refcount (exact for 64-bit values). */
export function diskRefcountText(block: Uint8Array, index: number, order: number): string {
  if (order !== 6) return String(getRefcount(block, index, order));
  const v = viewOf(block);
  return ((BigInt(v.getUint32(index * 8)) << 32n) | BigInt(v.getUint32(index * 8 + 4))).toString();
}

/** A refcount block as found through the refcount table. */
export type RefblockLookup =
  /** No block: every refcount it would hold is 0. */
  | { kind: 'none' }
  | { kind: 'block'; offset: number; bytes: Uint8Array }
  /** Reading through this entry fails (QEMU returns -errno). */
  | { kind: 'error'; errno: Errno };

interface CachedBlock {
  bytes: Uint8Array;
  dirty: boolean;
}

/**
 * On-disk refcounts of a CheckImage.
 *
 * @example
 * ```ts
 * const disk = new OnDiskRefcounts(img, reporter);
 * const r = await disk.get(5); // number, or an errno when the refblock cannot be used
 * ```
 */
export class OnDiskRefcounts {
  readonly #img: CheckImage;
  readonly #reporter: CheckReporter;
  readonly #cache = new Map<number, CachedBlock>();
  /** The block last found through `get` (consecutive clusters mostly share one). */
  #memo: { index: number; found: RefblockLookup; view: DataView | undefined } | undefined;
  readonly #maxBlocks: number;
  /** The most recently used cached block (already last in the LRU order). */
  #mru = -1;

  constructor(img: CheckImage, reporter: CheckReporter) {
    this.#img = img;
    this.#reporter = reporter;
    this.#maxBlocks = Math.max(MIN_CACHE_BLOCKS, Math.floor(CACHE_BYTES / img.clusterSize));
  }

  /** The refcount block holding cluster indexes [index * entries, (index + 1) * entries). */
  async lookup(index: number): Promise<RefblockLookup> {
    const img = this.#img;
    if (index >= img.reftableEntries) return { kind: 'none' };
    const [hi, lo] = img.reftableEntry(index);
    const offLo = (lo & 0xfffffe00) >>> 0;
    if (hi === 0 && offLo === 0) return { kind: 'none' };
    if (offLo % img.clusterSize !== 0) {
      this.signalCorruption(`Refblock offset ${hex64Alt(hi, offLo)} unaligned (reftable index: ${hex64Alt(0, index)})`);
      return { kind: 'error', errno: 'EIO' };
    }
    if (hi > MAX_IO_HI - 1) return { kind: 'error', errno: 'EIO' };
    const offset = hi * TWO_32 + offLo;
    // Past the end of any file we can address: reads as zeros, as QEMU's read past the end.
    if (hi > 0x1fffff || offset > Number.MAX_SAFE_INTEGER - img.clusterSize) {
      return { kind: 'block', offset: Number.POSITIVE_INFINITY, bytes: new Uint8Array(img.clusterSize) };
    }
    return { kind: 'block', offset, bytes: await this.#load(offset) };
  }

  /**
   * QEMU's qcow2_get_refcount: the refcount of `cluster`, or the errno reading it fails with.
   */
  async get(cluster: number): Promise<number | Errno> {
    const per = this.#img.refblockEntries;
    const index = Math.floor(cluster / per);
    let memo = this.#memo;
    if (memo === undefined || memo.index !== index) {
      const found = await this.lookup(index);
      memo = { index, found, view: found.kind === 'block' ? viewOf(found.bytes) : undefined };
      this.#memo = memo;
    }
    const found = memo.found;
    if (found.kind === 'error') return found.errno;
    if (found.kind === 'none') return 0;
    return refcountAt(found.bytes, cluster % per, this.#img.refcountOrder, memo.view!);
  }

  /** Decimal text of the refcount `get` returned for `cluster` (exact above 2^53). */
  async text(cluster: number): Promise<string> {
    const r = await this.get(cluster);
    if (typeof r !== 'number') return '0';
    if (Number.isFinite(r)) return String(r); // exact below 2^53
    const per = this.#img.refblockEntries;
    const found = await this.lookup(Math.floor(cluster / per));
    if (found.kind !== 'block') return '0';
    return diskRefcountText(found.bytes, cluster % per, this.#img.refcountOrder);
  }

  /**
   * Set the refcount of `cluster` whose refcount block exists (QEMU's update_refcount for one
   * cluster). Written back by `flush`.
   */
  async set(cluster: number, value: number): Promise<void> {
    const per = this.#img.refblockEntries;
    const found = await this.lookup(Math.floor(cluster / per));
    if (found.kind !== 'block' || !Number.isFinite(found.offset)) throw new RangeError(`no usable refcount block for cluster ${cluster}`);
    setRefcount(found.bytes, cluster % per, this.#img.refcountOrder, value);
    this.#cache.get(found.offset)!.dirty = true;
    this.#memo = undefined;
  }

  /** Put a freshly written refcount block into the cache (allocator). */
  adopt(offset: number, bytes: Uint8Array): void {
    this.#cache.delete(offset);
    this.#cache.set(offset, { bytes, dirty: false });
    this.#mru = offset;
    this.#memo = undefined;
  }

  /** Write back changed refcount blocks (refused, as by QEMU, if one overlaps other metadata). */
  async flush(): Promise<void> {
    if (this.#img.stopped) return;
    for (const [offset, b] of this.#cache) {
      if (b.dirty) await this.#writeBack(offset, b);
    }
  }

  async #writeBack(offset: number, b: CachedBlock): Promise<void> {
    await guardRepairWrite({ img: this.#img, reporter: this.#reporter }, offset, this.#img.clusterSize, ['refcount block']);
    await this.#img.storage.write(b.bytes, offset);
    b.dirty = false;
  }

  /** Forget cached blocks (after the refcount structure was replaced). Flush first if needed. */
  clear(): void {
    this.#cache.clear();
    this.#mru = -1;
    this.#memo = undefined;
  }

  /**
   * QEMU's qcow2_signal_corruption as seen from a check: printed once per open image. A check
   * never marks the image corrupt, so the non-fatal wording is used even when repairing.
   */
  signalCorruption(message: string): void {
    if (this.#img.signaledCorruption) return;
    this.#img.signaledCorruption = true;
    this.#reporter.line(`qcow2: Image is corrupt: ${message}; further non-fatal corruption events will be suppressed`);
  }

  async #load(offset: number): Promise<Uint8Array> {
    const hit = this.#cache.get(offset);
    if (hit !== undefined) {
      if (offset !== this.#mru) {
        this.#cache.delete(offset);
        this.#cache.set(offset, hit);
        this.#mru = offset;
      }
      return hit.bytes;
    }
    while (this.#cache.size >= this.#maxBlocks) {
      const [oldest, b] = this.#cache.entries().next().value as [number, CachedBlock];
      if (b.dirty) await this.#writeBack(oldest, b);
      this.#cache.delete(oldest);
    }
    const bytes = new Uint8Array(this.#img.clusterSize);
    await this.#img.storage.read(bytes, offset);
    this.#cache.set(offset, { bytes, dirty: false });
    this.#mru = offset;
    return bytes;
  }
}
