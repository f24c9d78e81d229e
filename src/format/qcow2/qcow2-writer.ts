import { Qcow2Error } from '../../errors.js';
import { AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, hasBit, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, withBit } from './features.js';
import { OverlapCheck } from './overlap-check.js';
import { tableViews } from './table-views.js';
import type { Qcow2Bitmaps } from './bitmaps.js';
import { encodeSnapshotTable } from './snapshot-table.js';
import { encodeHeader } from './header.js';
import { encodeExtensions, EXT_BACKING_FORMAT, extensionsLength, stringExtension } from './header-extensions.js';
import { encodeText, viewOf } from '../../util/bytes.js';
import type { Qcow2State } from './qcow2-state.js';
import type { BelowReader, DriverWriter } from '../driver.js';
import { compressedClusters, decodeCompressed, encodeCompressed, encodeStandard, MAX_HOST_OFFSET, entryOffset, isCompressed, isCopied, isZeroFlag } from './table-entries.js';


/** One L2 entry as found before a write changes it. */
interface OldEntry {
  hi: number;
  lo: number;
  /** Extended L2 bitmap words. */
  zeroBits: number;
  allocBits: number;
}

/** How one run of a write is carried out. */
type Plan =
  | { kind: 'inplace'; host: number; firstCluster: number; old: OldEntry[]; length: number }
  | { kind: 'alloc'; host: number; clusters: number; firstCluster: number; old: OldEntry[]; length: number };

const ALL_SUBCLUSTERS = 0xffffffff;

/**
 * The qcow2 write path: allocation, copy-on-write, zero and discard, and the ordered
 * write-back of metadata (see Refcounts for the crash-safety argument). Callers (the Image
 * engine) hold a guest-cluster range lock, so two writes never race on the same cluster.
 */
export class Qcow2Writer implements DriverWriter {
  readonly #s: Qcow2State;
  #hasBacking: boolean;
  #dirtyBitSet = false;
  /** Next free byte in the host cluster compressed clusters are being packed into (0 = none). */
  #byteCursor = 0;
  /** Settles when the previous compressed write has taken its host bytes (see writeCompressed). */
  #compressedTurn: Promise<void> = Promise.resolve();
  /** Clusters still named by the on-disk header until the next flush rewrites it. */
  #freeAfterHeader: [number, number][] = [];

  readonly #overlap: OverlapCheck;
  /** Persistent dirty bitmaps, marked on every guest write (set by the driver). */
  bitmaps: Qcow2Bitmaps | undefined;
  /** Set once metadata inconsistency was found: no further writes. */
  #corrupt = false;

