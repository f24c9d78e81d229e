/**
 * The bytes of a new qcow2 image, laid out exactly as qemu-img 7.2 lays them out.
 *
 * QEMU does not compute a layout: it writes a 3-cluster skeleton (header, refcount table,
 * one empty refcount block), opens it, and grows it with its ordinary allocator (L1 table,
 * then preallocation through the same paths guest writes take). Where things land therefore
 * depends on that allocator's details: the first-fit search from a moving free-cluster
 * index, refcount blocks that describe themselves, allocations retried after a new refcount
 * block took their place, refcount tables that move and leave their old clusters free (and
 * their old bytes on disk). This module replays those steps on a model of the allocator that
 * keeps ranges, not clusters, so planning a multi-terabyte preallocated image takes
 * milliseconds and output is generated cluster by cluster on demand.
 *
 * Browser-safe; `writeQcow2Image` needs only the Storage interface.
 */
import { Qcow2Error } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { TWO_32, viewOf } from '../../util/bytes.js';
import type { Qcow2CreateOptions } from './create-options.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  EMPTY_FEATURES,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  withBit,
  type FeatureWord,
} from './features.js';
import {
  encodeExtensions,
  encodeFeatureTable,
  EXT_BACKING_FORMAT,
  EXT_DATA_FILE,
  extensionsLength,
  QEMU_FEATURE_TABLE,
  stringExtension,
  type HeaderExtension,
} from './header-extensions.js';
import { encodeBackingName, encodeHeader, V2_HEADER_LENGTH, V3_HEADER_LENGTH, type Qcow2Header } from './header.js';
import { fillRefcounts } from './refcount-codec.js';

/** One write of a plan: `bytes` at `offset`. */
export interface LayoutWrite {
  readonly offset: number;
  readonly bytes: Uint8Array;
}

/** A range QEMU fills while growing a file: `falloc` reserves it, `full` writes zeros. */
export interface PreallocatedRange {
  readonly offset: number;
  readonly length: number;
  readonly mode: 'falloc' | 'full';
}

/** What happens to one file besides the metadata writes. */
export interface FilePlan {
  /** Final length in bytes. */
  readonly length: number;
  /** Ranges QEMU writes zeros to explicitly (copy-on-write tails, the first block of a grown empty file). */
  readonly zeroWrites: readonly { readonly offset: number; readonly length: number }[];
  /** Range grown with falloc/full preallocation, if any. */
  readonly preallocated: PreallocatedRange | undefined;
}

/** Where the structures of a planned image ended up (cluster-aligned byte offsets). */
export interface Qcow2LayoutSummary {
  readonly l1Offset: number;
  readonly l1Size: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  /** Refcount block offsets, by refcount table index (0 = none). */
  readonly refblockOffsets: readonly number[];
  /** Number of L2 tables allocated. */
  readonly l2Tables: number;
  /** Guest clusters mapped to host clusters (preallocation). */
  readonly mappedClusters: number;
  /** Host clusters with a non-zero refcount. */
  readonly allocatedClusters: number;
}

/** A planned image: call `writes()` to stream its metadata, or `writeQcow2Image`. */
export interface Qcow2ImagePlan {
  readonly options: Qcow2CreateOptions;
  /** The final header (fields as written in cluster 0). */
  readonly header: Qcow2Header;
  readonly image: FilePlan;
  /** The external data file, when `options.dataFile` is set. */
  readonly dataFile: FilePlan | undefined;
  readonly summary: Qcow2LayoutSummary;
  /**
   * Image file writes in the order they must be applied: later writes may overwrite parts
   * of earlier ones (stale refcount tables QEMU abandoned and partly reused). Generated on
   * demand, at most `MAX_WRITE` bytes each; the iterator can be run more than once.
   */
  writes(): IterableIterator<LayoutWrite>;
}

/** Largest single write `writes()` yields. */
export const MAX_WRITE = 1 << 20;

// QEMU limits (block/qcow2.h, include/block/block_int.h).
const QCOW_MAX_L1_SIZE = 0x2000000;
const QCOW_MAX_REFTABLE_SIZE = 0x800000;
const INT_MAX = 0x7fffffff;
const BDRV_REQUEST_MAX_BYTES = INT_MAX - 511;
const QCOW_MAX_CLUSTER_OFFSET = 2 ** 56 - 1;
const MAX_BACKING_NAME = 1023;
const MAX_BACKING_FORMAT = 15;
const COPIED_HI = 0x80000000;

/** Thrown (as `context.errno`) where QEMU fails with -EFBIG: qemu-img's "image size is too large". */
function efbig(what: string): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', `${what}: File too large`, { errno: 'EFBIG' });
}

/**
 * Sorted, disjoint, non-adjacent half-open ranges of cluster indexes: the clusters whose
 * refcount is 1. A fresh image never has refcounts above one.
 */
