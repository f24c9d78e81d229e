import type { Storage } from '../../storage/storage.js';

/** Options for {@link TableCache}. */
export interface TableCacheOptions {
  /**
   * Load tables into the memory of tables evicted before, instead of fresh memory (fresh
   * memory costs a page fault per 4 KiB: for `map` of a 64 GiB image, 2,048 faults). Only for
   * owners that never keep a table across an await: they take tables from `peek`, or from
   * `use`, which checks that a loaded table was not reused before its callback ran. Once a
   * table leaves the cache, its bytes may be overwritten by another load.
   */
  recycle?: boolean;
}

/** Evicted tables kept for reuse, at most. */
const SPARE_TABLES = 4;

/** A cached metadata table (one cluster) and whether memory differs from disk. */
interface Entry {
  bytes: Uint8Array;
  dirty: boolean;
}

/**
 * Write-back cache of cluster-sized metadata tables (L2 tables, refcount blocks) keyed by
 * host offset. Clean tables are evicted least-recently-used past the byte budget; dirty ones
 * stay until `writeDirty` puts them on disk, so the owner decides the order in which
 * structures reach the disk.
 *
 * @example
 * ```ts
 * const l2 = new TableCache(storage, 65536, 1 << 20);
 * const table = await l2.get(0x40000);
 * table[0] = 1;
 * l2.markDirty(0x40000);
 * await l2.writeDirty();
 * ```
 */
export class TableCache {
  readonly #storage: Storage;
  readonly #tableSize: number;
  readonly #budget: number;
  readonly #entries = new Map<number, Entry>();
  readonly #loading = new Map<number, Promise<Uint8Array>>();
  /** The key last moved to the end of the LRU order (-1: none). */
  #mru = -1;
  /** Memory of evicted tables, for the next loads (with `recycle`). */
  readonly #spare: Uint8Array[] | undefined;

  constructor(storage: Storage, tableSize: number, budgetBytes: number, options: TableCacheOptions = {}) {
    this.#storage = storage;
    this.#tableSize = tableSize;
    this.#budget = Math.max(budgetBytes, 2 * tableSize);
    this.#spare = options.recycle === true ? [] : undefined;
  }

  /** How many tables fit in the budget. */
  get capacity(): number {
    return Math.floor(this.#budget / this.#tableSize);
  }

  /** True when the table is cached or being loaded (no I/O, no LRU update). */
  has(offset: number): boolean {
    return this.#entries.has(offset) || this.#loading.has(offset);
  }

  /** The cached table, if present (no I/O). */
  peek(offset: number): Uint8Array | undefined {
    const e = this.#entries.get(offset);
    if (e === undefined) return undefined;
    // Scans hit the same table many times in a row: it is already the most recent then.
    if (offset !== this.#mru) {
      this.#entries.delete(offset);
      this.#entries.set(offset, e);
      this.#mru = offset;
    }
    return e.bytes;
  }

  /** The table at `offset`, read from storage on a miss (concurrent misses share one read). */
  get(offset: number): Promise<Uint8Array> | Uint8Array {
    const hit = this.peek(offset);
    if (hit !== undefined) return hit;
    let p = this.#loading.get(offset);
    if (p === undefined) {
      p = this.#load(offset);
      this.#loading.set(offset, p);
    }
    return p;
  }

  /**
   * `fn(table)` for the table at `offset`: at once on a hit, once loaded on a miss (`onMiss`
   * runs when the load has started). With `recycle`, a table evicted before `fn` could run may
   * hold another table's bytes by then: `fn` gets a private copy, read again, instead.
   */
  use<T>(offset: number, fn: (table: Uint8Array) => T, onMiss?: () => void): T | Promise<T> {
    const cached = this.get(offset);
    if (cached instanceof Uint8Array) return fn(cached);
    onMiss?.();
    return cached.then((t) => (this.#spare === undefined || this.peek(offset) === t ? fn(t) : this.#readPrivate(offset).then(fn)));
  }

  async #readPrivate(offset: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(this.#tableSize);
    await this.#storage.read(bytes, offset);
    return bytes;
  }

  async #load(offset: number): Promise<Uint8Array> {
    try {
      const bytes = this.#spare?.pop() ?? new Uint8Array(this.#tableSize);
      await this.#storage.read(bytes, offset);
      // A table created in memory meanwhile (new allocation) wins over stale disk bytes.
      const raced = this.#entries.get(offset);
      if (raced !== undefined) return raced.bytes;
      this.#insert(offset, { bytes, dirty: false });
      return bytes;
    } finally {
      this.#loading.delete(offset);
    }
  }

  /** Install a table that exists only in memory so far (a new allocation). */
  create(offset: number, bytes: Uint8Array = new Uint8Array(this.#tableSize)): Uint8Array {
    this.#insert(offset, { bytes, dirty: true });
    return bytes;
  }

  markDirty(offset: number): void {
    const e = this.#entries.get(offset);
    if (e !== undefined) e.dirty = true;
  }

  /** Drop a table (its cluster was freed). Pending changes are discarded. */
  forget(offset: number): void {
    this.#entries.delete(offset);
  }

  /** True when dirty tables exceed the budget and the owner should write them back. */
  get overBudget(): boolean {
    return this.#entries.size * this.#tableSize > this.#budget;
  }

  hasDirty(): boolean {
    for (const e of this.#entries.values()) if (e.dirty) return true;
    return false;
  }

  /** Offsets of dirty tables with their bytes. */
  dirtyTables(): [number, Uint8Array][] {
    const out: [number, Uint8Array][] = [];
    for (const [off, e] of this.#entries) if (e.dirty) out.push([off, e.bytes]);
    return out.sort((a, b) => a[0] - b[0]);
  }

  /** Write every dirty table (optionally transformed) and mark them clean. */
  async writeDirty(transform?: (offset: number, bytes: Uint8Array) => Uint8Array): Promise<void> {
    const dirty = this.dirtyTables();
    for (const [off, bytes] of dirty) {
      const e = this.#entries.get(off);
      if (e !== undefined) e.dirty = false;
      // Write a snapshot: later synchronous edits must not leak into a write still in flight.
      await this.#storage.write(transform ? transform(off, bytes) : bytes.slice(), off);
    }
    this.#evict();
  }

  clear(): void {
    this.#entries.clear();
    this.#spare?.splice(0);
  }

  #insert(offset: number, e: Entry): void {
    this.#entries.delete(offset);
    this.#entries.set(offset, e);
    this.#mru = offset;
    this.#evict();
  }

  #evict(): void {
    if (this.#entries.size * this.#tableSize <= this.#budget) return;
    for (const [off, e] of this.#entries) {
      if (this.#entries.size * this.#tableSize <= this.#budget) break;
      if (e.dirty) continue;
      this.#entries.delete(off);
      if (this.#spare !== undefined && this.#spare.length < SPARE_TABLES) this.#spare.push(e.bytes);
    }
  }
}