  constructor(state: Qcow2State, hasBacking: boolean) {
    this.#s = state;
    this.#hasBacking = hasBacking;
    this.#overlap = new OverlapCheck(state, () => {
      const sn = state.meta.snapshots;
      return sn.length > 0 ? encodeSnapshotTable(sn).byteLength : 0;
    });
  }

  /** Whole tables were replaced (snapshots): drop derived views of the metadata. */
  metadataMoved(): void {
    this.#overlap.reset();
  }

  /**
   * Refuse a data write that would land on metadata: mark the image corrupt (as QEMU does)
   * instead of damaging it.
   */
  async #guard(hostOffset: number, length: number): Promise<void> {
    if (this.#external) return;
    const hit = this.#overlap.check(hostOffset, length);
    if (hit !== undefined) await this.#refuse(hit, hostOffset, length);
  }

  /** Mark the image corrupt and fail: a write to `hostOffset` would hit the metadata `hit`. */
  async #refuse(hit: string, hostOffset: number, length: number): Promise<never> {
    const message = `Preventing invalid write on metadata (overlaps with ${hit})`;
    await this.#markCorrupt(message);
    throw new Qcow2Error('CORRUPT', message, { hostOffset, length, structure: hit });
  }

  async #markCorrupt(reason: string): Promise<void> {
    if (this.#corrupt) return;
    this.#corrupt = true;
    const h = this.#s.meta.header;
    if (h.version < 3) return;
    h.incompatibleFeatures = withBit(h.incompatibleFeatures, INCOMPAT_CORRUPT, true);
    await this.#writeHeader();
    await this.#s.storage.flush();
    void reason;
  }

  /** Writable-open housekeeping, as QEMU does: unknown (and unmaintained) autoclear bits are cleared. */
  async prepare(): Promise<void> {
    const h = this.#s.meta.header;
    if (hasBit(h.incompatibleFeatures, INCOMPAT_DIRTY)) {
      // Refcounts of a crashed lazy-refcounts writer cannot be trusted for allocation.
      throw new Qcow2Error('CORRUPT', "Image is dirty (lazy refcounts after an unclean shutdown); repair it with 'check -r all' first", { dirty: true });
    }
    if (h.version === 3) {
      const keep = { hi: 0, lo: h.autoclearFeatures.lo & ((1 << AUTOCLEAR_DATA_FILE_RAW) | (1 << AUTOCLEAR_BITMAPS)) };
      if (keep.lo !== h.autoclearFeatures.lo || h.autoclearFeatures.hi !== 0) {
        h.autoclearFeatures = keep;
        await this.#writeHeader();
        await this.#s.storage.flush();
      }
    }
  }

  get #external(): boolean {
    return this.#s.meta.dataStorage !== this.#s.storage;
  }

  get #ext(): boolean {
    return this.#s.meta.extendedL2;
  }

  /** Write guest data, allocating and copying on write as needed. */
  writeData(offset: number, src: Uint8Array, below: BelowReader, placed?: () => void): Promise<void> {
    this.bitmaps?.markDirty(offset, src.byteLength);
    return this.#writeNow(offset, src, placed) ?? this.#writeData(offset, src, below, placed);
  }

  /**
   * The common write with no await but the data's: clusters all ours (written in place) or
   * all fresh and covered whole (allocated, nothing to copy), in one cached L2 table of ours,
   * while nothing holds the metadata lock (so this acts as a holder). `undefined`, with
   * nothing changed, when the write needs the general path. Per request this saves a dozen
   * awaits, most of the main thread's work in `bench -w`.
   */
  #writeNow(offset: number, src: Uint8Array, placed: (() => void) | undefined): Promise<void> | undefined {
    const s = this.#s;
    if (!s.lock.idle || this.#ext || this.#external || !this.#metadataReady()) return undefined;
    const cs = s.clusterSize;
    const l2Entries = s.meta.l2Entries;
    const end = offset + src.byteLength;
    const first = Math.floor(offset / cs);
    const count = Math.floor((end - 1) / cs) - first + 1;
    const l1Index = Math.floor(first / l2Entries);
    if (Math.floor((first + count - 1) / l2Entries) !== l1Index) return undefined;
    const l2Offset = this.#ownedL2(l1Index);
    const bytes = l2Offset === 0 ? undefined : s.l2.peek(l2Offset);
    if (bytes === undefined) return undefined;
    const table = tableViews(bytes).view;
    const at = (first % l2Entries) * 8;
    const hi0 = table.getUint32(at);
    const host0 = entryOffset(hi0, table.getUint32(at + 4));
    let host: number;
    if (host0 !== 0) {
      // In place: every cluster plain data of ours, contiguous on the host.
      for (let i = 0; i < count; i++) {
        const hi = table.getUint32(at + i * 8);
        const lo = table.getUint32(at + i * 8 + 4);
        if (!isCopied(hi) || isCompressed(hi) || isZeroFlag(lo) || entryOffset(hi, lo) !== host0 + i * cs) return undefined;
      }
      if (host0 % cs !== 0 || host0 > MAX_HOST_OFFSET) return undefined;
      host = host0 + (offset - first * cs);
    } else {
      // Fresh clusters covered whole: unallocated or zero without a host cluster.
      if (offset % cs !== 0 || end % cs !== 0) return undefined;
      for (let i = 0; i < count; i++) {
        const hi = table.getUint32(at + i * 8);
        if (isCompressed(hi) || entryOffset(hi, table.getUint32(at + i * 8 + 4)) !== 0) return undefined;
      }
      const fresh = this.#refcounts().allocateNow(count);
      if (fresh === undefined) return undefined;
      host = fresh;
    }
    placed?.();
    const hit = this.#overlap.check(host, src.byteLength);
    if (hit !== undefined) return this.#refuse(hit, host, src.byteLength);
    const written = s.storage.write(src, host);
    return host0 !== 0 ? written : written.then(() => this.#mapFresh(l1Index, first, count, host));
  }

  /** Point fresh guest clusters at their (written) host clusters. */
  #mapFresh(l1Index: number, first: number, count: number, host: number): Promise<void> | undefined {
    const s = this.#s;
    const l2Offset = s.lock.idle ? this.#ownedL2(l1Index) : 0;
    const bytes = l2Offset === 0 ? undefined : s.l2.peek(l2Offset);
    if (bytes !== undefined) {
      this.#setFresh(tableViews(bytes).view, l2Offset, first, count, host);
      return s.l2.overBudget ? this.flush() : undefined;
    }
    // The table moved meanwhile (a snapshot shares it now, or it left the cache).
    return s.lock
      .run(async () => {
        const { offset, table } = await this.#writableL2(l1Index);
        this.#setFresh(table, offset, first, count, host);
      })
      .then(() => this.#relieveCaches());
  }

  /** Set the entries of `count` guest clusters from `first` to host clusters from `host`. */
  #setFresh(table: DataView, l2Offset: number, first: number, count: number, host: number): void {
    const s = this.#s;
    const l2Entries = s.meta.l2Entries;
    for (let i = 0; i < count; i++) {
      const [hi, lo] = encodeStandard(host + i * s.clusterSize, true);
      this.#setEntry(table, (first + i) % l2Entries, hi, lo, 0, 0);
    }
    s.l2.markDirty(l2Offset);
  }

  /** Offset of the L2 table for `l1Index` when it exists, is ours alone (COPIED) and well placed; else 0. */
  #ownedL2(l1Index: number): number {
    const s = this.#s;
    if (l1Index >= s.l1Entries) return 0;
    const hi = s.l1.getUint32(l1Index * 8);
    if (!isCopied(hi)) return 0;
    const off = entryOffset(hi, s.l1.getUint32(l1Index * 8 + 4));
    return off % s.clusterSize === 0 && off <= MAX_HOST_OFFSET ? off : 0;
  }

  /** True when #beforeMetadataChange has nothing to do (no throw, no dirty bit to set). */
  #metadataReady(): boolean {
    const h = this.#s.meta.header;
    return !this.#s.readOnly && !this.#corrupt && (this.#dirtyBitSet || h.version < 3 || !hasBit(h.compatibleFeatures, COMPAT_LAZY_REFCOUNTS));
  }

  async #writeData(offset: number, src: Uint8Array, below: BelowReader, placed: (() => void) | undefined): Promise<void> {
    await this.#beforeMetadataChange();
    let pos = offset;
    const end = offset + src.byteLength;
    while (pos < end) {
      pos += await this.#writeRun(pos, src.subarray(pos - offset), below, end, placed);
    }
    await this.#relieveCaches();
  }

  /** Make a range read as zeros: zero flags for whole clusters, explicit zeros elsewhere. */
  async writeZeroes(offset: number, length: number, unmap: boolean, below: BelowReader): Promise<void> {
    this.bitmaps?.markDirty(offset, length);
    const s = this.#s;
    const cs = s.clusterSize;
    const end = offset + length;
    const explicit = async (from: number, to: number): Promise<void> => {
      for (let p = from; p < to; p += 4 << 20) {
        const n = Math.min(4 << 20, to - p);
        await this.writeData(p, new Uint8Array(n), below);
      }
    };
    // v2 has no zero flag; a raw external data file must hold the zeros itself.
    if (s.meta.header.version === 2 || s.meta.dataFileRaw) {
      await explicit(offset, end);
      return;
    }
    const first = Math.ceil(offset / cs) * cs;
    const last = Math.floor(end / cs) * cs;
    if (first >= last) {
      await explicit(offset, end);
      return;
    }
    if (offset < first) await explicit(offset, first);
    await this.#beforeMetadataChange();
    await this.#forClusters(first, last, (table, index, old) => {
      const type = this.#clusterType(old);
      const doUnmap = type === 'compressed' || (unmap && (type === 'normal' || type === 'zero-alloc'));
      let hi = doUnmap ? 0 : old.hi;
      let lo = doUnmap ? 0 : old.lo;
      let zeroBits = old.zeroBits;
      let allocBits = old.allocBits;
      if (this.#ext) {
        zeroBits = ALL_SUBCLUSTERS;
        allocBits = 0;
      } else {
        lo = (lo | 1) >>> 0;
      }
      this.#setEntry(table, index, hi, lo, zeroBits, allocBits);
      return doUnmap ? old : undefined;
    });
    if (last < end) await explicit(last, end);
    await this.#relieveCaches();
  }

  /** Discard whole clusters (partial clusters are left alone, as QEMU does). */
  async discard(offset: number, length: number, full = false): Promise<void> {
    if (!full) this.bitmaps?.markDirty(offset, length);
    const s = this.#s;
    const cs = s.clusterSize;
    const first = Math.ceil(offset / cs) * cs;
    const size = s.meta.header.size;
    // A full discard up to the end of the disk takes the partial last cluster too, as QEMU's.
    const last = full && offset + length >= size ? Math.ceil(size / cs) * cs : Math.floor((offset + length) / cs) * cs;
    if (first >= last) return;
    // Without the zero flag (v2), dropping a cluster would expose the backing file: QEMU
    // refuses such discards, which leaves the data as it was.
    if (!full && s.meta.header.version < 3 && this.#hasBacking) return;
    await this.#beforeMetadataChange();
    await this.#forClusters(first, last, (table, index, old) => {
      const type = this.#clusterType(old);
      const allocated = type === 'normal' || type === 'zero-alloc' || type === 'compressed';
      if (this.#external && full) {
        this.#setEntry(table, index, 0, 0, 0, 0);
      } else if (this.#external) {
        // QEMU drops the mapping and marks the cluster zero; the data file keeps no trace.
        if (this.#ext) this.#setEntry(table, index, 0, 0, ALL_SUBCLUSTERS, 0);
        else this.#setEntry(table, index, 0, 1, 0, 0);
      } else if (full) {
        this.#setEntry(table, index, 0, 0, 0, 0);
      } else if (this.#hasBacking || allocated) {
        if (this.#ext) this.#setEntry(table, index, 0, 0, ALL_SUBCLUSTERS, 0);
        else this.#setEntry(table, index, 0, s.meta.header.version >= 3 ? 1 : 0, 0, 0);
      } else {
        return undefined;
      }
      return allocated ? old : undefined;
    });
    // A raw data file must read as the guest sees it: zeros.
    if (s.meta.dataFileRaw) await this.#zeroHost(first, last - first);
    await this.#relieveCaches();
  }

  async #zeroHost(offset: number, length: number): Promise<void> {
    const ds = this.#s.meta.dataStorage;
    if (ds.writeZeroes !== undefined) return ds.writeZeroes(offset, length);
    for (let p = offset; p < offset + length; p += 4 << 20) await ds.write(new Uint8Array(Math.min(4 << 20, offset + length - p)), p);
  }

  /**
   * Write one cluster compressed, packed after the previous compressed cluster in a shared
   * host cluster the way QEMU does. Falls back to a normal write when it does not compress.
   */
  async writeCompressed(offset: number, src: Uint8Array): Promise<void> {
    this.bitmaps?.markDirty(offset, src.byteLength);
    const s = this.#s;
    const cs = s.clusterSize;
    if (offset % cs !== 0 || src.byteLength > cs || (src.byteLength < cs && offset + src.byteLength !== s.meta.header.size)) {
      throw new Qcow2Error('INVALID_ARGUMENT', 'Compressed writes must cover whole clusters', { offset, length: src.byteLength });
    }
    if (this.#external) throw new Qcow2Error('UNSUPPORTED', 'Compressed writes are not supported with an external data file', {});
    await this.#beforeMetadataChange();
    let full = src;
    if (src.byteLength < cs) {
      full = new Uint8Array(cs);
      full.set(src);
    }
    // Clusters compress in parallel but take host space in call order, so the same writes
    // always produce the same file (completion order varies from run to run).
    const previous = this.#compressedTurn;
    let endTurn!: () => void;
    this.#compressedTurn = new Promise<void>((resolve) => (endTurn = resolve));
    let packed: Uint8Array | undefined;
    let host: number;
    try {
      packed = await s.compressor.compress(full);
      await previous;
      if (packed === undefined) {
        await this.writeData(offset, src, async (dst) => void dst.fill(0));
        return;
      }
      host = await this.#allocateCompressed(offset, packed.byteLength);
    } finally {
      endTurn();
    }
    await this.#guard(host, packed.byteLength);
    await s.storage.write(packed, host);
    const stored = packed;
    const l2Entries = s.meta.l2Entries;
    const cluster = offset / cs;
    await s.lock.run(async () => {
      const { offset: l2Offset, table } = await this.#writableL2(Math.floor(cluster / l2Entries));
      const [hi, lo] = encodeCompressed(host, stored.byteLength, s.clusterBits);
      this.#setEntry(table, cluster % l2Entries, hi, lo, 0, 0);
      s.l2.markDirty(l2Offset);
    });
    await this.#relieveCaches();
  }

  /** Host bytes for a compressed cluster at guest `offset`, which must be unallocated or zero. */
  #allocateCompressed(offset: number, length: number): Promise<number> {
    const s = this.#s;
    const l2Entries = s.meta.l2Entries;
    const cluster = offset / s.clusterSize;
    return s.lock.run(async () => {
      const { table } = await this.#writableL2(Math.floor(cluster / l2Entries));
      const type = this.#clusterType(this.#readEntry(table, cluster % l2Entries));
      if (type !== 'unallocated' && type !== 'zero') {
        // QEMU fails these with EIO as well: compressed data only goes into fresh clusters.
        throw new Qcow2Error('IO', 'Compressed writes are only possible to unallocated clusters', { offset });
      }
      return this.#allocateBytes(length);
    });
  }

  /**
   * Byte allocation for compressed clusters, as QEMU's qcow2_alloc_bytes: continue right after
   * the previous compressed cluster, spilling into the next host cluster when that one is
   * contiguous; each host cluster's refcount counts the compressed clusters touching it.
   */
  async #allocateBytes(length: number): Promise<number> {
    const rc = this.#refcounts();
    const cs = this.#s.clusterSize;
    const off = this.#byteCursor;
    const current = Math.floor(off / cs) * cs;
    if (off !== 0 && off % cs !== 0 && (await rc.get(current / cs)) < rc.refcountMax) {
      const free = cs - (off % cs);
      if (length <= free) {
        await rc.addRef(current, 1);
        this.#byteCursor = off + length;
        return off;
      }
      const extra = Math.ceil((length - free) / cs);
      const next = await rc.allocate(extra);
      if (next === current + cs) {
        await rc.addRef(current, 1);
        this.#byteCursor = off + length;
        return off;
      }
      await rc.free(next, extra);
    }
    const fresh = await rc.allocate(Math.ceil(length / cs));
    this.#byteCursor = fresh + length;
    return fresh;
  }


  /**
   * Point the image at another backing file (or none), rewriting cluster 0 the way QEMU does:
   * header, extensions (backing format replaced), end marker, then the backing file name.
   */
  async setBacking(name: string | undefined, format: string | undefined): Promise<void> {
    const s = this.#s;
    const h = s.meta.header;
    if (name !== undefined && encodeText(name).byteLength > 1023) throw new Qcow2Error('INVALID_ARGUMENT', 'Backing file name too long', {});
    if (name !== undefined && s.meta.dataFileRaw) {
      throw new Qcow2Error('INVALID_ARGUMENT', 'data-file-raw cannot be combined with a backing file', {});
    }
    await this.#beforeMetadataChange();
    await s.lock.run(async () => {
      const exts = s.meta.extensions.filter((e) => e.type !== EXT_BACKING_FORMAT);
      if (name !== undefined && format !== undefined) exts.unshift(stringExtension(EXT_BACKING_FORMAT, format));
      const nameBytes = encodeText(name ?? '');
      const cluster0 = new Uint8Array(s.clusterSize);
      const extStart = h.version === 2 ? 72 : h.headerLength;
      if (extStart + extensionsLength(exts) + nameBytes.byteLength > s.clusterSize) {
        throw new Qcow2Error('INVALID_ARGUMENT', 'Header extensions and backing file name do not fit in the first cluster', {});
      }
      const nameAt = encodeExtensions(exts, cluster0, extStart);
      h.backingFileOffset = name === undefined ? 0 : nameAt;
      h.backingFileSize = name === undefined ? 0 : nameBytes.byteLength;
      cluster0.set(nameBytes, nameAt);
      encodeHeader(h, cluster0);
      // Everything else must be on disk first: the new header is the commit point.
      await this.flushLocked();
      await s.storage.write(cluster0, 0);
      await s.storage.flush();
      s.meta.extensions = exts;
      this.#hasBacking = name !== undefined;
      s.meta.backingName = name;
      s.meta.backingFormat = name === undefined ? undefined : format;
    });
  }

  /**
   * Change the virtual size. Growing makes the new area read as zeros even where a longer
   * backing file has data (QEMU iotest 292); shrinking frees every cluster past the end.
   */
  async resize(size: number, below: BelowReader, belowSize: number | undefined): Promise<void> {
    const s = this.#s;
    const h = s.meta.header;
    const old = h.size;
    const cs = s.clusterSize;
    if (size === old) return;
    if (h.version === 2 && s.meta.snapshots.length > 0) {
      throw new Qcow2Error('UNSUPPORTED', "Can't resize a v2 image which has snapshots", {});
    }
    if (size < old && s.meta.snapshots.length > 0) {
      throw new Qcow2Error('UNSUPPORTED', "Can't shrink an image which has snapshots", {});
    }
    await this.bitmaps?.beforeResize();
    await this.#beforeMetadataChange();
    const l2Span = cs * s.meta.l2Entries;
    if (size > old) {
      const needed = Math.ceil(size / l2Span);
      if (needed > s.l1Entries) await s.lock.run(() => this.#growL1(needed));
      if (this.#external) await s.meta.dataStorage.resize(Math.max(size, await s.meta.dataStorage.size()));
      h.size = size;
      s.headerDirty = true;
      // The old partial last cluster and a longer backing file must not show through.
      const zeroEnd = Math.min(size, Math.max(Math.ceil(old / cs) * cs, belowSize ?? 0));
      if (zeroEnd > old) await this.writeZeroes(old, zeroEnd - old, false, below);
      this.bitmaps?.afterResize(size);
      return;
    }
    const firstWhole = Math.ceil(size / cs) * cs;
    const oldEnd = Math.ceil(old / cs) * cs;
    if (firstWhole < oldEnd) await this.discard(firstWhole, oldEnd - firstWhole, true);
    await s.lock.run(async () => {
      const rc = this.#refcounts();
      for (let i = Math.ceil(size / l2Span); i < s.l1Entries; i++) {
        const off = entryOffset(s.l1.getUint32(i * 8), s.l1.getUint32(i * 8 + 4));
        if (off === 0) continue;
        s.l1.setUint32(i * 8, 0);
        s.l1.setUint32(i * 8 + 4, 0);
        s.l1Dirty = true;
        s.l2.forget(off);
        this.#overlap.l2Removed(off);
        await rc.free(off, 1);
      }
    });
    h.size = size;
    s.headerDirty = true;
    this.bitmaps?.afterResize(size);
  }

  /** Move the active L1 table to a larger home; the old one is freed after the header moves. */
  async #growL1(entries: number): Promise<void> {
    const s = this.#s;
    const h = s.meta.header;
    const rc = this.#refcounts();
    if (entries * 8 > 32 << 20) throw new Qcow2Error('INVALID_ARGUMENT', 'The image size is too large (try using a larger cluster size)', { entries });
    const clusters = Math.ceil((entries * 8) / s.clusterSize);
    const offset = await rc.allocate(clusters);
    const bytes = new Uint8Array(clusters * s.clusterSize);
    bytes.set(new Uint8Array(s.l1.buffer, s.l1.byteOffset, s.l1Entries * 8));
    const oldOffset = h.l1TableOffset;
    const oldClusters = Math.ceil((s.l1Entries * 8) / s.clusterSize);
    s.l1 = viewOf(bytes);
    s.l1Entries = entries;
    s.l1Dirty = true;
    h.l1TableOffset = offset;
    h.l1Size = entries;
    s.headerDirty = true;
    if (oldClusters > 0 && oldOffset !== 0) this.#freeAfterHeader.push([oldOffset, oldClusters]);
  }

  /**
   * Make everything durable in crash-safe order: data, refcount increases, tables, L1,
   * header, refcount decreases, with a storage flush between steps.
   */
  async flush(): Promise<void> {
    await this.#s.lock.run(() => this.flushLocked());
  }

  /** The flush sequence; call with the metadata lock held. */
  async flushLocked(): Promise<void> {
    const s = this.#s;
    {
      const rc = s.refcounts;
      if (s.meta.dataStorage !== s.storage) await s.meta.dataStorage.flush();
      await s.storage.flush();
      if (rc !== undefined && rc.dirty) {
        await rc.writeIncreases();
        await s.storage.flush();
      }
      await s.l2.writeDirty();
      if (s.l1Dirty) {
        s.l1Dirty = false;
        await s.storage.write(new Uint8Array(s.l1.buffer, s.l1.byteOffset, s.l1Entries * 8).slice(), s.meta.header.l1TableOffset);
      }
      if (rc !== undefined && (rc.location.offset !== s.meta.header.refcountTableOffset || rc.location.clusters !== s.meta.header.refcountTableClusters)) {
        s.meta.header.refcountTableOffset = rc.location.offset;
        s.meta.header.refcountTableClusters = rc.location.clusters;
        s.headerDirty = true;
      }
      if (s.headerDirty) await this.#writeHeader();
      await s.storage.flush();
      // Structures the old header pointed to can go now (their refcounts drop in writeFinal).
      const frees = this.#freeAfterHeader;
      this.#freeAfterHeader = [];
      for (const [off, n] of frees) await rc?.free(off, n);
      if (rc !== undefined && rc.dirty) {
        await rc.writeFinal();
        await s.storage.flush();
      }
    }
  }

  /** Flush, then clear the dirty bit set for lazy refcounts. */
  async close(): Promise<void> {
    let bitmapError: unknown;
    try {
      await this.bitmaps?.store();
    } catch (e) {
      bitmapError = e;
    }
    await this.flush();
    if (this.#dirtyBitSet) {
      const h = this.#s.meta.header;
      h.incompatibleFeatures = withBit(h.incompatibleFeatures, INCOMPAT_DIRTY, false);
      await this.#writeHeader();
      await this.#s.storage.flush();
      this.#dirtyBitSet = false;
    }
    if (bitmapError !== undefined) throw bitmapError;
  }

  /** Rewrite the fixed header from `meta.header` (call with the lock held). */
  writeHeaderLocked(): Promise<void> {
    return this.#writeHeader();
  }

  /** Hook for code that changes metadata: lazy-refcount dirty bit, read-only and corrupt checks. */
  beforeMetadataChange(): Promise<void> {
    return this.#beforeMetadataChange();
  }

  async #writeHeader(): Promise<void> {
    const s = this.#s;
    const buf = new Uint8Array(Math.max(s.meta.header.headerLength, 112));
    const n = encodeHeader(s.meta.header, buf);
    s.headerDirty = false;
    await s.storage.write(buf.subarray(0, n), 0);
  }

  /** With lazy refcounts QEMU marks the image dirty before deferring refcount updates. */
  async #beforeMetadataChange(): Promise<void> {
    if (this.#s.readOnly) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only');
    if (this.#corrupt) throw new Qcow2Error('CORRUPT', 'Image is corrupt; further writes are refused', {});
    const h = this.#s.meta.header;
    if (this.#dirtyBitSet || h.version < 3 || !hasBit(h.compatibleFeatures, COMPAT_LAZY_REFCOUNTS)) return;
    await this.#s.lock.run(async () => {
      if (this.#dirtyBitSet) return;
      h.incompatibleFeatures = withBit(h.incompatibleFeatures, INCOMPAT_DIRTY, true);
      await this.#writeHeader();
      await this.#s.storage.flush();
      this.#dirtyBitSet = true;
    });
  }

  /** Write metadata back when caches hold too many dirty tables. */
  async #relieveCaches(): Promise<void> {
    if (this.#s.l2.overBudget) await this.flush();
  }

  #clusterType(e: OldEntry): 'unallocated' | 'zero' | 'zero-alloc' | 'normal' | 'compressed' {
    if (isCompressed(e.hi)) return 'compressed';
    const allocated = entryOffset(e.hi, e.lo) !== 0 || (this.#external && isCopied(e.hi));
    if (!this.#ext && isZeroFlag(e.lo)) return allocated ? 'zero-alloc' : 'zero';
    if (!allocated) return this.#ext && e.zeroBits === ALL_SUBCLUSTERS ? 'zero' : 'unallocated';
    return 'normal';
  }

  #readEntry(table: DataView, index: number): OldEntry {
    const at = index * (this.#ext ? 16 : 8);
    return {
      hi: table.getUint32(at),
      lo: table.getUint32(at + 4),
      zeroBits: this.#ext ? table.getUint32(at + 8) : 0,
      allocBits: this.#ext ? table.getUint32(at + 12) : 0,
    };
  }

  #setEntry(table: DataView, index: number, hi: number, lo: number, zeroBits: number, allocBits: number): void {
    const at = index * (this.#ext ? 16 : 8);
    table.setUint32(at, hi >>> 0);
    table.setUint32(at + 4, lo >>> 0);
    if (this.#ext) {
      table.setUint32(at + 8, zeroBits >>> 0);
      table.setUint32(at + 12, allocBits >>> 0);
    }
  }

  /**
   * The L2 table for `l1Index`, ready to be changed: allocated when missing, copied when shared
   * with a snapshot. Call with the metadata lock held.
   */
  async #writableL2(l1Index: number): Promise<{ offset: number; table: DataView }> {
    const s = this.#s;
    const rc = this.#refcounts();
    if (l1Index >= s.l1Entries) throw new Qcow2Error('INVALID_ARGUMENT', `L1 index ${l1Index} beyond the L1 table`, { l1Index });
    const hi = s.l1.getUint32(l1Index * 8);
    const lo = s.l1.getUint32(l1Index * 8 + 4);
    const offset = entryOffset(hi, lo);
    if (offset % s.clusterSize !== 0 || offset > MAX_HOST_OFFSET) {
      throw new Qcow2Error('CORRUPT', `L2 table offset 0x${offset.toString(16)} invalid`, { l1Index });
    }
    if (offset !== 0 && isCopied(hi)) {
      if (offset % s.clusterSize !== 0) throw new Qcow2Error('CORRUPT', `L2 table offset 0x${offset.toString(16)} unaligned`, { l1Index });
      return { offset, table: tableViews(await s.l2.get(offset)).view };
    }
    const fresh = await rc.allocate(1);
    let bytes = new Uint8Array(s.clusterSize);
    if (offset !== 0) {
      bytes = (await s.l2.get(offset)).slice();
      await rc.free(offset, 1);
      this.#overlap.l2Removed(offset);
    }
    s.l2.create(fresh, bytes);
    this.#overlap.l2Added(fresh);
    const [nhi, nlo] = encodeStandard(fresh, true);
    s.l1.setUint32(l1Index * 8, nhi);
    s.l1.setUint32(l1Index * 8 + 4, nlo);
    s.l1Dirty = true;
    return { offset: fresh, table: tableViews(bytes).view };
  }

  #refcounts(): NonNullable<Qcow2State['refcounts']> {
    const rc = this.#s.refcounts;
    if (rc === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only');
    return rc;
  }

  /** Apply `change` to every whole cluster in [from, to); it returns the old entry to free, if any. */
  async #forClusters(from: number, to: number, change: (table: DataView, index: number, old: OldEntry) => OldEntry | undefined): Promise<void> {
    const s = this.#s;
    const cs = s.clusterSize;
    const l2Entries = s.meta.l2Entries;
    for (let c = from / cs; c < to / cs;) {
      const l1Index = Math.floor(c / l2Entries);
      const stop = Math.min(to / cs, (l1Index + 1) * l2Entries);
      await s.lock.run(async () => {
        const l1hi = s.l1.getUint32(l1Index * 8);
        const l1lo = s.l1.getUint32(l1Index * 8 + 4);
        if (entryOffset(l1hi, l1lo) === 0 && !this.#hasBacking && !this.#ext) {
          // Nothing allocated and nothing below: already reads as zeros, nothing to discard.
          return;
        }
        const { offset, table } = await this.#writableL2(l1Index);
        const freed: OldEntry[] = [];
        for (let k = c; k < stop; k++) {
          const index = k % l2Entries;
          const f = change(table, index, this.#readEntry(table, index));
          if (f !== undefined) freed.push(f);
        }
        s.l2.markDirty(offset);
        for (const f of freed) await this.#freeEntry(f);
      });
      c = stop;
    }
  }

  /** Drop the host clusters an entry referenced. Call with the lock held. */
  async #freeEntry(e: OldEntry): Promise<void> {
    const s = this.#s;
    if (this.#external) return; // clusters of an external data file are not refcounted
    const rc = this.#refcounts();
    if (isCompressed(e.hi)) {
      const [off, n] = compressedClusters(decodeCompressed(e.hi, e.lo, s.clusterBits), s.clusterSize);
      if (off + n * s.clusterSize > MAX_HOST_OFFSET) throw new Qcow2Error('CORRUPT', 'Compressed cluster offset out of range', {});
      await rc.free(off, n);
      return;
    }
    const off = entryOffset(e.hi, e.lo);
    if (off !== 0) await rc.free(this.#hostOf(e), 1);
  }

  /**
   * Write one run (within one L2 table, one plan) starting at `pos`; returns the bytes consumed.
   * Calls `placed` once planned when the run reaches `writeEnd` (the end of the whole write).
   */
  async #writeRun(pos: number, data: Uint8Array, below: BelowReader, writeEnd: number, placed: (() => void) | undefined): Promise<number> {
    const s = this.#s;
    const cs = s.clusterSize;
    const l2Entries = s.meta.l2Entries;
    const cluster = Math.floor(pos / cs);
    const l1Index = Math.floor(cluster / l2Entries);
    const end = Math.min(pos + data.byteLength, (l1Index + 1) * l2Entries * cs);
    const plan = await s.lock.run(() => this.#plan(l1Index, pos, end));
    const length = plan.length;
    // The last run's clusters are allocated (earlier runs were written before this one began).
    if (pos + length >= writeEnd) placed?.();
    if (plan.kind === 'inplace') {
      await this.#writeInPlace(l1Index, plan, pos, data.subarray(0, length), below);
      return length;
    }
    // Build the whole written region: copy-on-write head, the data, copy-on-write tail.
    const first = plan.firstCluster;
    const startCluster = first * cs;
    const subSize = this.#ext ? cs / 32 : cs;
    const oldFirst = plan.old[0]!;
    const oldLast = plan.old[plan.old.length - 1]!;
    const partial = (o: OldEntry): boolean => this.#ext && ['unallocated', 'zero'].includes(this.#clusterType(o));
    const regionStart = partial(oldFirst) ? Math.floor(pos / subSize) * subSize : startCluster;
    const dataEnd = pos + length;
    const lastClusterStart = (first + plan.clusters - 1) * cs;
    const regionEnd = partial(oldLast) ? Math.min(lastClusterStart + cs, Math.ceil(dataEnd / subSize) * subSize) : lastClusterStart + cs;
    const region = await this.#region(data.subarray(0, length), pos, regionStart, regionEnd, oldFirst, startCluster, oldLast, lastClusterStart, below);
    await this.#guard(plan.host + (regionStart - startCluster), region.byteLength);
    await s.meta.dataStorage.write(region, plan.host + (regionStart - startCluster));
    await s.lock.run(async () => {
      const { offset: l2Offset, table } = await this.#writableL2(l1Index);
      const freed: OldEntry[] = [];
      for (let i = 0; i < plan.clusters; i++) {
        const index = (first + i) % l2Entries;
        const old = plan.old[i]!;
        const [hi, lo] = encodeStandard(plan.host + i * cs, true);
        let allocBits = 0;
        let zeroBits = 0;
        if (this.#ext) {
          if (partial(old)) {
            allocBits = this.#subclustersIn((first + i) * cs, regionStart, regionEnd);
            zeroBits = (old.zeroBits & ~allocBits) >>> 0;
          } else {
            allocBits = ALL_SUBCLUSTERS;
          }
        }
        this.#setEntry(table, index, hi, lo, zeroBits, allocBits);
        if (this.#clusterType(old) !== 'unallocated' && this.#clusterType(old) !== 'zero') freed.push(old);
      }
      // The table changes synchronously above; frees may await and must not split it.
      s.l2.markDirty(l2Offset);
      for (const f of freed) await this.#freeEntry(f);
    });
    return length;
  }

  /**
   * Write into clusters we own. Where the old content is not data (a zero cluster, or zero and
   * unallocated subclusters) the write widens to whole (sub)clusters filled from the old
   * content, and their entries then mark them allocated, as QEMU's in-place copy-on-write does.
   */
  async #writeInPlace(l1Index: number, plan: Plan & { kind: 'inplace' }, pos: number, data: Uint8Array, below: BelowReader): Promise<void> {
    const s = this.#s;
    const cs = s.clusterSize;
    const grain = this.#ext ? cs / 32 : cs;
    const first = plan.firstCluster;
    const headOld = plan.old[0]!;
    const tailOld = plan.old[plan.old.length - 1]!;
    const dataEnd = pos + data.byteLength;
    const lastStart = (first + plan.old.length - 1) * cs;
    const regionStart = this.#holdsData(headOld, pos - first * cs) ? pos : Math.floor(pos / grain) * grain;
    const regionEnd = this.#holdsData(tailOld, dataEnd - 1 - lastStart) ? dataEnd : Math.min(lastStart + cs, Math.ceil(dataEnd / grain) * grain);
    const region = await this.#region(data, pos, regionStart, regionEnd, headOld, first * cs, tailOld, lastStart, below);
    const host = plan.host - (pos - regionStart);
    await this.#guard(host, region.byteLength);
    await s.meta.dataStorage.write(region, host);
    if (plan.old.every((o) => this.#clusterType(o) === 'normal' && (!this.#ext || o.allocBits === ALL_SUBCLUSTERS))) return;
    await s.lock.run(async () => {
      const { offset: l2Offset, table } = await this.#writableL2(l1Index);
      const l2Entries = s.meta.l2Entries;
      for (let i = 0; i < plan.old.length; i++) {
        const old = plan.old[i]!;
        const cStart = (first + i) * cs;
        const [hi, lo] = encodeStandard(this.#hostOf(old), true);
        let allocBits = 0;
        let zeroBits = 0;
        if (this.#ext) {
          const mask = this.#subclustersIn(cStart, regionStart, regionEnd);
          allocBits = (old.allocBits | mask) >>> 0;
          zeroBits = (old.zeroBits & ~mask) >>> 0;
        }
        this.#setEntry(table, (first + i) % l2Entries, hi, lo, zeroBits, allocBits);
      }
      s.l2.markDirty(l2Offset);
    });
  }

  /**
   * The bytes for guest [regionStart, regionEnd): `data` (at `pos`) with the head and tail
   * around it filled from the old content of the first and last cluster (copy-on-write).
   */
  async #region(
    data: Uint8Array, pos: number, regionStart: number, regionEnd: number,
    headOld: OldEntry, headCluster: number, tailOld: OldEntry, tailCluster: number, below: BelowReader,
  ): Promise<Uint8Array> {
    const dataEnd = pos + data.byteLength;
    if (regionStart === pos && regionEnd === dataEnd) return data;
    const region = new Uint8Array(regionEnd - regionStart);
    if (pos > regionStart) await this.#readOld(headOld, headCluster, region.subarray(0, pos - regionStart), regionStart, below);
    region.set(data, pos - regionStart);
    if (regionEnd > dataEnd) await this.#readOld(tailOld, tailCluster, region.subarray(dataEnd - regionStart), dataEnd, below);
    return region;
  }

  /** Subclusters of the cluster at guest `cStart` that [from, to) touches, as a bitmap. */
  #subclustersIn(cStart: number, from: number, to: number): number {
    const sub = this.#s.clusterSize / 32;
    const a = Math.max(from, cStart) - cStart;
    const b = Math.min(to, cStart + this.#s.clusterSize) - cStart;
    return subclusterMask(Math.floor(a / sub), Math.ceil(b / sub));
  }

  /** True when byte `at` of the cluster described by `e` is stored data (not zero, not below). */
  #holdsData(e: OldEntry, at: number): boolean {
    if (this.#clusterType(e) !== 'normal') return false;
    return !this.#ext || ((e.allocBits >>> Math.floor(at / (this.#s.clusterSize / 32))) & 1) === 1;
  }

  /** Decide how to write [pos, end) (within one L2 table). Runs with the lock held. */
  async #plan(l1Index: number, pos: number, end: number): Promise<Plan> {
    const s = this.#s;
    const cs = s.clusterSize;
    const l2Entries = s.meta.l2Entries;
    const { table } = await this.#writableL2(l1Index);
    const firstCluster = Math.floor(pos / cs);
    const firstOld = this.#readEntry(table, firstCluster % l2Entries);
    // As QEMU: a cluster of ours (COPIED) is written where it is, even where it reads as zeros
    // or has unallocated subclusters; those parts are filled in place (see #writeInPlace).
    const writableInPlace = (e: OldEntry): boolean => {
      const type = this.#clusterType(e);
      return (type === 'normal' || type === 'zero-alloc') && isCopied(e.hi);
    };
    if (writableInPlace(firstOld)) {
      const host0 = this.#hostOf(firstOld);
      const old = [firstOld];
      let c = firstCluster + 1;
      while (c * cs < end) {
        const e = this.#readEntry(table, c % l2Entries);
        if (!writableInPlace(e) || this.#hostOf(e) !== host0 + (c - firstCluster) * cs) break;
        old.push(e);
        c++;
      }
      return { kind: 'inplace', host: host0 + (pos - firstCluster * cs), firstCluster, old, length: Math.min(end, c * cs) - pos };
    }
    // Allocate a run of clusters that all need it (stop at the first in-place one).
    const old: OldEntry[] = [firstOld];
    let c = firstCluster + 1;
    while (c * cs < end) {
      const e = this.#readEntry(table, c % l2Entries);
      if (writableInPlace(e)) break;
      old.push(e);
      c++;
    }
    const clusters = old.length;
    const host = this.#external ? firstCluster * cs : await this.#refcounts().allocate(clusters);
    return { kind: 'alloc', host, clusters, firstCluster, old, length: Math.min(end, c * cs) - pos };
  }

  #hostOf(e: OldEntry): number {
    const off = entryOffset(e.hi, e.lo);
    if (off % this.#s.clusterSize !== 0 || off > MAX_HOST_OFFSET) {
      throw new Qcow2Error('CORRUPT', `Cluster allocation offset 0x${off.toString(16)} unaligned`, { offset: off });
    }
    return off;
  }

  /** Fill `dst` with what the cluster described by `e` held at guest offset `from`. */
  async #readOld(e: OldEntry, clusterStart: number, dst: Uint8Array, from: number, below: BelowReader): Promise<void> {
    const s = this.#s;
    const type = this.#clusterType(e);
    if (type === 'zero' || type === 'zero-alloc') {
      if (!this.#ext || type === 'zero') {
        dst.fill(0);
        return;
      }
    }
    if (type === 'unallocated' && (!this.#ext || e.zeroBits === 0)) {
      await below(dst, from);
      return;
    }
    if (type === 'compressed') {
      const full = new Uint8Array(s.clusterSize);
      const d = decodeCompressed(e.hi, e.lo, s.clusterBits);
      if (d.hostOffset + d.length > MAX_HOST_OFFSET) throw new Qcow2Error('CORRUPT', 'Compressed cluster offset out of range', {});
      const src = new Uint8Array(d.length);
      await s.storage.read(src, d.hostOffset);
      await s.decompressor.decompress(src, full);
      dst.set(full.subarray(from - clusterStart, from - clusterStart + dst.byteLength));
      return;
    }
    if (!this.#ext) {
      await s.meta.dataStorage.read(dst, this.#hostOf(e) + (from - clusterStart));
      return;
    }
    // Extended L2: subcluster by subcluster.
    const subSize = s.clusterSize / 32;
    const allocated = type === 'normal';
    for (let p = from; p < from + dst.byteLength;) {
      const sub = Math.floor((p - clusterStart) / subSize);
      const next = Math.min(from + dst.byteLength, clusterStart + (sub + 1) * subSize);
      const piece = dst.subarray(p - from, next - from);
      if ((e.zeroBits >>> sub) & 1) piece.fill(0);
      else if (allocated && (e.allocBits >>> sub) & 1) await s.meta.dataStorage.read(piece, this.#hostOf(e) + (p - clusterStart));
      else await below(piece, p);
      p = next;
    }
  }
}

/** Bits [from, to) of a 32-bit subcluster mask. */
function subclusterMask(from: number, to: number): number {
  if (to - from >= 32) return ALL_SUBCLUSTERS;
  return ((((1 << (to - from)) >>> 0) - 1) << from) >>> 0;
}