class ClusterSet {
  readonly starts: number[] = [];
  readonly ends: number[] = [];

  /** Index of the last range starting at or before `c`, or -1. */
  #find(c: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= c) {
        ans = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return ans;
  }

  has(c: number): boolean {
    const i = this.#find(c);
    return i >= 0 && c < this.ends[i]!;
  }

  get count(): number {
    let n = 0;
    for (let i = 0; i < this.starts.length; i++) n += this.ends[i]! - this.starts[i]!;
    return n;
  }

  add(a: number, b: number): void {
    if (a >= b) return;
    const i = this.#find(a);
    if ((i >= 0 && this.ends[i]! > a) || (i + 1 < this.starts.length && this.starts[i + 1]! < b)) {
      throw new Error(`internal: cluster range ${a}-${b} is already allocated`);
    }
    const joinLeft = i >= 0 && this.ends[i] === a;
    const joinRight = i + 1 < this.starts.length && this.starts[i + 1] === b;
    if (joinLeft && joinRight) {
      this.ends[i] = this.ends[i + 1]!;
      this.starts.splice(i + 1, 1);
      this.ends.splice(i + 1, 1);
    } else if (joinLeft) this.ends[i] = b;
    else if (joinRight) this.starts[i + 1] = a;
    else {
      this.starts.splice(i + 1, 0, a);
      this.ends.splice(i + 1, 0, b);
    }
  }

  remove(a: number, b: number): void {
    if (a >= b) return;
    const i = this.#find(a);
    if (i < 0 || this.ends[i]! < b) throw new Error(`internal: cluster range ${a}-${b} is not allocated`);
    const s = this.starts[i]!;
    const e = this.ends[i]!;
    const parts: [number, number][] = [];
    if (s < a) parts.push([s, a]);
    if (b < e) parts.push([b, e]);
    this.starts.splice(i, 1, ...parts.map((p) => p[0]));
    this.ends.splice(i, 1, ...parts.map((p) => p[1]));
  }

  /** First `n` free clusters in a row at or after `from` (QEMU's first-fit scan). */
  firstFreeRun(from: number, n: number): number {
    let pos = from;
    let i = this.#find(pos);
    if (i >= 0 && pos < this.ends[i]!) pos = this.ends[i]!;
    for (i = i + 1; i < this.starts.length; i++) {
      if (this.starts[i]! - pos >= n) return pos;
      pos = Math.max(pos, this.ends[i]!);
    }
    return pos;
  }

  /** How many clusters from `from` on are free, at most `max`. */
  freeRunLength(from: number, max: number): number {
    const i = this.#find(from);
    if (i >= 0 && from < this.ends[i]!) return 0;
    const next = i + 1 < this.starts.length ? this.starts[i + 1]! : Infinity;
    return Math.min(max, next - from);
  }

  /** Largest allocated cluster below `limit`, or -1. */
  lastBelow(limit: number): number {
    const i = this.#find(limit - 1);
    if (i < 0) return -1;
    return Math.min(this.ends[i]!, limit) - 1;
  }

  /** Call `fn` with every allocated sub-range of `[a, b)`. */
  forEachIn(a: number, b: number, fn: (s: number, e: number) => void): void {
    let i = Math.max(0, this.#find(a));
    for (; i < this.starts.length && this.starts[i]! < b; i++) {
      const s = Math.max(a, this.starts[i]!);
      const e = Math.min(b, this.ends[i]!);
      if (s < e) fn(s, e);
    }
  }
}

/** Guest clusters [guest, guest + count) map to host clusters [host, host + count). */
class RunList {
  guest = new Float64Array(16);
  host = new Float64Array(16);
  count = new Float64Array(16);
  length = 0;

