import { invalidImage, Qcow2Error } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { readU64, viewOf, writeU64 } from '../../util/bytes.js';
import { TableCache } from './table-cache.js';
import { getRefcount, setRefcount } from './refcount-codec.js';
import { AsyncMutex } from '../../util/async-mutex.js';

/** Where the refcount table lives; changes when the table grows. */
export interface ReftableLocation {
  offset: number;
  clusters: number;
}

const REFBLOCK_CACHE_BYTES = 4 << 20;

/**
 * Reference counts of host clusters: the refcount table (kept whole in memory; QEMU caps it
 * at 8 MiB) and a write-back cache of refcount blocks.
 *
 * Crash safety comes from the order of `writeIncreases` (refcounts that only grew: new
 * allocations), then the caller's L2/L1/header writes, then `writeFinal` (decreases). A crash
 * between any two steps leaves refcounts >= references: leaks, never corruption. A cluster
 * freed since the last flush is not handed out again until `writeFinal` has run, so on-disk
 * tables that still name it never see new data in it.
 */
export class Refcounts {
  readonly #storage: Storage;
  readonly #clusterSize: number;
  readonly #clusterBits: number;
  readonly #bits: number;
  readonly #order: number;
  readonly #entriesPerBlock: number;
  readonly #max: number;
  #reftable: Uint8Array;
  #reftableView: DataView;
  #location: ReftableLocation;
  #reftableDirty = false;
  readonly #blocks: TableCache;
  /** On-disk contents of refblocks changed since the last flush. */
  readonly #diskCopies = new Map<number, Uint8Array>();
  /** Lowest cluster index that may be free. */
  #freeHint = 0;
  /** Runs taken but not yet counted (while the refblocks they need are created): not free. */
  readonly #reserved: { start: number; count: number }[] = [];
  /** First cluster index past everything allocated or present in the file. */
  #end: number;
  /** Clusters of old refcount tables to free once the header points elsewhere. */
  #retired: ReftableLocation[] = [];
  readonly #lock = new AsyncMutex();
  #refblockSet: Set<number> | undefined;
  /** Refblocks with a decrease since the last flush (the only ones needing the merge). */
  readonly #decreased = new Set<number>();

  private constructor(storage: Storage, clusterBits: number, refcountOrder: number, location: ReftableLocation, reftable: Uint8Array, fileSize: number) {
    this.#storage = storage;
    this.#clusterBits = clusterBits;
    this.#clusterSize = 2 ** clusterBits;
    this.#bits = 2 ** refcountOrder;
    this.#order = refcountOrder;
    this.#entriesPerBlock = (this.#clusterSize * 8) / this.#bits;
    this.#max = this.#bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.#bits - 1;
    this.#location = location;
    this.#reftable = reftable;
    this.#reftableView = viewOf(reftable);
    this.#blocks = new TableCache(storage, this.#clusterSize, REFBLOCK_CACHE_BYTES);
    this.#end = Math.ceil(fileSize / this.#clusterSize);
  }

  static async open(storage: Storage, clusterBits: number, refcountOrder: number, location: ReftableLocation): Promise<Refcounts> {
    const cs = 2 ** clusterBits;
    const table = new Uint8Array(location.clusters * cs);
    await storage.read(table, location.offset);
    return new Refcounts(storage, clusterBits, refcountOrder, location, table, await storage.size());
  }

  get location(): ReftableLocation {
    return this.#location;
  }

  get refcountMax(): number {
    return this.#max;
  }

  /** True when something must be written by the next flush. */
  get dirty(): boolean {
    return this.#reftableDirty || this.#blocks.hasDirty() || this.#retired.length > 0;
  }

