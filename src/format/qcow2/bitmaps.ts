import { invalidImage, Qcow2Error } from '../../errors.js';
import { encodeText } from '../../util/bytes.js';
import {
  BITMAP_TYPE_DIRTY_TRACKING, bitmapDirectorySize, decodeBitmapsExtension, encodeBitmapDirectory, encodeBitmapsExtension,
  MAX_BITMAP_DIRECTORY_SIZE, MAX_BITMAP_GRANULARITY_BITS, MAX_BITMAP_NAME_SIZE, MAX_BITMAPS, MIN_BITMAP_GRANULARITY_BITS,
  type BitmapDirectoryEntry,
} from './bitmap-directory.js';
import {
  BITMAP_CLUSTER_ONES, BITMAP_CLUSTER_ZERO, BITMAP_TABLE_ENTRY_SIZE, bitmapDataClusters, decodeBitmapTable, encodeBitmapTable,
  type BitmapTableEntry,
} from './bitmap-table.js';
import { DirtyBitmap, MAX_BITMAP_BITS, type DirtyRange } from './dirty-bitmap.js';
import { AUTOCLEAR_BITMAPS, hasBit, withBit } from './features.js';
import { EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE, EXT_FEATURE_TABLE, findExtension, type HeaderExtension } from './header-extensions.js';
import type { Qcow2State } from './qcow2-state.js';
import type { Qcow2Writer } from './qcow2-writer.js';
import type { Refcounts } from './refcounts.js';
import { rewriteCluster0 } from './rewrite-cluster0.js';

export type { DirtyRange } from './dirty-bitmap.js';

/** What `list()` tells about one persistent dirty bitmap. */
export interface BitmapInfo {
  name: string;
  /** Bytes covered by one bit. */
  granularity: number;
  /** Writes mark it dirty (the "auto" flag). */
  enabled: boolean;
  /**
   * It was in use (not saved cleanly) when the image was opened, so its contents are lost:
   * QEMU calls it inconsistent and only allows removing it.
   */
  inconsistent: boolean;
}

/** Options of `add()`. */
export interface AddBitmapOptions {
  /** Bytes per bit: a power of two from 512 to 2^31. Default: the cluster size within [4 KiB, 64 KiB], as QEMU. */
  granularity?: number;
  /** Create it disabled (not tracking writes). */
  disabled?: boolean;
}

/** Outcome of `store()`. */
export interface StoreResult {
  /** Bitmaps that could not be stored (a zero-size disk has no room for a bitmap table) and are gone. */
  lost: string[];
}

/** Options of the Qcow2Bitmaps constructor. */
export interface Qcow2BitmapsOptions {
  /**
   * Most bytes all bitmaps together may hold in memory (default 4 GiB). Each bitmap is bounded
   * by QEMU's 512 MiB, but an image may name up to 65535 of them.
   */
  memoryBudget?: number;
}

/** Default for `memoryBudget`. */
export const DEFAULT_BITMAP_MEMORY_BUDGET = 2 ** 32;

/** Hint QEMU prints under the "inconsistent" error. */
export const INCONSISTENT_BITMAP_HINT = 'Try block-dirty-bitmap-remove to delete this bitmap from disk';

/**
 * `context.cannotPersist` is true on errors QEMU reports as "Can't make bitmap 'NAME'
 * persistent in 'NODE': <message>" (the CLI adds that prefix).
 */
function cannotPersist(code: 'UNSUPPORTED' | 'INVALID_ARGUMENT', name: string, message: string): Qcow2Error {
  return new Qcow2Error(code, message, { bitmap: name, cannotPersist: true });
}

function notFound(name: string): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', `Dirty bitmap '${name}' not found`, { bitmap: name });
}

function inconsistent(name: string): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', `Bitmap '${name}' is inconsistent and cannot be used`, { bitmap: name, hint: INCONSISTENT_BITMAP_HINT });
}

/** QEMU's bdrv_get_default_bitmap_granularity for a qcow2 image. */
export function defaultBitmapGranularity(clusterSize: number): number {
  return Math.min(65536, Math.max(4096, clusterSize));
}