  push(guest: number, host: number, count: number): void {
    const n = this.length;
    if (n > 0 && this.guest[n - 1]! + this.count[n - 1]! === guest && this.host[n - 1]! + this.count[n - 1]! === host) {
      this.count[n - 1]! += count;
      return;
    }
    if (n > 0 && guest < this.guest[n - 1]! + this.count[n - 1]!) throw new Error('internal: guest runs out of order');
    if (n === this.guest.length) {
      const grow = (a: Float64Array): Float64Array<ArrayBuffer> => {
        const b = new Float64Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.guest = grow(this.guest);
      this.host = grow(this.host);
      this.count = grow(this.count);
    }
    this.guest[n] = guest;
    this.host[n] = host;
    this.count[n] = count;
    this.length = n + 1;
  }

  /** Index of the first run ending after guest cluster `g`. */
  seek(g: number): number {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.guest[mid]! + this.count[mid]! <= g) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

type Again = 'again';
const AGAIN: Again = 'again';
const INV = -1;

interface Reftable {
  /** Cluster index of the table. */
  offset: number;
  /** Entries (always whole clusters). */
  size: number;
  /** Refcount block cluster index per entry; 0 = none. */
  entries: Float64Array;
}

interface MutableFilePlan {
  end: number;
  zeroWrites: { offset: number; length: number }[];
  preallocated: PreallocatedRange | undefined;
}

/** Replays qcow2_co_create + qcow2_co_truncate on a model of QEMU's allocator. */
class CreateSimulator {
  readonly cs: number;
  readonly cb: number;
  readonly order: number;
  /** Refcount entries per refcount block. */
  readonly rbEntries: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  readonly subclusterSize: number;
  readonly hasDataFile: boolean;

  readonly allocated = new ClusterSet();
  reftable: Reftable;
  maxReftableIndex = 0;
  fci = 0;
  l1Offset = 0;
  l1Size = 0;
  /** Cluster index of the L2 table for each L1 index; 0 = none. */
  l2 = new Float64Array(0);
  l2Count = 0;
  readonly runs = new RunList();
  /** Abandoned refcount tables: their bytes stay in the file unless overwritten later. */
  readonly stale: LayoutWrite[] = [];
  readonly image: MutableFilePlan = { end: 0, zeroWrites: [], preallocated: undefined };
  readonly data: MutableFilePlan = { end: 0, zeroWrites: [], preallocated: undefined };

  constructor(readonly o: Qcow2CreateOptions) {
    this.cs = o.clusterSize;
    this.cb = o.clusterBits;
    this.order = o.refcountOrder;
    this.rbEntries = (this.cs * 8) >>> this.order;
    this.l2Entries = this.cs / (o.extendedL2 ? 16 : 8);
    this.subclusterSize = o.extendedL2 ? this.cs / 32 : this.cs;
    this.hasDataFile = o.dataFile !== undefined;
    // qcow2_co_create: header cluster, then refcount table + one empty refcount block.
    const entries = new Float64Array(this.cs / 8);
    entries[0] = 2;
    this.reftable = { offset: 1, size: this.cs / 8, entries };
    this.image.end = 3 * this.cs;
  }

  // ---- the refcount allocator (block/qcow2-refcount.c) ----

  #grow(file: MutableFilePlan, end: number): void {
    if (end > file.end) file.end = end;
  }

  #writeClusters(first: number, count: number): void {
    this.#grow(this.image, (first + count) * this.cs);
  }

  /** qcow2_refcount_metadata_size(): refcount blocks and table clusters covering `clusters`. */
  metadataSize(clusters: number, generous: boolean): { blocks: number; table: number } {
    const perTable = this.cs / 8;
    let table = 0;
    let blocks = 0;
    let last: number;
    let n = 0;
    do {
      last = n;
      blocks = Math.ceil((clusters + table + blocks) / this.rbEntries);
      table = Math.ceil(blocks / perTable);
      n = clusters + blocks + table;
      if (n === last && generous) {
        clusters += Math.ceil(table / 2);
        n = 0;
        generous = false;
      }
    } while (n !== last);
    return { blocks, table };
  }

  /** alloc_clusters_noref(): first fit from the free-cluster index, which moves past it. */
  allocNoref(n: number, max: number): number {
    const start = this.allocated.firstFreeRun(this.fci, n);
    this.fci = start + n;
    if (this.fci - 1 > Math.floor(max / this.cs)) throw efbig('Cluster allocation');
    return start;
  }

