/**
 * A byte store addressed by offset: a file, a memory buffer, an HTTP resource, a Blob.
 * Everything above the storage layer talks to bytes only through this interface.
 *
 * @example
 * ```ts
 * const buf = new Uint8Array(512);
 * await storage.read(buf, 0); // fills buf from offset 0; bytes past the end read as zero
 * ```
 */
export interface Storage {
  /** Human-readable name (a path or URL) for messages and `info`. */
  readonly name: string;
  /** True when write/resize are refused. */
  readonly readOnly: boolean;
  /**
   * Fill `dst` with the bytes at `offset`. Bytes past the end of the store read as zero,
   * as they do for a file opened by QEMU.
   */
  read(dst: Uint8Array, offset: number): Promise<void>;
  /** Write `src` at `offset`, growing the store if needed. */
  write(src: Uint8Array, offset: number): Promise<void>;
  /** Current size in bytes. */
  size(): Promise<number>;
  /** Set the size (truncate or extend with zeros). */
  resize(size: number): Promise<void>;
  /** Make previous writes durable. */
  flush(): Promise<void>;
  /** Release resources. Further calls fail. */
  close(): Promise<void>;
  /** Bytes actually allocated on the host (for `info`'s disk size), when known. */
  allocatedSize?(): Promise<number | undefined>;
  /**
   * A string equal for two storages exactly when they are the same underlying object (for
   * files: device and inode), used to detect backing-chain loops through different names.
   */
  identity?(): Promise<string>;
  /** Write zeros efficiently (punch or zero-range) where the store can. */
  writeZeroes?(offset: number, length: number): Promise<void>;
  /** Tell the store a range is unused. */
  discard?(offset: number, length: number): Promise<void>;
}

/** How a storage should be opened. */
export interface StorageOpenOptions {
  readOnly?: boolean;
}

/**
 * Opens storages by name relative to another storage: how a qcow2 image finds its backing
 * file or external data file. Implemented by the Node file layer and by callers.
 */
export interface StorageResolver {
  /**
   * Open `name` as referenced from `from` (for example relative to its directory).
   * Throws Qcow2Error('NOT_FOUND') when it does not exist.
   */
  open(name: string, from: Storage | undefined, options: StorageOpenOptions): Promise<Storage>;
  /** The name under which `name` (as referenced from `from`) will be opened, for `info`'s full-backing-filename. */
  resolveName(name: string, from: Storage | undefined): string;
}