/** One bitmap: where it is stored and, once read, its bits. */
interface Slot {
  name: string;
  granularityBits: number;
  enabled: boolean;
  inconsistent: boolean;
  /** Its table on disk (undefined until first stored). */
  stored: { offset: number; size: number } | undefined;
  /** Entries of the stored table, once read (to free its data clusters later). */
  storedEntries: BitmapTableEntry[] | undefined;
  data: DirtyBitmap | undefined;
  loading: Promise<DirtyBitmap> | undefined;
  /** The bits differ from the stored table. */
  changed: boolean;
}

/** Where extensions go relative to the bitmaps extension (QEMU's qcow2_update_header order). */
const BEFORE_BITMAPS = new Set([EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_CRYPTO_HEADER, EXT_FEATURE_TABLE]);

/**
 * Persistent dirty bitmaps of a qcow2 image (docs/interop/qcow2.rst "Bitmaps"), kept in
 * memory while the image is open, as QEMU keeps them:
 *
 * - `openForWrite()` (writable open) reads every consistent bitmap and marks them in use on
 *   disk, so a crash leaves them flagged inconsistent rather than silently stale;
 * - `markDirty()` is called for every guest write, zero-write and discard;
 * - `store()` (close) writes changed bitmaps to new clusters, then a new directory and the
 *   header that points to it, then frees the old clusters: a crash at any point leaves either
 *   the old or the new state, with leaked clusters at worst.
 *
 * Operations (`add`, `remove`, `clear`, `enable`, `disable`, `merge`) change memory only and
 * are written by `store()`, as qemu-img does at close.
 *
 * @example
 * ```ts
 * const bitmaps = driver.bitmaps;
 * await bitmaps.add('backup-1');
 * // ... guest writes through the Image mark 'backup-1' dirty ...
 * for (const r of await bitmaps.dirtyRanges('backup-1')) copy(r.offset, r.length);
 * await bitmaps.clear('backup-1');
 * ```
 */
export class Qcow2Bitmaps {
  readonly #s: Qcow2State;
  readonly #w: Qcow2Writer | undefined;
  #slots: Slot[];
  /** Slots that writes mark dirty: enabled, consistent and loaded. */
  #tracking: Slot[] = [];
  /** The directory the on-disk header names (freed when replaced). */
  #directory: { offset: number; size: number } | undefined;
  /** The on-disk directory marks our bitmaps in use. */
  #inUseOnDisk = false;
  /** Names, flags or membership changed since the last store. */
  #dirty = false;
  /** Clusters of removed bitmaps, freed once the directory no longer names them. */
  #pendingFrees: [number, number][] = [];
  readonly #budget: number;