  #apply(a: number, b: number, delta: 1 | -1): void {
    if (delta > 0) this.allocated.add(a, b);
    else {
      this.allocated.remove(a, b);
      if (a < b && a < this.fci) this.fci = a;
    }
  }

  /** update_refcount(): on -EAGAIN the part already changed is undone. */
  updateRefcount(first: number, count: number, delta: 1 | -1): 'ok' | Again {
    const end = first + count;
    let c = first;
    while (c < end) {
      if (this.allocRefblock(c) === AGAIN) {
        // The caller restarts its search; QEMU has it try the same clusters first.
        if (this.fci > first) this.fci = first;
        this.#apply(first, c, delta > 0 ? -1 : 1);
        return AGAIN;
      }
      const segEnd = Math.min(end, (Math.floor(c / this.rbEntries) + 1) * this.rbEntries);
      this.#apply(c, segEnd, delta);
      c = segEnd;
    }
    return 'ok';
  }

  /** alloc_refcount_block(): make sure the refcount block covering cluster `c` exists. */
  allocRefblock(c: number): 'ok' | Again {
    const ti = Math.floor(c / this.rbEntries);
    if (ti < this.reftable.size && this.reftable.entries[ti] !== 0) return 'ok';
    const block = this.allocNoref(1, Number.MAX_SAFE_INTEGER);
    const describesItself = Math.floor(block / this.rbEntries) === ti;
    if (!describesItself && this.updateRefcount(block, 1, 1) === AGAIN) return AGAIN;
    this.#writeClusters(block, 1);
    if (ti < this.reftable.size) {
      this.reftable.entries[ti] = block;
      this.maxReftableIndex = Math.max(this.maxReftableIndex, ti);
      if (describesItself) this.allocated.add(block, block + 1);
      return AGAIN;
    }
    // The refcount table is full: new self-describing structures go past everything used.
    const blocksUsed = Math.ceil(Math.max(c + 1, block + 1) / this.rbEntries);
    this.refcountArea(blocksUsed * this.rbEntries, 0, false, { index: ti, block, describesItself });
    return AGAIN;
  }

  /**
   * qcow2_refcount_area(): a new refcount table and the refcount blocks it needs, placed at
   * `start` and covering themselves plus `additional` clusters. The old table is freed.
   * Returns the first cluster after the new structures.
   */
  refcountArea(start: number, additional: number, exact: boolean, hook?: { index: number; block: number; describesItself: boolean }): number {
    const total = this.metadataSize(start + additional, !exact).blocks;
    if (total > QCOW_MAX_REFTABLE_SIZE) throw efbig('Refcount table');
    const areaIndex = Math.floor(start / this.rbEntries);
    const perCluster = this.cs / 8;
    let tableSize = exact ? total : total + Math.ceil(total / 2);
    tableSize = Math.ceil(tableSize / perCluster) * perCluster;
    const tableClusters = tableSize / perCluster;
    if (tableSize > QCOW_MAX_REFTABLE_SIZE) throw efbig('Refcount table');
    const entries = new Float64Array(tableSize);
    const keep = tableSize > this.maxReftableIndex ? this.maxReftableIndex + 1 : tableSize;
    entries.set(this.reftable.entries.subarray(0, Math.min(keep, this.reftable.size)));
    if (hook !== undefined) entries[hook.index] = hook.block;
    let newBlocks = 0;
    for (let i = areaIndex; i < total; i++) if (entries[i] === 0) newBlocks++;
    const tableOffset = start + newBlocks;
    const end = tableOffset + tableClusters;
    let blockOffset = start;
    for (let i = areaIndex; i < total; i++) if (entries[i] === 0) entries[i] = blockOffset++;
    this.#writeClusters(start, end - start);

    // Switch tables; the old one's bytes stay where they were.
    const old = this.reftable;
    this.stale.push({ offset: old.offset * this.cs, bytes: encodeReftable(old.entries, usedEntries(old.entries), this.cs) });
    this.reftable = { offset: tableOffset, size: tableSize, entries };
    this.maxReftableIndex = 0;
    for (let i = tableSize - 1; i > 0; i--) {
      if (entries[i] !== 0) {
        this.maxReftableIndex = i;
        break;
      }
    }
    if (hook?.describesItself === true) this.allocated.add(hook.block, hook.block + 1);
    this.allocated.add(start, end);
    if (this.updateRefcount(old.offset, (old.size * 8) / this.cs, -1) !== 'ok') {
      throw new Error('internal: freeing the old refcount table needed a new refcount block');
    }
    return end;
  }

  /** qcow2_alloc_clusters(). */
  allocClusters(count: number): number {
    for (;;) {
      const first = this.allocNoref(count, QCOW_MAX_CLUSTER_OFFSET);
      if (this.updateRefcount(first, count, 1) === 'ok') return first;
    }
  }

  /** qcow2_alloc_clusters_at(): as many free clusters as there are at `first`, up to `count`. */
  allocClustersAt(first: number, count: number): number {
    if (count === 0) return 0;
    for (;;) {
      const n = this.allocated.freeRunLength(first, count);
      if (this.updateRefcount(first, n, 1) === 'ok') return n;
    }
  }

  // ---- L1 and L2 (block/qcow2-cluster.c) ----

  /** qcow2_grow_l1_table(min, exact = true) on an image without an L1 table. */
  growL1(min: number): void {
    if (min <= this.l1Size) return;
    if (min > Math.floor(INT_MAX / 8)) throw efbig('L1 table');
    if (min > QCOW_MAX_L1_SIZE / 8) throw efbig('L1 table');
    const bytes = min * 8;
    const first = this.allocClusters(Math.ceil(bytes / this.cs));
    this.#grow(this.image, first * this.cs + bytes);
    this.l1Offset = first;
    this.l1Size = min;
    this.l2 = new Float64Array(min);
  }

  /** get_cluster_table(): allocate the L2 table of guest cluster `g` if missing (l2_allocate). */
  l2Table(g: number): void {
    const index = Math.floor(g / this.l2Entries);
    if (this.l2[index] !== 0) return;
    const table = this.allocClusters(1);
    this.#writeClusters(table, 1);
    this.l2[index] = table;
    this.l2Count++;
  }

  /** handle_alloc() for a fresh image; `hostHint` is where the previous piece ended, or INV. */
  #handleAlloc(guest: number, hostHint: number, bytes: number): { host: number; bytes: number } | undefined {
    const within = guest % this.cs;
    const g = (guest - within) / this.cs;
    let n = Math.ceil((within + bytes) / this.cs);
    n = Math.min(n, this.l2Entries - (g % this.l2Entries));
    n = Math.min(n, Math.floor(BDRV_REQUEST_MAX_BYTES / this.cs));
    this.l2Table(g);
    let host: number;
    if (this.hasDataFile) host = g;
    else if (hostHint === INV) host = this.allocClusters(n);
    else {
      host = Math.floor(hostHint / this.cs);
      n = this.allocClustersAt(host, n);
    }
    if (n === 0) return undefined;
    const taken = Math.min(bytes, Math.min(bytes + within, n * this.cs) - within);
    this.runs.push(g, host, n);
    // calculate_l2_meta(): the tail of a fresh last cluster is copied on write, i.e. zeroed,
    // up to the end of its (sub)cluster.
    const cowFrom = within + taken;
    const cowTo = Math.ceil(cowFrom / this.subclusterSize) * this.subclusterSize;
    if (cowTo > cowFrom) {
      const file = this.hasDataFile ? this.data : this.image;
      file.zeroWrites.push({ offset: host * this.cs + cowFrom, length: cowTo - cowFrom });
      this.#grow(file, host * this.cs + cowTo);
    }
    return { host: host * this.cs + within, bytes: taken };
  }

  /** qcow2_alloc_host_offset(): map as much of `[guest, guest + bytes)` as lands contiguously. */
  allocHostOffset(guest: number, bytes: number): { host: number; bytes: number } {
    let start = guest;
    let remaining = bytes;
    let clusterOffset = INV;
    let hostOffset = INV;
    let cur = 0;
    for (;;) {
      if (hostOffset === INV && clusterOffset !== INV) hostOffset = clusterOffset;
      start += cur;
      remaining -= cur;
      if (clusterOffset !== INV) clusterOffset += cur;
      if (remaining === 0) break;
      cur = remaining;
      // handle_copied(): nothing to keep in a fresh image, but it allocates the L2 table.
      this.l2Table(Math.floor(start / this.cs));
      const r = this.#handleAlloc(start, clusterOffset, cur);
      if (r === undefined) break;
      clusterOffset = r.host;
      cur = r.bytes;
    }
    return { host: hostOffset, bytes: bytes - remaining };
  }

  #truncate(file: MutableFilePlan, length: number, mode: 'off' | 'falloc' | 'full'): void {
    if (length <= file.end) return;
    // file-posix writes the first block when it grows an empty file without preallocation.
    if (file.end === 0 && mode === 'off') file.zeroWrites.push({ offset: 0, length: Math.min(length < 4096 ? 512 : 4096, length) });
    if (mode !== 'off') file.preallocated = { offset: file.end, length: length - file.end, mode };
    file.end = length;
  }

  /** preallocate_co(): allocate clusters for the whole disk through the write path. */
  preallocate(size: number, mode: 'metadata' | 'falloc' | 'full'): void {
    let offset = 0;
    let bytes = size;
    let host = 0;
    let cur = 0;
    const chunk = Math.floor(INT_MAX / this.cs) * this.cs;
    while (bytes > 0) {
      cur = Math.min(bytes, chunk);
      const r = this.allocHostOffset(offset, cur);
      host = r.host;
      cur = r.bytes;
      bytes -= cur;
      offset += cur;
    }
    if (size === 0) return;
    this.#truncate(this.hasDataFile ? this.data : this.image, host + cur, mode === 'metadata' ? 'off' : mode);
  }

  /** qcow2_co_truncate() with falloc/full and no data file: data clusters in one run. */
  preallocateFile(size: number, mode: 'falloc' | 'full'): void {
    const last = this.allocated.lastBelow(Math.ceil(this.image.end / this.cs));
    const oldClusters = last >= 0 ? last + 1 : Math.ceil(this.image.end / this.cs);
    const dataClusters = Math.ceil(size / this.cs);
    const l2Tables = Math.ceil(dataClusters / this.l2Entries) + 1;
    const start = this.refcountArea(oldClusters, dataClusters + l2Tables, true);
    if (this.allocClustersAt(start, dataClusters) !== dataClusters) throw new Error('internal: preallocated area not free');
    this.#truncate(this.image, (start + dataClusters) * this.cs, mode);
    let guest = 0;
    let host = start;
    let left = dataClusters;
    while (left > 0) {
      const n = Math.min(left, this.l2Entries - (guest % this.l2Entries));
      this.l2Table(guest);
      this.runs.push(guest, host, n);
      guest += n;
      host += n;
      left -= n;
    }
  }

  /** qcow2_co_create from the reopened skeleton to the truncated image. */
  run(): void {
    const o = this.o;
    if (this.allocClusters(3) !== 0) throw new Error('internal: first cluster in use');
    const l1Size = Math.ceil(o.size / (this.cs * this.l2Entries));
    this.growL1(l1Size);
    switch (o.preallocation) {
      case 'off':
        if (this.hasDataFile) this.#truncate(this.data, o.size, 'off');
        break;
      case 'metadata':
        this.preallocate(o.size, 'metadata');
        break;
      default:
        if (this.hasDataFile) this.preallocate(o.size, o.preallocation);
        else this.preallocateFile(o.size, o.preallocation);
    }
  }
}