  /** The refcount of host cluster `cluster` as currently known (memory). */
  async get(cluster: number): Promise<number> {
    if (!Number.isSafeInteger(cluster) || cluster < 0) throw new Qcow2Error('CORRUPT', `Invalid cluster index ${cluster}`, { cluster });
    const block = await this.#block(cluster, false);
    return block === undefined ? 0 : getRefcount(block, cluster % this.#entriesPerBlock, this.#order);
  }

  /** Add `delta` to the refcount of `count` clusters starting at host offset `offset`. */
  private async update(offset: number, count: number, delta: number): Promise<void> {
    if (offset % this.#clusterSize !== 0 || !Number.isSafeInteger(offset) || offset < 0) {
      throw new Qcow2Error('CORRUPT', `Cannot change the refcount of unaligned offset 0x${offset.toString(16)}`, { offset });
    }
    const first = Math.floor(offset / this.#clusterSize);
    const end = first + count;
    // One refblock at a time: the block lookup (maybe a load or a new block) once per block.
    for (let c = first; c < end;) {
      const block = await this.#block(c, delta > 0);
      if (block === undefined) throw new Qcow2Error('CORRUPT', `Refcount of cluster ${c} would become negative`, { cluster: c });
      c = this.#updateIn(block, c, end, delta);
    }
  }

  /** Add `delta` to clusters [c, end) as far as `block` (the refblock of `c`) covers them; returns where it stopped. */
  #updateIn(block: Uint8Array, c: number, end: number, delta: number): number {
    const blockOffset = this.#blockOffset(c);
    const stop = Math.min(end, (Math.floor(c / this.#entriesPerBlock) + 1) * this.#entriesPerBlock);
    this.#keepDiskCopy(blockOffset, block);
    if (delta < 0) this.#decreased.add(blockOffset);
    this.#blocks.markDirty(blockOffset);
    for (; c < stop; c++) {
      const i = c % this.#entriesPerBlock;
      const next = getRefcount(block, i, this.#order) + delta;
      if (next < 0 || next > this.#max) {
        throw new Qcow2Error('CORRUPT', next < 0
          ? `Refcount of cluster ${c} would become negative`
          : `Refcount of cluster ${c} would exceed the maximum (${this.#max}); please use amend to increase refcount_bits`, { cluster: c });
      }
      setRefcount(block, i, this.#order, next);
      if (next === 0 && c < this.#freeHint) this.#freeHint = c;
    }
    if (stop > this.#end) this.#end = stop;
    return stop;
  }

  /**
   * Find `count` contiguous free clusters, set their refcount to 1 and return the host offset.
   * Free means zero in memory and on disk (see the class comment).
   */
  allocate(count: number): Promise<number> {
    return this.#lock.run(() => this.#allocate(count));
  }

  async #allocate(count: number): Promise<number> {
    const start = await this.#findFree(count);
    if (start === 0) throw new Qcow2Error('CORRUPT', 'Preventing invalid allocation at offset 0', {});
    // As in QEMU, the run is taken first and the refblocks it needs go after it, so that both
    // tools lay out the same image.
    if (start === this.#freeHint) this.#freeHint = start + count;
    if (start + count > this.#end) this.#end = start + count;
    await this.#whileReserved(start, count, async () => {
      const firstIdx = Math.floor(start / this.#entriesPerBlock);
      const lastIdx = Math.floor((start + count - 1) / this.#entriesPerBlock);
      for (let idx = firstIdx; idx <= lastIdx; idx++) await this.#block(idx * this.#entriesPerBlock, true);
    });
    await this.update(start * this.#clusterSize, count, 1);
    return start * this.#clusterSize;
  }

  /**
   * `allocate` without awaiting, when that is possible: nothing else is allocating, and the
   * refblocks the search and the new run need are in the cache. Otherwise `undefined`, and
   * nothing has changed. The same clusters as `allocate` would pick.
   */
  allocateNow(count: number): number | undefined {
    if (!this.#lock.idle || this.#reserved.length > 0) return undefined;
    const scan = this.#newScan();
    let start = -1;
    while (start < 0) {
      const free = this.#isFreeCached(scan.next);
      if (free === undefined) return undefined;
      start = this.#step(scan, free, count);
    }
    const end = start + count;
    const perBlock = this.#entriesPerBlock;
    for (let c = start; c < end; c = (Math.floor(c / perBlock) + 1) * perBlock) if (this.#cachedBlock(c) === undefined) return undefined;
    // As #findFree and #allocate leave it.
    this.#freeHint = start === scan.firstFree ? end : scan.firstFree;
    if (end > this.#end) this.#end = end;
    for (let c = start; c < end;) c = this.#updateIn(this.#cachedBlock(c)!, c, end, 1);
    return start * this.#clusterSize;
  }

  /** The refblock of `cluster` when it exists and is cached. */
  #cachedBlock(cluster: number): Uint8Array | undefined {
    const off = this.#blockOffset(cluster);
    if (off === 0 || off % this.#clusterSize !== 0) return undefined;
    return this.#blocks.peek(off);
  }

  /** Release `count` clusters from `offset` (refcount - 1). */
  free(offset: number, count: number): Promise<void> {
    return this.#lock.run(() => this.update(offset, count, -1));
  }

  /** Add one reference to `count` clusters from `offset` (shared compressed clusters, snapshots). */
  addRef(offset: number, count: number): Promise<void> {
    return this.#lock.run(() => this.update(offset, count, 1));
  }

  /** Step 1 of a flush: refblocks with every entry at max(disk, memory), then the reftable. */
  async writeIncreases(): Promise<void> {
    await this.#blocks.writeDirty((off, current) => {
      const disk = this.#diskCopies.get(off);
      // Only increases since the last flush: memory is already >= disk everywhere.
      if (disk === undefined || !this.#decreased.has(off)) {
        this.#diskCopies.set(off, current.slice());
        return current.slice();
      }
      const merged = current.slice();
      for (let i = 0; i < this.#entriesPerBlock; i++) {
        const d = getRefcount(disk, i, this.#order);
        if (d > getRefcount(merged, i, this.#order)) setRefcount(merged, i, this.#order, d);
      }
      this.#diskCopies.set(off, merged.slice());
      this.#blocks.markDirty(off); // decreases still pending
      return merged;
    });
    if (this.#reftableDirty) {
      this.#reftableDirty = false;
      await this.#storage.write(this.#reftable.slice(), this.#location.offset);
    }
  }

  /** Step 3 of a flush, after the tables that dropped references are on disk: the decreases. */
  async writeFinal(): Promise<void> {
    await this.#blocks.writeDirty();
    this.#diskCopies.clear();
    this.#decreased.clear();
    const retired = this.#retired;
    this.#retired = [];
    for (const r of retired) await this.#lock.run(() => this.update(r.offset, r.clusters, -1));
    if (retired.length > 0) await this.#blocks.writeDirty();
    this.#diskCopies.clear();
    this.#decreased.clear();
  }

  /** Host offsets of the refcount blocks (for the overlap check); kept current as blocks are added. */
  refblocks(): ReadonlySet<number> {
    if (this.#refblockSet === undefined) {
      this.#refblockSet = new Set();
      // Entries past the last non-zero one are skipped by the tightest loop there is: this runs
      // before V8 optimizes it, and a new image's table has 8,192 entries, all but a few zero.
      // The table is ours (allocated whole), so its words are aligned.
      const words = new Uint32Array(this.#reftable.buffer, this.#reftable.byteOffset, this.#reftable.byteLength >>> 2);
      let used = words.length;
      while (used > 0 && words[used - 1] === 0) used--;
      for (let i = 0; i < (used + 1) >>> 1; i++) {
        const off = this.#blockOffset(i * this.#entriesPerBlock);
        if (off !== 0) this.#refblockSet.add(off);
      }
    }
    return this.#refblockSet;
  }

  /** Old refcount tables replaced by growth, to free after the header is rewritten. */
  get retiredTables(): readonly ReftableLocation[] {
    return this.#retired;
  }

  /** Remember what is on disk before the first change since the last flush. */
  #keepDiskCopy(blockOffset: number, block: Uint8Array): void {
    if (!this.#diskCopies.has(blockOffset)) this.#diskCopies.set(blockOffset, block.slice());
  }

  #blockOffset(cluster: number): number {
    const idx = Math.floor(cluster / this.#entriesPerBlock);
    if (idx * 8 >= this.#reftable.byteLength) return 0;
    const hi = this.#reftableView.getUint32(idx * 8);
    const lo = this.#reftableView.getUint32(idx * 8 + 4);
    const off = hi > 0x1fffff ? Infinity : readU64(this.#reftableView, idx * 8) - (lo & 0x1ff);
    // The block must be addressable as a whole with exact integers.
    if (off > Number.MAX_SAFE_INTEGER - this.#clusterSize) throw new Qcow2Error('CORRUPT', `Refcount table entry ${idx} is out of range`, { index: idx });
    return off;
  }

  /** The refblock covering `cluster`, created when `create` is set and it does not exist. */
  async #block(cluster: number, create: boolean): Promise<Uint8Array | undefined> {
    for (;;) {
      const off = this.#blockOffset(cluster);
      if (off !== 0) {
        if (off % this.#clusterSize !== 0) {
          throw new Qcow2Error('CORRUPT', `Refblock offset 0x${off.toString(16)} unaligned`, { offset: off });
        }
        return this.#blocks.get(off);
      }
      if (!create) return undefined;
      await this.#createBlock(Math.floor(cluster / this.#entriesPerBlock));
    }
  }

  /** Allocate a refblock for reftable index `idx`, growing the reftable when needed. */
  async #createBlock(idx: number): Promise<void> {
    if (idx * 8 >= this.#reftable.byteLength) await this.#growReftable(idx + 1);
    if (this.#blockOffset(idx * this.#entriesPerBlock) !== 0) return; // created meanwhile
    const at = await this.#findFree(1);
    const atIdx = Math.floor(at / this.#entriesPerBlock);
    const offset = at * this.#clusterSize;
    const block = this.#blocks.create(offset);
    this.#refblockSet?.add(offset);
    this.#diskCopies.set(offset, new Uint8Array(this.#clusterSize));
    writeU64(this.#reftableView, idx * 8, offset);
    this.#reftableDirty = true;
    if (at + 1 > this.#end) this.#end = at + 1;
    if (atIdx === idx) {
      setRefcount(block, at % this.#entriesPerBlock, this.#order, 1); // the block describes itself
    } else {
      // Counted in another refblock, which may have to be created first: not there.
      await this.#whileReserved(at, 1, () => this.#block(at, true));
      await this.update(offset, 1, 1);
    }
  }

  /** Move the refcount table to a larger home at the end of the file. */
  async #growReftable(minEntries: number): Promise<void> {
    const perCluster = this.#clusterSize / 8;
    const oldEntries = this.#reftable.byteLength / 8;
    // Room for the growth itself: the new table and the refblocks covering it.
    const wanted = Math.max(minEntries, Math.ceil(oldEntries * 1.5), oldEntries + 1);
    const clusters = Math.ceil((wanted + 2) / perCluster);
    if (clusters * this.#clusterSize > 8 << 20) throw invalidImage('Reference count table too large');
    const start = this.#end;
    const table = new Uint8Array(clusters * this.#clusterSize);
    table.set(this.#reftable);
    this.#retired.push(this.#location);
    this.#reftable = table;
    this.#reftableView = viewOf(table);
    this.#location = { offset: start * this.#clusterSize, clusters };
    this.#reftableDirty = true;
    this.#end = start + clusters;
    await this.update(start * this.#clusterSize, clusters, 1);
  }

  async #whileReserved<T>(start: number, count: number, fn: () => Promise<T>): Promise<T> {
    this.#reserved.push({ start, count });
    try {
      return await fn();
    } finally {
      this.#reserved.pop();
    }
  }

  /** Free in memory and on disk; answered without a promise when the refblock is cached. */
  #isFree(cluster: number): boolean | Promise<boolean> {
    const known = this.#isFreeCached(cluster);
    if (known !== undefined) return known;
    const off = this.#blockOffset(cluster);
    return Promise.resolve(this.#blocks.get(off)).then((b) => this.#freeIn(b, off, cluster));
  }

  /** As #isFree, without I/O: `undefined` when the refblock would have to be read. */
  #isFreeCached(cluster: number): boolean | undefined {
    if (this.#reserved.length > 0 && this.#reserved.some((r) => cluster >= r.start && cluster < r.start + r.count)) return false;
    const off = this.#blockOffset(cluster);
    if (off === 0) return this.#noTableUses(cluster);
    const block = this.#blocks.peek(off);
    return block === undefined ? undefined : this.#freeIn(block, off, cluster);
  }

  #freeIn(block: Uint8Array, off: number, cluster: number): boolean {
    const i = cluster % this.#entriesPerBlock;
    if (getRefcount(block, i, this.#order) !== 0) return false;
    const disk = this.#diskCopies.get(off);
    return disk === undefined || getRefcount(disk, i, this.#order) === 0;
  }

  /** A cluster without a refblock is free unless a pending reftable occupies it. */
  #noTableUses(cluster: number): boolean {
    const loc = this.#location;
    const first = loc.offset / this.#clusterSize;
    return cluster < first || cluster >= first + loc.clusters;
  }

  async #findFree(count: number): Promise<number> {
    const scan = this.#newScan();
    for (;;) {
      const free = this.#isFree(scan.next);
      const start = this.#step(scan, typeof free === 'boolean' ? free : await free, count);
      if (start >= 0) {
        // Everything below the first free cluster seen is in use: later scans start there.
        this.#freeHint = scan.firstFree;
        return start;
      }
    }
  }

  #newScan(): FreeScan {
    const first = Math.max(this.#freeHint, 1);
    return { next: first, run: 0, start: first, firstFree: -1 };
  }

  /** Give the scan whether cluster `scan.next` is free: the run's start once it is long enough, else -1. */
  #step(scan: FreeScan, free: boolean, count: number): number {
    const c = scan.next++;
    if (!free) {
      scan.run = 0;
      return -1;
    }
    if (scan.firstFree < 0) scan.firstFree = c;
    if (scan.run === 0) scan.start = c;
    return ++scan.run === count ? scan.start : -1;
  }
}

/** A search for `count` free clusters in a row, from the free hint up. */
interface FreeScan {
  /** The cluster to look at next. */
  next: number;
  /** Free clusters in a row so far, from `start`. */
  run: number;
  start: number;
  /** The first free cluster seen (-1: none yet). */
  firstFree: number;
}

