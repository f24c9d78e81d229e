/**
 * The storage a fuzz case runs on: an in-memory image that
 * - refuses to grow past a cap (a full disk: Qcow2Error 'IO', an expected failure),
 * - fails every operation once the case's deadline has passed, so abandoned work stops soon,
 * - treats an offset that is negative, fractional or unsafe as a library bug (a HarnessViolation,
 *   never a Qcow2Error), since such an offset would silently read the wrong bytes.
 */
import { Qcow2Error } from '../errors.js';
import { MemoryStorage } from '../storage/memory-storage.js';
import type { Storage } from '../storage/storage.js';

/** Thrown by the harness itself when the code under test misuses it; always a finding. */
export class HarnessViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HarnessViolation';
  }
}

/** Thrown once the deadline of the case has passed. */
export class HarnessTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HarnessTimeout';
  }
}

/** Limits shared by the storages of one case. */
export interface FuzzStorageLimits {
  /** `Date.now()` after which every operation fails. */
  deadline: number;
  /** Largest size the store may reach (bytes). */
  maxSize: number;
}

function checkOffset(name: string, op: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > Number.MAX_SAFE_INTEGER) {
    throw new HarnessViolation(`${name}: ${op} at invalid offset ${offset} length ${length}`);
  }
}

/**
 * A MemoryStorage with the fuzz limits.
 *
 * @example
 * ```ts
 * const st = new FuzzStorage(bytes, 'fuzz.qcow2', false, { deadline: Date.now() + 5000, maxSize: 64 << 20 });
 * ```
 */
export class FuzzStorage implements Storage {
  readonly name: string;
  readonly readOnly: boolean;
  readonly #mem: MemoryStorage;
  readonly #limits: FuzzStorageLimits;
  /** Operations performed (reads + writes), for statistics. */
  ops = 0;

  constructor(bytes: Uint8Array, name: string, readOnly: boolean, limits: FuzzStorageLimits) {
    this.#mem = new MemoryStorage(bytes, name, readOnly);
    this.name = name;
    this.readOnly = readOnly;
    this.#limits = limits;
  }

  bytes(): Uint8Array {
    return this.#mem.bytes();
  }

  #tick(): void {
    this.ops++;
    if (Date.now() > this.#limits.deadline) throw new HarnessTimeout(`${this.name}: case deadline passed`);
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    this.#tick();
    checkOffset(this.name, 'read', offset, dst.byteLength);
    await this.#mem.read(dst, offset);
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#tick();
    checkOffset(this.name, 'write', offset, src.byteLength);
    if (this.readOnly) throw new Qcow2Error('READ_ONLY', `${this.name}: storage is read-only`);
    if (offset + src.byteLength > this.#limits.maxSize) {
      throw new Qcow2Error('IO', `${this.name}: No space left on device (write at ${offset})`, { offset });
    }
    await this.#mem.write(src, offset);
  }

  async size(): Promise<number> {
    this.#tick();
    return this.#mem.size();
  }

  async resize(size: number): Promise<void> {
    this.#tick();
    checkOffset(this.name, 'resize', size, 0);
    if (this.readOnly) throw new Qcow2Error('READ_ONLY', `${this.name}: storage is read-only`);
    if (size > this.#limits.maxSize) throw new Qcow2Error('IO', `${this.name}: No space left on device (resize to ${size})`, { size });
    await this.#mem.resize(size);
  }

  async flush(): Promise<void> {
    this.#tick();
    await this.#mem.flush();
  }

  async close(): Promise<void> {
    await this.#mem.close();
  }

  async identity(): Promise<string> {
    return `fuzz:${this.name}`;
  }
}