/**
 * Entries up to the last non-zero one. A new image uses a few entries of its tables; loops
 * over all of them (8,192 for 64 KiB clusters) cost milliseconds in code V8 has not compiled yet.
 */
function usedEntries(entries: Float64Array): number {
  let n = entries.length;
  while (n > 0 && entries[n - 1] === 0) n--;
  return n;
}

/** The refcount table's clusters, from its first `used` entries (the rest are zero). */
function encodeReftable(entries: Float64Array, used: number, clusterSize: number): Uint8Array {
  const bytes = new Uint8Array(Math.ceil((entries.length * 8) / clusterSize) * clusterSize);
  const v = viewOf(bytes);
  for (let i = 0; i < used; i++) {
    const c = entries[i]!;
    if (c === 0) continue;
    const off = c * clusterSize;
    v.setUint32(i * 8, Math.floor(off / TWO_32));
    v.setUint32(i * 8 + 4, off >>> 0);
  }
  return bytes;
}

function headerExtensions(o: Qcow2CreateOptions): HeaderExtension[] {
  const exts: HeaderExtension[] = [];
  if (o.backingFile !== undefined && o.backingFormat !== undefined) {
    // QEMU keeps the format in a 16-byte buffer.
    exts.push(stringExtension(EXT_BACKING_FORMAT, truncateUtf8(o.backingFormat, MAX_BACKING_FORMAT)));
  }
  if (o.dataFile !== undefined) exts.push(stringExtension(EXT_DATA_FILE, o.dataFile));
  // QEMU leaves the feature table out of small clusters to keep room for a backing file name.
  if (o.version >= 3 && o.clusterSize > 4096) exts.push(encodeFeatureTable(QEMU_FEATURE_TABLE));
  return exts;
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  return bytes.byteLength <= maxBytes ? text : new TextDecoder().decode(bytes.subarray(0, maxBytes));
}

