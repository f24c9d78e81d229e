import type { DependencyRequest, DriverWriter, FormatDriver, Mapping } from '../driver.js';
import type { Storage } from '../../storage/storage.js';
import { Qcow2Error } from '../../errors.js';

/**
 * The raw format: guest offset = host offset, everything is data. Hole detection would need
 * lseek(SEEK_DATA), which neither Node's fs nor browsers offer, so holes map as data.
 *
 * @example
 * ```ts
 * const drv = await RawDriver.open(storage);
 * ```
 */
export class RawDriver implements FormatDriver {
  readonly format = 'raw';
  readonly clusterSize = 512;
  readonly backing: DependencyRequest | undefined = undefined;
  readonly storage: Storage;
  /** Guest offset = host offset in the file itself. */
  get dataStorage(): Storage {
    return this.storage;
  }
  readonly writer: DriverWriter | undefined;
  #fileSize: number;

  private constructor(storage: Storage, fileSize: number) {
    this.storage = storage;
    this.#fileSize = fileSize;
    this.writer = storage.readOnly ? undefined : rawWriter(storage, (n) => (this.#fileSize = n));
  }

  get size(): number {
    return Math.ceil(this.#fileSize / 512) * 512;
  }

  static async open(storage: Storage): Promise<RawDriver> {
    return new RawDriver(storage, await storage.size());
  }

  async getMapping(offset: number, maxLength: number): Promise<Mapping> {
    if (offset >= this.size || maxLength <= 0) return { kind: 'eof', length: 0 };
    // Like QEMU, the virtual size is the file size rounded up to whole sectors; the tail of the
    // last sector reads as zeros.
    if (offset >= this.#fileSize) return { kind: 'zero', length: Math.min(maxLength, this.size - offset), storage: this.storage, hostOffset: offset };
    return { kind: 'data', length: Math.min(maxLength, this.#fileSize - offset), storage: this.storage, hostOffset: offset };
  }

  async readCompressed(): Promise<void> {
    throw new Qcow2Error('INVALID_ARGUMENT', 'raw images have no compressed clusters');
  }

  async close(): Promise<void> {}
}

/** Raw writes go straight to the storage at the guest offset. */
function rawWriter(storage: Storage, setSize: (size: number) => void): DriverWriter {
  return {
    writeData: (offset, src) => storage.write(src, offset),
    async resize(size) {
      await storage.resize(size);
      setSize(size);
    },
    async writeZeroes(offset, length) {
      if (storage.writeZeroes !== undefined) return storage.writeZeroes(offset, length);
      for (let p = offset; p < offset + length; p += 4 << 20) await storage.write(new Uint8Array(Math.min(4 << 20, offset + length - p)), p);
    },
    async discard(offset, length) {
      // QEMU punches a hole, which then reads as zeros; keep that observable result.
      if (storage.discard !== undefined) return storage.discard(offset, length);
      return this.writeZeroes(offset, length, true, async () => {});
    },
    flush: () => storage.flush(),
    close: () => storage.flush(),
  };
}
