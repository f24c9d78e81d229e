import type { FormatDriver } from '../format/driver.js';

/**
 * Status of a run of guest bytes after resolving the backing chain, with the same meaning
 * as qemu-img map's fields.
 */
export interface BlockStatus {
  /** Guest offset of the run. */
  offset: number;
  /** Length in bytes (> 0). */
  length: number;
  /** Index in the chain of the layer that decided the status (0 = this image). */
  depth: number;
  /** Some layer of the chain allocates the range (data or zero). */
  present: boolean;
  /** Reads as zeros. */
  zero: boolean;
  /** Holds data (possibly compressed). */
  data: boolean;
  /** Stored compressed. */
  compressed: boolean;
  /** Host offset when the run sits uncompressed at a host offset. */
  hostOffset?: number;
  /** Name of the storage holding `hostOffset`. */
  filename?: string;
}

/**
 * A virtual disk: a format driver plus its backing chain, read (and later written) by guest
 * offset.
 */
export interface ImageReader {
  /** Virtual size in bytes. */
  readonly size: number;
  /** The top layer's driver. */
  readonly driver: FormatDriver;
  /** The backing image, if any. */
  readonly backing: ImageReader | undefined;
  /** Fill `dst` with guest bytes from `offset`. `offset + dst.length` must be <= size. */
  read(dst: Uint8Array, offset: number): Promise<void>;
  /** Status of the run at `offset` (at most `maxLength` bytes), resolved through the chain. */
  blockStatus(offset: number, maxLength: number): Promise<BlockStatus>;
  /** The same answer when it needs no I/O, else undefined (optional: a fast path for scans). */
  blockStatusNow?(offset: number, maxLength: number): BlockStatus | undefined;
  /** Close this image and its whole backing chain. */
  close(): Promise<void>;
}