function features(o: Qcow2CreateOptions): { incompatible: FeatureWord; compatible: FeatureWord; autoclear: FeatureWord } {
  let incompatible = EMPTY_FEATURES;
  if (o.dataFile !== undefined) incompatible = withBit(incompatible, INCOMPAT_DATA_FILE, true);
  if (o.compressionType === 'zstd') incompatible = withBit(incompatible, INCOMPAT_COMPRESSION, true);
  if (o.extendedL2) incompatible = withBit(incompatible, INCOMPAT_EXTL2, true);
  const compatible = o.lazyRefcounts ? withBit(EMPTY_FEATURES, COMPAT_LAZY_REFCOUNTS, true) : EMPTY_FEATURES;
  const autoclear = o.dataFileRaw ? withBit(EMPTY_FEATURES, AUTOCLEAR_DATA_FILE_RAW, true) : EMPTY_FEATURES;
  return { incompatible, compatible, autoclear };
}

/** Bytes qcow2_update_header() needs in cluster 0 for these options. */
function headerBytesNeeded(o: Qcow2CreateOptions, withBacking: boolean): number {
  const fixed = o.version === 2 ? V2_HEADER_LENGTH : V3_HEADER_LENGTH;
  const exts = headerExtensions(withBacking ? o : { ...o, backingFile: undefined });
  const name = withBacking && o.backingFile !== undefined ? new TextEncoder().encode(o.backingFile).byteLength : 0;
  return fixed + extensionsLength(exts) + name;
}

/**
 * Plan a new qcow2 image: the exact bytes qemu-img 7.2 writes for `options`. Throws
 * Qcow2Error('INVALID_ARGUMENT') where qemu-img fails: `context.errno` is 'EFBIG' when the
 * image is too large for its cluster size, 'ENOSPC' when names do not fit in cluster 0,
 * 'EINVAL' for a backing file name longer than 1023 bytes. The message then is QEMU's text
 * after the operation ("Could not update qcow2 header: No space left on device").
 *
 * @example
 * ```ts
 * const plan = planQcow2Image(resolveQcow2CreateOptions({ size: 1 << 30, preallocation: 'metadata' }));
 * await writeQcow2Image(plan, storage);
 * ```
 */
