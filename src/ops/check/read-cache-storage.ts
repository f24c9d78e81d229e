/**
 * A read cache in front of the image file for the duration of a check. A hostile L1 table can
 * name the same few clusters millions of times, and the check (like QEMU's) reads an L2 table
 * per entry: served from memory those reads cost a copy instead of a trip to the file system.
 * Writes go through to the file at once and update the cached bytes, so the cache never holds
 * anything the file does not.
 */
import type { Storage } from '../../storage/storage.js';

/** Bytes per cached chunk. */
const CHUNK = 64 * 1024;
/** Reads at least this large go straight to the file (tables read once, like the L1 table). */
const BYPASS = 1024 * 1024;
/** Default memory budget. */
const DEFAULT_BUDGET = 32 * 1024 * 1024;

/**
 * @example
 * ```ts
 * const img = await CheckImage.open(new ReadCacheStorage(storage), { writable: true });
 * ```
 */
export class ReadCacheStorage implements Storage {
  readonly #inner: Storage;
  readonly #maxChunks: number;
  /** Chunk index -> bytes, least recently used first. */
  readonly #chunks = new Map<number, Uint8Array>();
  #mru = -1;

  constructor(inner: Storage, budgetBytes = DEFAULT_BUDGET) {
    this.#inner = inner;
    this.#maxChunks = Math.max(1, Math.floor(budgetBytes / CHUNK));
  }

  get name(): string {
    return this.#inner.name;
  }

  get readOnly(): boolean {
    return this.#inner.readOnly;
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    const length = dst.byteLength;
    if (length === 0) return;
    if (length >= BYPASS || !Number.isSafeInteger(offset + length + CHUNK)) {
      await this.#inner.read(dst, offset);
      return;
    }
    let done = 0;
    while (done < length) {
      const at = offset + done;
      const index = Math.floor(at / CHUNK);
      const chunk = await this.#chunk(index);
      const from = at - index * CHUNK;
      const n = Math.min(CHUNK - from, length - done);
      dst.set(chunk.subarray(from, from + n), done);
      done += n;
    }
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    await this.#inner.write(src, offset);
    const end = offset + src.byteLength;
    for (let index = Math.floor(offset / CHUNK); index * CHUNK < end; index++) {
      const chunk = this.#chunks.get(index);
      if (chunk === undefined) continue;
      const start = Math.max(offset, index * CHUNK);
      const stop = Math.min(end, (index + 1) * CHUNK);
      chunk.set(src.subarray(start - offset, stop - offset), start - index * CHUNK);
    }
  }

  size(): Promise<number> {
    return this.#inner.size();
  }

  async resize(size: number): Promise<void> {
    this.#chunks.clear();
    this.#mru = -1;
    await this.#inner.resize(size);
  }

  flush(): Promise<void> {
    return this.#inner.flush();
  }

  close(): Promise<void> {
    this.#chunks.clear();
    return this.#inner.close();
  }

  async #chunk(index: number): Promise<Uint8Array> {
    const hit = this.#chunks.get(index);
    if (hit !== undefined) {
      if (index !== this.#mru) {
        this.#chunks.delete(index);
        this.#chunks.set(index, hit);
        this.#mru = index;
      }
      return hit;
    }
    while (this.#chunks.size >= this.#maxChunks) {
      const oldest = this.#chunks.keys().next().value as number;
      this.#chunks.delete(oldest);
    }
    const bytes = new Uint8Array(CHUNK);
    await this.#inner.read(bytes, index * CHUNK);
    this.#chunks.set(index, bytes);
    this.#mru = index;
    return bytes;
  }
}
