/**
 * A least-recently-used cache bounded by total byte size. Concurrent loads of the same key
 * share one promise, so a table is read from storage once however many requests want it.
 *
 * @example
 * ```ts
 * const cache = new LruCache<number, Uint8Array>(1 << 20, (b) => b.byteLength);
 * const table = await cache.get(offset, () => readTable(offset));
 * ```
 */
export class LruCache<K, V> {
  readonly #budget: number;
  readonly #sizeOf: (value: V) => number;
  readonly #entries = new Map<K, V>();
  readonly #loading = new Map<K, Promise<V>>();
  #bytes = 0;

  constructor(budgetBytes: number, sizeOf: (value: V) => number) {
    this.#budget = budgetBytes;
    this.#sizeOf = sizeOf;
  }

  /** Cached value without loading; refreshes its recency. */
  peek(key: K): V | undefined {
    const v = this.#entries.get(key);
    if (v !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, v);
    }
    return v;
  }

  /** The cached value, or the result of `load` (stored, evicting the least recently used). */
  get(key: K, load: () => Promise<V>): Promise<V> | V {
    const hit = this.peek(key);
    if (hit !== undefined) return hit;
    const pending = this.#loading.get(key);
    if (pending !== undefined) return pending;
    const p = load().then(
      (v) => {
        this.#loading.delete(key);
        this.set(key, v);
        return v;
      },
      (e: unknown) => {
        this.#loading.delete(key);
        throw e;
      },
    );
    this.#loading.set(key, p);
    return p;
  }

  set(key: K, value: V): void {
    const old = this.#entries.get(key);
    if (old !== undefined) {
      this.#bytes -= this.#sizeOf(old);
      this.#entries.delete(key);
    }
    this.#entries.set(key, value);
    this.#bytes += this.#sizeOf(value);
    // Always keep the newest entry, even if it alone exceeds the budget.
    for (const [k, v] of this.#entries) {
      if (this.#bytes <= this.#budget || this.#entries.size <= 1) break;
      this.#entries.delete(k);
      this.#bytes -= this.#sizeOf(v);
    }
  }

  delete(key: K): void {
    const old = this.#entries.get(key);
    if (old !== undefined) {
      this.#bytes -= this.#sizeOf(old);
      this.#entries.delete(key);
    }
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  /** Bytes currently held. */
  get bytes(): number {
    return this.#bytes;
  }
}
