/**
 * Positional reads through one cached window: many small reads of neighbouring bytes (snapshot
 * table fields) cost one storage read per window. Bytes past the end of the storage read as zero.
 */
import type { Storage } from '../../storage/storage.js';

const DEFAULT_WINDOW = 1 << 20;

export class WindowReader {
  readonly #storage: Storage;
  readonly #windowSize: number;
  #start = -1;
  #window: Uint8Array;

  constructor(storage: Storage, windowSize = DEFAULT_WINDOW) {
    this.#storage = storage;
    this.#windowSize = windowSize;
    this.#window = new Uint8Array(windowSize);
  }

  /**
   * `length` bytes at `offset` (a copy). Reads longer than the window bypass it.
   *
   * @example
   * ```ts
   * const fixed = await reader.read(tableOffset, 40);
   * ```
   */
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (length > this.#windowSize) {
      const out = new Uint8Array(length);
      await this.#storage.read(out, offset);
      return out;
    }
    if (this.#start < 0 || offset < this.#start || offset + length > this.#start + this.#windowSize) {
      await this.#storage.read(this.#window, offset);
      this.#start = offset;
    }
    const at = offset - this.#start;
    return this.#window.slice(at, at + length);
  }
}