export function planQcow2Image(options: Qcow2CreateOptions): Qcow2ImagePlan {
  const o = options;
  if (headerBytesNeeded(o, false) > o.clusterSize) {
    throw new Qcow2Error('INVALID_ARGUMENT', 'Could not update qcow2 header: No space left on device', { errno: 'ENOSPC' });
  }
  if (o.size >= 2 ** 63) {
    throw new Qcow2Error('INVALID_ARGUMENT', 'Could not resize image: Image size cannot be negative', { errno: 'EINVAL' });
  }
  const sim = new CreateSimulator(o);
  sim.run();
  if (o.backingFile !== undefined) {
    const fail = (why: string, errno: string): Qcow2Error =>
      new Qcow2Error(
        'INVALID_ARGUMENT',
        `Could not assign backing file '${o.backingFile}' with format '${o.backingFormat ?? '(null)'}': ${why}`,
        { errno },
      );
    if (new TextEncoder().encode(o.backingFile).byteLength > MAX_BACKING_NAME) throw fail('Invalid argument', 'EINVAL');
    if (headerBytesNeeded(o, true) > o.clusterSize) throw fail('No space left on device', 'ENOSPC');
  }

  const cs = o.clusterSize;
  const f = features(o);
  const exts = headerExtensions(o);
  const headerLength = o.version === 2 ? V2_HEADER_LENGTH : V3_HEADER_LENGTH;
  const backingOffset = o.backingFile !== undefined ? headerLength + extensionsLength(exts) : 0;
  const header: Qcow2Header = {
    version: o.version,
    backingFileOffset: backingOffset,
    backingFileSize: o.backingFile !== undefined ? new TextEncoder().encode(o.backingFile).byteLength : 0,
    clusterBits: o.clusterBits,
    size: o.size,
    cryptMethod: 0,
    l1Size: sim.l1Size,
    l1TableOffset: sim.l1Offset * cs,
    refcountTableOffset: sim.reftable.offset * cs,
    refcountTableClusters: (sim.reftable.size * 8) / cs,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: o.version === 3 ? f.incompatible : EMPTY_FEATURES,
    compatibleFeatures: o.version === 3 ? f.compatible : EMPTY_FEATURES,
    autoclearFeatures: o.version === 3 ? f.autoclear : EMPTY_FEATURES,
    refcountOrder: o.refcountOrder,
    headerLength,
    compressionType: o.compressionType === 'zstd' ? 1 : 0,
    unknownFields: new Uint8Array(0),
  };

  const reftableUsed = usedEntries(sim.reftable.entries);
  const refblockOffsets = Array.from(sim.reftable.entries.subarray(0, reftableUsed), (c) => c * cs);
  const summary: Qcow2LayoutSummary = {
    l1Offset: sim.l1Offset * cs,
    l1Size: sim.l1Size,
    refcountTableOffset: sim.reftable.offset * cs,
    refcountTableClusters: (sim.reftable.size * 8) / cs,
    refblockOffsets,
    l2Tables: sim.l2Count,
    mappedClusters: (() => {
      let n = 0;
      for (let i = 0; i < sim.runs.length; i++) n += sim.runs.count[i]!;
      return n;
    })(),
    allocatedClusters: sim.allocated.count,
  };

  const imageZero = [...sim.image.zeroWrites];
  const image: FilePlan = { length: sim.image.end, zeroWrites: imageZero, preallocated: sim.image.preallocated };
  let dataFile: FilePlan | undefined;
  if (o.dataFile !== undefined) {
    dataFile = { length: sim.data.end, zeroWrites: [...sim.data.zeroWrites], preallocated: sim.data.preallocated };
  }

  function* writes(): IterableIterator<LayoutWrite> {
    yield* sim.stale;
    const cluster0 = new Uint8Array(cs);
    const end = encodeExtensions(exts, cluster0, encodeHeader(header, cluster0));
    if (o.backingFile !== undefined) cluster0.set(encodeBackingName(o.backingFile), end);
    yield { offset: 0, bytes: cluster0 };
    yield { offset: sim.reftable.offset * cs, bytes: encodeReftable(sim.reftable.entries, reftableUsed, cs) };
    for (let i = 0; i < reftableUsed; i++) {
      const c = sim.reftable.entries[i]!;
      if (c === 0) continue;
      const block = new Uint8Array(cs);
      const base = i * sim.rbEntries;
      sim.allocated.forEachIn(base, base + sim.rbEntries, (a, b) => fillRefcounts(block, o.refcountOrder, a - base, b - base, 1));
      yield { offset: c * cs, bytes: block };
    }
    if (sim.l1Size > 0) yield* l1Writes(sim, cs);
    yield* l2Writes(sim, o);
  }

  return { options, header, image, dataFile, summary, writes };
}

