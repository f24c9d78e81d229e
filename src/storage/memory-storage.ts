import { Qcow2Error } from '../errors.js';
import type { Storage } from './storage.js';

/**
 * A growable in-memory store. Useful for tests, browsers and building images in memory.
 *
 * @example
 * ```ts
 * const mem = new MemoryStorage(new Uint8Array(1024), 'scratch');
 * await mem.write(new Uint8Array([1, 2, 3]), 10);
 * ```
 */
export class MemoryStorage implements Storage {
  readonly name: string;
  readonly readOnly: boolean;
  #data: Uint8Array;
  #size: number;
  #closed = false;

  constructor(initial: Uint8Array = new Uint8Array(0), name = 'memory', readOnly = false) {
    this.#data = initial;
    this.#size = initial.byteLength;
    this.name = name;
    this.readOnly = readOnly;
  }

  /** The current contents (a view, not a copy). */
  bytes(): Uint8Array {
    return this.#data.subarray(0, this.#size);
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    this.#check();
    const avail = Math.max(0, Math.min(dst.byteLength, this.#size - offset));
    if (avail > 0) dst.set(this.#data.subarray(offset, offset + avail));
    if (avail < dst.byteLength) dst.fill(0, avail);
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#check();
    if (this.readOnly) throw new Qcow2Error('READ_ONLY', `${this.name}: storage is read-only`);
    const end = offset + src.byteLength;
    if (end > this.#size) this.#grow(end);
    this.#data.set(src, offset);
  }

  async size(): Promise<number> {
    this.#check();
    return this.#size;
  }

  async resize(size: number): Promise<void> {
    this.#check();
    if (this.readOnly) throw new Qcow2Error('READ_ONLY', `${this.name}: storage is read-only`);
    if (size > this.#size) this.#grow(size);
    else {
      this.#data.fill(0, size, this.#size);
      this.#size = size;
    }
  }

  async flush(): Promise<void> {
    this.#check();
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #grow(size: number): void {
    if (size > this.#data.byteLength) {
      const next = new Uint8Array(Math.max(size, Math.min(this.#data.byteLength * 2, size + (64 << 20))));
      next.set(this.#data.subarray(0, this.#size));
      this.#data = next;
    }
    this.#size = size;
  }

  #check(): void {
    if (this.#closed) throw new Qcow2Error('IO', `${this.name}: storage is closed`);
  }
}
