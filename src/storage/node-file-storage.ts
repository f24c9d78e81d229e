// Node-only: positional I/O on a file descriptor. Never reads a whole image into memory.
import { isAbsolute } from 'node:path';
import { Qcow2Error } from '../errors.js';
import { closeFd, fdatasyncFd, fstatFd, ftruncateFd, openFd, readAt, statPath, writeAt, writevAt } from './node-fs.js';
import { WriteCombiner } from './write-combiner.js';
import type { Storage, StorageOpenOptions, StorageResolver } from './storage.js';

/**
 * Most bytes one pwritev carries. Two of `bench -w`'s 64 KiB requests per batch, two batches in
 * flight, was the fastest of 1-4 requests and 2-4 batches (see WriteCombiner).
 */
const WRITE_BATCH_BYTES = 128 << 10;
/** Batches of small writes in flight at once; more small writes wait and join up meanwhile. */
const WRITE_BATCHES_RUNNING = 2;

/**
 * A file on the local file system.
 *
 * @example
 * ```ts
 * const file = await NodeFileStorage.open('disk.qcow2', { readOnly: true });
 * ```
 */
export class NodeFileStorage implements Storage {
  readonly name: string;
  readonly readOnly: boolean;
  /** The descriptor; -1 once closed. */
  #fd: number;
  #closing: Promise<void> | undefined;
  #size: number;

  private constructor(name: string, fd: number, size: number, readOnly: boolean) {
    this.name = name;
    this.#fd = fd;
    this.#size = size;
    this.readOnly = readOnly;
  }

  /** Open an existing file (or create it with `create: true`). */
  static async open(name: string, options: StorageOpenOptions & { create?: boolean; truncate?: boolean } = {}): Promise<NodeFileStorage> {
    const readOnly = options.readOnly ?? false;
    const flags = readOnly ? 'r' : options.create ? (options.truncate ? 'w+' : 'a+') : 'r+';
    let fd: number;
    try {
      // 'a+' would force appends; open with 'w+'/'r+' semantics instead.
      fd = await openFd(name, flags === 'a+' ? 'r+' : flags).catch(async (e: NodeJS.ErrnoException) => {
        if (flags === 'a+' && e.code === 'ENOENT') return openFd(name, 'w+');
        throw e;
      });
    } catch (e) {
      throw fileError(name, e);
    }
    let size: number;
    try {
      const st = await fstatFd(fd);
      if (st.isDirectory()) throw notRegularFile(name);
      size = st.size;
    } catch (e) {
      // Nothing else closes a bare descriptor (a FileHandle would be, at garbage collection).
      await closeFd(fd).catch(() => undefined);
      throw e;
    }
    return new NodeFileStorage(name, fd, size, readOnly);
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    const want = Math.max(0, Math.min(dst.byteLength, this.#size - offset));
    let done = 0;
    while (done < want) {
      const bytesRead = await this.#track(readAt(this.#fd, dst, done, want - done, offset + done));
      if (bytesRead === 0) break; // file shrank underneath us: rest reads as zero
      done += bytesRead;
    }
    if (done < dst.byteLength) dst.fill(0, done);
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) return Promise.reject(new Qcow2Error('READ_ONLY', `${this.name}: file is open read-only`));
    return this.#writes.write(src, offset);
  }

  /** Small adjacent writes go out together, as one pwritev (see WriteCombiner). */
  readonly #writes = new WriteCombiner(
    {
      write: async (src, offset) => {
        let done = 0;
        while (done < src.byteLength) done += await this.#track(writeAt(this.#fd, src, done, src.byteLength - done, offset + done));
        this.#grown(offset + src.byteLength);
      },
      writev: async (buffers, offset) => {
        const n = await this.#track(writevAt(this.#fd, buffers, offset));
        this.#grown(offset + n);
        return n;
      },
    },
    WRITE_BATCH_BYTES,
    WRITE_BATCHES_RUNNING,
  );

  #grown(end: number): void {
    if (end > this.#size) this.#size = end;
  }

  /** Operations on the descriptor still running (close waits for them). */
  readonly #inFlight = new Set<Promise<unknown>>();

  #track<T>(op: Promise<T>): Promise<T> {
    this.#inFlight.add(op);
    const done = (): void => void this.#inFlight.delete(op);
    op.then(done, done);
    return op;
  }

  async size(): Promise<number> {
    return this.#size;
  }

  async resize(size: number): Promise<void> {
    if (this.readOnly) throw new Qcow2Error('READ_ONLY', `${this.name}: file is open read-only`);
    await this.#track(ftruncateFd(this.#fd, size));
    this.#size = size;
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.#track(fdatasyncFd(this.#fd));
  }

  /** Idempotent like FileHandle.close(): a second close must not close a reused number. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Closing under operations still in flight could let a new file reuse the number while
    // they run.
    await this.#writes.drain();
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    const fd = this.#fd;
    this.#fd = -1;
    await closeFd(fd);
  }

  async identity(): Promise<string> {
    const st = await this.#track(fstatFd(this.#fd, { bigint: true }));
    return `file:${st.dev}:${st.ino}`;
  }

  async allocatedSize(): Promise<number> {
    const st = await this.#track(fstatFd(this.#fd));
    return st.blocks * 512;
  }
}

/** QEMU's file driver refuses directories with these words (the CLI adds "Could not open"). */
function notRegularFile(name: string): Qcow2Error {
  return new Qcow2Error('IO', `'file' driver requires '${name}' to be a regular file`, { path: name });
}

/** Map a Node fs error to a Qcow2Error with qemu-img's wording. */
export function fileError(name: string, e: unknown): Qcow2Error {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return new Qcow2Error('NOT_FOUND', `Could not open '${name}': No such file or directory`, { path: name });
  if (err.code === 'EACCES' || err.code === 'EPERM') return new Qcow2Error('IO', `Could not open '${name}': Permission denied`, { path: name });
  if (err.code === 'EISDIR') return new Qcow2Error('IO', `Could not open '${name}': Is a directory`, { path: name });
  return new Qcow2Error('IO', `Could not open '${name}': ${err.message}`, { path: name }, { cause: e });
}

/**
 * Resolves names the way qemu-img does: relative names are relative to the directory of
 * the referencing image; absolute names are used as they are.
 */
export class NodeFileResolver implements StorageResolver {
  resolveName(name: string, from: Storage | undefined): string {
    if (isAbsolute(name) || from === undefined) return name;
    // Like QEMU's path_combine: keep the referencing name's directory part verbatim.
    const slash = from.name.lastIndexOf('/');
    return slash < 0 ? name : from.name.slice(0, slash + 1) + name;
  }

  async open(name: string, from: Storage | undefined, options: StorageOpenOptions): Promise<Storage> {
    return NodeFileStorage.open(this.resolveName(name, from), options);
  }
}

/** True when `name` exists (used by the CLI for better messages). */
export async function fileExists(name: string): Promise<boolean> {
  try {
    await statPath(name);
    return true;
  } catch {
    return false;
  }
}