function* l1Writes(sim: CreateSimulator, cs: number): IterableIterator<LayoutWrite> {
  const perWrite = MAX_WRITE / 8;
  for (let first = 0; first < sim.l1Size; first += perWrite) {
    const n = Math.min(perWrite, sim.l1Size - first);
    const bytes = new Uint8Array(n * 8);
    const v = viewOf(bytes);
    for (let i = 0; i < n; i++) {
      const c = sim.l2[first + i]!;
      if (c === 0) continue;
      const off = c * cs;
      v.setUint32(i * 8, (COPIED_HI | Math.floor(off / TWO_32)) >>> 0);
      v.setUint32(i * 8 + 4, off >>> 0);
    }
    yield { offset: sim.l1Offset * cs + first * 8, bytes };
  }
}

function* l2Writes(sim: CreateSimulator, o: Qcow2CreateOptions): IterableIterator<LayoutWrite> {
  const cs = o.clusterSize;
  const entrySize = o.extendedL2 ? 16 : 8;
  const runs = sim.runs;
  for (let j = 0; j < sim.l1Size; j++) {
    const table = sim.l2[j]!;
    if (table === 0) continue;
    const bytes = new Uint8Array(cs);
    const v = viewOf(bytes);
    const first = j * sim.l2Entries;
    const last = first + sim.l2Entries;
    for (let r = runs.seek(first); r < runs.length && runs.guest[r]! < last; r++) {
      const g0 = Math.max(first, runs.guest[r]!);
      const g1 = Math.min(last, runs.guest[r]! + runs.count[r]!);
      // Entries step by one cluster: carry from the low word into the high word by hand.
      const off = (runs.host[r]! + (g0 - runs.guest[r]!)) * cs;
      let hi = (COPIED_HI | Math.floor(off / TWO_32)) >>> 0;
      let lo = off % TWO_32;
      for (let at = (g0 - first) * entrySize, end = (g1 - first) * entrySize; at < end; at += entrySize) {
        v.setUint32(at, hi);
        v.setUint32(at + 4, lo);
        lo += cs;
        if (lo >= TWO_32) {
          lo -= TWO_32;
          hi++;
        }
      }
    }
    yield { offset: table * cs, bytes };
  }
}

/** Bytes of zeros reused for zero fills. */
const ZERO_CHUNK = 1 << 20;

async function writeZeros(storage: Storage, offset: number, length: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(ZERO_CHUNK, length));
  for (let done = 0; done < length; done += zeros.byteLength) {
    const n = Math.min(zeros.byteLength, length - done);
    await storage.write(n === zeros.byteLength ? zeros : zeros.subarray(0, n), offset + done);
  }
}

/**
 * Write a planned image to empty storages. Metadata writes are coalesced into writes of up
 * to 1 MiB. `full` preallocation writes zeros; `falloc` only sets the length (the Storage
 * interface has no way to reserve space). The data file storage is required when the plan
 * has one.
 *
 * @example
 * ```ts
 * const image = new MemoryStorage();
 * await writeQcow2Image(planQcow2Image(options), image);
 * ```
 */
export async function writeQcow2Image(plan: Qcow2ImagePlan, image: Storage, dataFile?: Storage): Promise<void> {
  await applyFilePlanStart(image, plan.image);
  let pending: LayoutWrite[] = [];
  let pendingEnd = -1;
  let pendingBytes = 0;
  const flush = async (): Promise<void> => {
    if (pending.length === 0) return;
    const first = pending[0]!;
    if (pending.length === 1) await image.write(first.bytes, first.offset);
    else {
      const buf = new Uint8Array(pendingBytes);
      let at = 0;
      for (const w of pending) {
        buf.set(w.bytes, at);
        at += w.bytes.byteLength;
      }
      await image.write(buf, first.offset);
    }
    pending = [];
    pendingBytes = 0;
  };
  for (const w of plan.writes()) {
    if (w.offset !== pendingEnd || pendingBytes + w.bytes.byteLength > MAX_WRITE) await flush();
    if (pending.length === 0) pendingEnd = w.offset;
    pending.push(w);
    pendingBytes += w.bytes.byteLength;
    pendingEnd += w.bytes.byteLength;
  }
  await flush();
  await applyFilePlanEnd(image, plan.image);
  if (plan.dataFile !== undefined) {
    if (dataFile === undefined) throw new TypeError('writeQcow2Image: the plan has a data file but no storage was given for it');
    await applyFilePlanStart(dataFile, plan.dataFile);
    await applyFilePlanEnd(dataFile, plan.dataFile);
  }
}

/** Preallocate (zero-fill for `full`) before the metadata is written over it. */
async function applyFilePlanStart(storage: Storage, plan: FilePlan): Promise<void> {
  const p = plan.preallocated;
  if (p !== undefined && p.mode === 'full') await writeZeros(storage, p.offset, p.length);
}

/** Explicit zero writes, then the final length. */
async function applyFilePlanEnd(storage: Storage, plan: FilePlan): Promise<void> {
  for (const z of plan.zeroWrites) await writeZeros(storage, z.offset, z.length);
  if ((await storage.size()) !== plan.length) await storage.resize(plan.length);
}