  constructor(state: Qcow2State, writer: Qcow2Writer | undefined, options: Qcow2BitmapsOptions = {}) {
    this.#s = state;
    this.#w = writer;
    this.#budget = options.memoryBudget ?? DEFAULT_BITMAP_MEMORY_BUDGET;
    this.#slots = state.meta.bitmaps.map((e) => ({
      name: e.name, granularityBits: e.granularityBits, enabled: e.flags.auto, inconsistent: e.flags.inUse,
      stored: { offset: e.tableOffset, size: e.tableSize }, storedEntries: undefined, data: undefined, loading: undefined, changed: false,
    }));
    const ext = findExtension(state.meta.extensions, EXT_BITMAPS);
    // meta.bitmaps is only filled when the extension was valid (autoclear bit set).
    if (ext !== undefined && this.#slots.length > 0) {
      const d = decodeBitmapsExtension(ext.data, state.clusterSize);
      this.#directory = { offset: d.directoryOffset, size: d.directorySize };
    }
  }

  /** The bitmaps, in directory order. */
  list(): BitmapInfo[] {
    return this.#slots.map((s) => this.#info(s));
  }

  /** One bitmap by name. */
  get(name: string): BitmapInfo | undefined {
    const slot = this.#find(name);
    return slot === undefined ? undefined : this.#info(slot);
  }

  /**
   * Writable-open housekeeping, as QEMU's qcow2_load_dirty_bitmaps: read every consistent
   * bitmap (a broken one fails here) and mark them in use on disk. A bitmaps extension left
   * without the autoclear bit by a program that does not know bitmaps is dropped.
   */
  async openForWrite(): Promise<void> {
    const w = this.#w;
    if (w === undefined || this.#inUseOnDisk) return;
    const s = this.#s;
    const stale = findExtension(s.meta.extensions, EXT_BITMAPS) !== undefined && this.#slots.length === 0;
    // Something cleared the autoclear bit since the directory was read (a writer that does
    // not know bitmaps): setting it again is part of the rewrite.
    const bitCleared = this.#slots.length > 0 && !hasBit(s.meta.header.autoclearFeatures, AUTOCLEAR_BITMAPS);
    await this.loadAll();
    const consistent = this.#slots.some((slot) => !slot.inconsistent);
    if (stale || consistent || bitCleared) {
      await w.beforeMetadataChange();
      await s.lock.run(async () => {
        await this.#switchDirectory(this.#directoryEntries(new Map(), true));
        // Write the old directory's release now, so a crash while open leaks nothing.
        await w.flushLocked();
      });
      this.#inUseOnDisk = consistent;
    }
    this.#refreshTracking();
  }

  /**
   * Guest bytes `[offset, offset + length)` were written, zeroed or discarded: set the bits in
   * every enabled bitmap. Synchronous and cheap; called on every write.
   */
  markDirty(offset: number, length: number): void {
    const tracking = this.#tracking;
    for (let i = 0; i < tracking.length; i++) {
      const slot = tracking[i]!;
      slot.data!.setRange(offset, length);
      slot.changed = true;
    }
  }

  /** Create a bitmap (empty, enabled unless `disabled`), with QEMU's checks and messages. */
  async add(name: string, options: AddBitmapOptions = {}): Promise<BitmapInfo> {
    this.#requireWritable();
    const s = this.#s;
    if (name === '') throw new Qcow2Error('INVALID_ARGUMENT', 'Bitmap name cannot be empty', {});
    const granularity = options.granularity ?? defaultBitmapGranularity(s.clusterSize);
    const bits = Math.log2(granularity);
    if (!Number.isInteger(bits) || granularity < 512 || granularity >= 2 ** 32) {
      throw new Qcow2Error('INVALID_ARGUMENT', 'Granularity must be power of 2 and at least 512', { granularity });
    }
    if (this.#find(name) !== undefined) throw new Qcow2Error('INVALID_ARGUMENT', `Bitmap already exists: ${name}`, { bitmap: name });
    if (s.meta.header.version < 3) throw cannotPersist('UNSUPPORTED', name, 'Cannot store dirty bitmaps in qcow2 v2 files');
    if (bits > MAX_BITMAP_GRANULARITY_BITS) throw cannotPersist('INVALID_ARGUMENT', name, `Granularity exceeds maximum (${2 ** MAX_BITMAP_GRANULARITY_BITS} bytes)`);
    if (bits < MIN_BITMAP_GRANULARITY_BITS) throw cannotPersist('INVALID_ARGUMENT', name, `Granularity is under minimum (${2 ** MIN_BITMAP_GRANULARITY_BITS} bytes)`);
    if (DirtyBitmap.bitsFor(s.meta.header.size, bits) > MAX_BITMAP_BITS) {
      throw cannotPersist('INVALID_ARGUMENT', name, 'Too much space will be occupied by the bitmap. Use larger granularity');
    }
    if (encodeText(name).byteLength > MAX_BITMAP_NAME_SIZE) {
      throw cannotPersist('INVALID_ARGUMENT', name, `Name length exceeds maximum (${MAX_BITMAP_NAME_SIZE} characters)`);
    }
    if (this.#slots.length + 1 > MAX_BITMAPS) throw cannotPersist('INVALID_ARGUMENT', name, 'Maximum number of persistent bitmaps is already reached');
    const dirSize = bitmapDirectorySize([...this.#slots, { name }].map((x) => dirEntry(x.name, 0, 0, 0, false, false)));
    if (dirSize > MAX_BITMAP_DIRECTORY_SIZE) throw cannotPersist('INVALID_ARGUMENT', name, 'Not enough space in the bitmap directory');
    this.#reserveMemory(s.meta.header.size, bits);
    const slot: Slot = {
      name, granularityBits: bits, enabled: options.disabled !== true, inconsistent: false,
      stored: undefined, storedEntries: undefined, data: new DirtyBitmap(s.meta.header.size, bits), loading: undefined, changed: true,
    };
    this.#slots.push(slot);
    this.#dirty = true;
    this.#refreshTracking();
    return this.#info(slot);
  }

  /** Delete a bitmap (inconsistent ones too); its clusters are freed by `store()`. */
  async remove(name: string): Promise<void> {
    this.#requireWritable();
    const slot = this.#find(name);
    if (slot === undefined) throw notFound(name);
    if (slot.stored !== undefined) {
      const entries = slot.storedEntries ?? (await this.#readTable(slot));
      this.#pendingFrees.push(...this.#clustersOf(slot.stored, entries));
    }
    this.#slots = this.#slots.filter((x) => x !== slot);
    this.#dirty = true;
    this.#refreshTracking();
  }

  /** Clear every bit. */
  async clear(name: string): Promise<void> {
    this.#requireWritable();
    const slot = this.#usable(name);
    (await this.#load(slot)).clear();
    slot.changed = true;
  }

  /** Start tracking writes. */
  async enable(name: string): Promise<void> {
    await this.#setEnabled(name, true);
  }

  /** Stop tracking writes. */
  async disable(name: string): Promise<void> {
    await this.#setEnabled(name, false);
  }

  /**
   * Set in bitmap `target` every bit set in bitmap `source` of `from` (this image by default,
   * or another open image of the same virtual size). Granularities may differ.
   */
  async merge(target: string, source: string, from: Qcow2Bitmaps = this): Promise<void> {
    this.#requireWritable();
    const dst = this.#find(target);
    if (dst === undefined) throw notFound(target);
    const src = from.#find(source);
    if (src === undefined) throw notFound(source);
    if (src.inconsistent) throw inconsistent(source);
    const dstSize = this.#s.meta.header.size;
    const srcSize = from.#s.meta.header.size;
    if (srcSize !== dstSize) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Bitmaps are of different sizes (destination size is ${dstSize}, source size is ${srcSize}) and can't be merged`, {});
    }
    if (dst.inconsistent) throw inconsistent(target);
    const bits = await from.#load(src);
    (await this.#load(dst)).merge(bits);
    dst.changed = true;
  }

  /**
   * The dirty guest byte ranges of a bitmap, ascending and merged: what an incremental backup
   * copies.
   */
  async dirtyRanges(name: string): Promise<DirtyRange[]> {
    const slot = this.#usable(name);
    return [...(await this.#load(slot)).ranges()];
  }

  /**
   * Read every consistent bitmap now. QEMU does this whenever it opens an image (read-only
   * too), so a broken bitmap makes the open fail; call it at open for the same behaviour.
   */
  async loadAll(): Promise<void> {
    for (const slot of this.#slots) if (!slot.inconsistent) await this.#load(slot);
  }

  /** A copy of a bitmap's bits. */
  async contents(name: string): Promise<DirtyBitmap> {
    return (await this.#load(this.#usable(name))).clone();
  }

  /**
   * Before the virtual size changes: QEMU refuses while a bitmap is inconsistent. Reads every
   * bitmap at the old size.
   */
  async beforeResize(): Promise<void> {
    for (const slot of this.#slots) if (slot.inconsistent) throw inconsistent(slot.name);
    for (const slot of this.#slots) await this.#load(slot);
  }

  /** After the virtual size changed: bitmaps follow (new area clean, bits past a new end dropped). */
  afterResize(size: number): void {
    for (const slot of this.#slots) {
      if (slot.data === undefined || slot.data.size === size) continue;
      slot.data.resize(size);
      slot.changed = true;
    }
  }

  /**
   * Write every change back and leave the bitmaps saved (not in use): changed bitmaps get new
   * data clusters and tables, then a new directory and header are written, then old clusters
   * are freed. Does nothing when nothing changed. Call at close; writes after it are tracked
   * in memory but only saved by another `store()`.
   */
  async store(): Promise<StoreResult> {
    const w = this.#w;
    const lost: string[] = [];
    if (w === undefined) return { lost };
    const s = this.#s;
    const work = this.#inUseOnDisk || this.#dirty || this.#pendingFrees.length > 0 || this.#slots.some((x) => x.changed);
    if (!work) return { lost };
    const size = s.meta.header.size;
    if (DirtyBitmap.tableSizeFor(size, MIN_BITMAP_GRANULARITY_BITS, s.clusterSize) === 0) {
      // A zero-size disk gives empty bitmap tables, which no reader accepts: QEMU loses them too.
      for (const slot of this.#slots) if (!slot.inconsistent) lost.push(slot.name);
      for (const name of lost) await this.remove(name);
    }
    await w.beforeMetadataChange();
    await s.lock.run(async () => {
      const rc = this.#rc();
      const tables = new Map<Slot, { offset: number; size: number; entries: BitmapTableEntry[] }>();
      const taken: Slot[] = [];
      try {
        for (const slot of this.#slots) {
          if (slot.inconsistent || (!slot.changed && slot.stored !== undefined)) continue;
          const data = slot.data;
          if (data === undefined) throw new Qcow2Error('INVALID_ARGUMENT', `Bitmap '${slot.name}' was changed without being read`, {});
          if (data.size !== size) {
            // Resized without afterResize(): assume the whole new area was written.
            const old = data.size;
            data.resize(size);
            if (size > old) data.setRange(old, size - old);
          }
          // Cleared first: a write landing while the bits are copied out sets it again.
          slot.changed = false;
          taken.push(slot);
          tables.set(slot, await this.#writeBitmap(data));
        }
        await this.#switchDirectory(this.#directoryEntries(tables, false));
      } catch (e) {
        for (const slot of taken) slot.changed = true;
        throw e;
      }
      const frees = this.#pendingFrees;
      this.#pendingFrees = [];
      for (const [slot, t] of tables) {
        if (slot.stored !== undefined) frees.push(...this.#clustersOf(slot.stored, slot.storedEntries ?? []));
        slot.stored = { offset: t.offset, size: t.size };
        slot.storedEntries = t.entries;
      }
      for (const [off, n] of frees) await rc.free(off, n);
      await this.#w!.flushLocked();
    });
    this.#inUseOnDisk = false;
    this.#dirty = false;
    return { lost };
  }

  /** Refuse before allocating when all bitmaps together would exceed the memory budget. */
  #reserveMemory(size: number, granularityBits: number): void {
    let used = 0;
    for (const slot of this.#slots) if (slot.data !== undefined) used += slot.data.bytes.byteLength;
    const need = Math.ceil(DirtyBitmap.bitsFor(size, granularityBits) / 8);
    if (used + need > this.#budget) {
      throw new Qcow2Error('UNSUPPORTED', `Dirty bitmaps need more than ${this.#budget} bytes of memory`, { used, need, budget: this.#budget });
    }
  }

  #info(slot: Slot): BitmapInfo {
    return { name: slot.name, granularity: 2 ** slot.granularityBits, enabled: slot.enabled, inconsistent: slot.inconsistent };
  }

  #find(name: string): Slot | undefined {
    return this.#slots.find((x) => x.name === name);
  }

  /** A bitmap that exists and is consistent. */
  #usable(name: string): Slot {
    const slot = this.#find(name);
    if (slot === undefined) throw notFound(name);
    if (slot.inconsistent) throw inconsistent(name);
    return slot;
  }

  async #setEnabled(name: string, enabled: boolean): Promise<void> {
    this.#requireWritable();
    const slot = this.#usable(name);
    if (enabled) await this.#load(slot);
    if (slot.enabled !== enabled) {
      slot.enabled = enabled;
      this.#dirty = true;
    }
    this.#refreshTracking();
  }

  #refreshTracking(): void {
    this.#tracking = this.#w === undefined ? [] : this.#slots.filter((x) => x.enabled && !x.inconsistent && x.data !== undefined);
  }

  #requireWritable(): void {
    if (this.#w === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
  }

  #rc(): Refcounts {
    const rc = this.#s.refcounts;
    if (rc === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
    return rc;
  }

  /** Read a stored table, with QEMU's entry checks. */
  async #readTable(slot: Slot): Promise<BitmapTableEntry[]> {
    const stored = slot.stored!;
    // The directory check bounds size * cluster size by 512 MiB, so this is at most 8 MiB.
    const bytes = new Uint8Array(stored.size * BITMAP_TABLE_ENTRY_SIZE);
    await this.#s.storage.read(bytes, stored.offset);
    try {
      return decodeBitmapTable(bytes, this.#s.clusterSize);
    } catch (e) {
      if (!(e instanceof Qcow2Error)) throw e;
      // QEMU's text (it reports -EINVAL); the detail stays in the context.
      throw invalidImage(`Could not read bitmap_table table from image for bitmap '${slot.name}': Invalid argument`, { bitmap: slot.name, reason: e.message });
    }
  }

  /** The bits of a consistent bitmap, read on first use (QEMU's load_bitmap). */
  #load(slot: Slot): Promise<DirtyBitmap> {
    if (slot.data !== undefined) return Promise.resolve(slot.data);
    if (slot.inconsistent) return Promise.reject(inconsistent(slot.name));
    slot.loading ??= (async () => {
      try {
        const s = this.#s;
        const cs = s.clusterSize;
        const size = s.meta.header.size;
        const entries = await this.#readTable(slot);
        if (entries.length !== DirtyBitmap.tableSizeFor(size, slot.granularityBits, cs)) {
          throw invalidImage(`Could not read bitmap '${slot.name}' from image: Invalid argument`, { bitmap: slot.name, reason: `bitmap table size ${entries.length} does not match the disk size` });
        }
        this.#reserveMemory(size, slot.granularityBits);
        const data = new DirtyBitmap(size, slot.granularityBits);
        const buf = new Uint8Array(cs);
        for (let i = 0; i < entries.length; i++) {
          const e = entries[i]!;
          if (e === BITMAP_CLUSTER_ZERO) continue;
          if (e === BITMAP_CLUSTER_ONES) {
            data.fillCluster(i, cs);
            continue;
          }
          await s.storage.read(buf, e);
          data.loadCluster(i, cs, buf);
        }
        slot.storedEntries = entries;
        slot.data = data;
        this.#refreshTracking();
        return data;
      } finally {
        slot.loading = undefined;
      }
    })();
    return slot.loading;
  }

  /** Write a bitmap's data clusters and table to new clusters (lock held). */
  async #writeBitmap(data: DirtyBitmap): Promise<{ offset: number; size: number; entries: BitmapTableEntry[] }> {
    const s = this.#s;
    const rc = this.#rc();
    const cs = s.clusterSize;
    const n = DirtyBitmap.tableSizeFor(data.size, data.granularityBits, cs);
    const entries: BitmapTableEntry[] = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const state = data.clusterState(i, cs);
      if (state === 'zero') entries[i] = BITMAP_CLUSTER_ZERO;
      else if (state === 'ones') entries[i] = BITMAP_CLUSTER_ONES;
      else {
        const off = await rc.allocate(1);
        await s.storage.write(data.clusterBytes(i, cs), off);
        entries[i] = off;
      }
    }
    const table = encodeBitmapTable(entries);
    const offset = await rc.allocate(Math.ceil(table.byteLength / cs));
    await s.storage.write(table, offset);
    return { offset, size: n, entries };
  }

  /** Host clusters of a stored bitmap: its table and its data clusters. */
  #clustersOf(stored: { offset: number; size: number }, entries: readonly BitmapTableEntry[]): [number, number][] {
    const cs = this.#s.clusterSize;
    const out: [number, number][] = [[stored.offset, Math.ceil((stored.size * BITMAP_TABLE_ENTRY_SIZE) / cs)]];
    for (const off of bitmapDataClusters(entries)) out.push([off, 1]);
    return out;
  }

  /** Directory entries for the stored bitmaps; `newTables` overrides where tables live. */
  #directoryEntries(newTables: Map<Slot, { offset: number; size: number }>, inUse: boolean): BitmapDirectoryEntry[] {
    const out: BitmapDirectoryEntry[] = [];
    for (const slot of this.#slots) {
      const t = newTables.get(slot) ?? slot.stored;
      if (t === undefined) continue;
      out.push(dirEntry(slot.name, slot.granularityBits, t.offset, t.size, slot.inconsistent || inUse, slot.enabled));
    }
    return out;
  }

  /**
   * Point the header at a new directory (or at none): write it to new clusters, make
   * everything durable, rewrite cluster 0 with the bitmaps extension and autoclear bit, then
   * free the old directory. Lock held.
   */
  async #switchDirectory(entries: BitmapDirectoryEntry[]): Promise<void> {
    const s = this.#s;
    const h = s.meta.header;
    const rc = this.#rc();
    const cs = s.clusterSize;
    let ext: HeaderExtension | undefined;
    let directory: { offset: number; size: number } | undefined;
    if (entries.length > 0) {
      const bytes = encodeBitmapDirectory(entries);
      const offset = await rc.allocate(Math.ceil(bytes.byteLength / cs));
      await s.storage.write(bytes, offset);
      directory = { offset, size: bytes.byteLength };
      ext = { type: EXT_BITMAPS, data: encodeBitmapsExtension({ nbBitmaps: entries.length, directorySize: bytes.byteLength, directoryOffset: offset }) };
    }
    await this.#w!.flushLocked();
    const oldAutoclear = h.autoclearFeatures;
    if (h.version >= 3) h.autoclearFeatures = withBit(h.autoclearFeatures, AUTOCLEAR_BITMAPS, ext !== undefined);
    const exts = withBitmapsExtension(s.meta.extensions, ext);
    try {
      await rewriteCluster0(s, exts);
    } catch (e) {
      h.autoclearFeatures = oldAutoclear;
      throw e;
    }
    await s.storage.flush();
    s.meta.extensions = exts;
    s.meta.bitmaps = entries;
    const old = this.#directory;
    this.#directory = directory;
    if (old !== undefined) await rc.free(old.offset, Math.ceil(old.size / cs));
  }
}

function dirEntry(name: string, granularityBits: number, tableOffset: number, tableSize: number, inUse: boolean, auto: boolean): BitmapDirectoryEntry {
  return { name, granularityBits, flags: { inUse, auto }, type: BITMAP_TYPE_DIRTY_TRACKING, tableOffset, tableSize, extraData: new Uint8Array(0) };
}

/** `exts` with the bitmaps extension replaced, removed (`ext` undefined) or added where QEMU puts it. */
export function withBitmapsExtension(exts: readonly HeaderExtension[], ext: HeaderExtension | undefined): HeaderExtension[] {
  const out = exts.filter((e) => e.type !== EXT_BITMAPS);
  if (ext === undefined) return out;
  const at = exts.findIndex((e) => e.type === EXT_BITMAPS);
  if (at >= 0) {
    out.splice(exts.slice(0, at).filter((e) => e.type !== EXT_BITMAPS).length, 0, ext);
    return out;
  }
  let insert = 0;
  out.forEach((e, i) => {
    if (BEFORE_BITMAPS.has(e.type)) insert = i + 1;
  });
  out.splice(insert, 0, ext);
  return out;
}

