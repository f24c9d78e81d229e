import { Qcow2Error } from '../errors.js';
import type { CompressedRead, DriverWriter, FormatDriver, Mapping } from '../format/driver.js';
import { RangeLock } from '../util/range-lock.js';
import { LruCache } from '../util/lru-cache.js';
import type { BlockStatus, ImageReader } from './types.js';

type CompressedMapping = Extract<Mapping, { kind: 'compressed' }>;

/** Whole compressed clusters handed to the driver at once (their reads are merged). */
const COMPRESSED_BATCH = 32;

/** Decompressed clusters kept for small reads that hit the same cluster again. */
const COMPRESSED_CACHE_BYTES = 8 << 20;

/**
 * The generic engine over one format driver and its backing chain. It splits requests at
 * mapping boundaries, runs the pieces in parallel, and never reads bytes a mapping proves to
 * be zero.
 *
 * @example
 * ```ts
 * const image = new Image(driver, backingImage);
 * const buf = new Uint8Array(65536);
 * await image.read(buf, 0);
 * ```
 */
export class Image implements ImageReader {
  readonly driver: FormatDriver;
  readonly backing: Image | undefined;
  readonly #clusters: LruCache<number, Uint8Array>;

  constructor(driver: FormatDriver, backing?: Image) {
    this.driver = driver;
    this.backing = backing;
    this.#clusters = new LruCache(Math.max(COMPRESSED_CACHE_BYTES, driver.clusterSize), () => driver.clusterSize);
  }

  /** Virtual size in bytes. */
  get size(): number {
    return this.driver.size;
  }

  /** Number of layers in the chain, this one included. */
  get chainLength(): number {
    return 1 + (this.backing?.chainLength ?? 0);
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    checkRange(offset, dst.byteLength, this.size);
    const end = offset + dst.byteLength;
    const tasks: Promise<void>[] = [];
    // Whole compressed clusters in a row are decoded together: one file read for the lot.
    let batch: CompressedRead[] = [];
    const flushBatch = (): void => {
      if (batch.length > 0) tasks.push(this.driver.readCompressedClusters!(batch));
      batch = [];
    };
    const cs = this.driver.clusterSize;
    try {
      let pos = offset;
      while (pos < end) {
        const m = await this.driver.getMapping(pos, end - pos);
        if (m.kind === 'eof' || m.length <= 0) throw new Qcow2Error('IO', `Mapping ended early at offset ${pos}`, { offset: pos });
        const piece = dst.subarray(pos - offset, pos - offset + m.length);
        if (m.kind === 'compressed' && this.driver.readCompressedClusters !== undefined && pos === m.clusterGuestOffset && m.length === cs) {
          batch.push({ mapping: m, dst: piece });
          if (batch.length === COMPRESSED_BATCH) flushBatch();
          pos += m.length;
          continue;
        }
        flushBatch();
        switch (m.kind) {
          case 'data':
            tasks.push(m.storage.read(piece, m.hostOffset));
            break;
          case 'zero':
            piece.fill(0);
            break;
          case 'unallocated':
            tasks.push(this.#readBelow(piece, pos));
            break;
          case 'compressed':
            tasks.push(this.#readCompressed(m, piece, pos));
            break;
        }
        pos += m.length;
      }
      flushBatch();
    } catch (e) {
      await Promise.allSettled(tasks);
      throw e;
    }
    await Promise.all(tasks);
  }

  async blockStatus(offset: number, maxLength: number): Promise<BlockStatus> {
    checkRange(offset, 1, this.size);
    let length = Math.min(maxLength, this.size - offset);
    let layer: Image = this;
    let depth = 0;
    for (;;) {
      const st = statusOf(await layer.driver.getMapping(offset, length), layer, offset, depth);
      if (!('below' in st)) return st;
      length = st.length;
      layer = st.below;
      depth++;
    }
  }

  /**
   * {@link blockStatus} answered from cached metadata, or undefined when that needs I/O (the
   * metadata is then being loaded). Scans over many small runs (`map`) avoid a promise per run.
   */
  blockStatusNow(offset: number, maxLength: number): BlockStatus | undefined {
    checkRange(offset, 1, this.size);
    let length = Math.min(maxLength, this.size - offset);
    let layer: Image = this;
    let depth = 0;
    for (;;) {
      const m = layer.driver.getMapping(offset, length);
      if (m instanceof Promise) {
        m.catch(() => {}); // blockStatus asks again and sees the error
        return undefined;
      }
      const st = statusOf(m, layer, offset, depth);
      if (!('below' in st)) return st;
      length = st.length;
      layer = st.below;
      depth++;
    }
  }

  /** True when the image was opened writable. */
  get writable(): boolean {
    return this.driver.writer !== undefined;
  }

  /**
   * Write guest data. Concurrent writes to overlapping clusters are serialised; everything
   * else runs in parallel. `placed` is called once the clusters the write needs are allocated,
   * before its data is written (qcow2; other formats may not call it): a write started after
   * that allocates after this one, which lets ordered copies overlap their data writes.
   *
   * @example
   * ```ts
   * await image.write(new Uint8Array(4096).fill(0xab), 65536);
   * await image.flush();
   * ```
   */
  async write(src: Uint8Array, offset: number, options: { placed?: (() => void) | undefined } = {}): Promise<void> {
    checkRange(offset, src.byteLength, this.size);
    if (src.byteLength === 0) return;
    await this.#locked(offset, src.byteLength, (w) => w.writeData(offset, src, this.#below, options.placed));
  }

  /** Make a range read as zeros. With `unmap`, host space may be released. */
  async writeZeroes(offset: number, length: number, options: { unmap?: boolean } = {}): Promise<void> {
    checkRange(offset, length, this.size);
    if (length === 0) return;
    await this.#locked(offset, length, (w) => w.writeZeroes(offset, length, options.unmap ?? false, this.#below));
  }

  /**
   * Write whole clusters compressed (the disk's last cluster may be shorter), only into
   * unallocated clusters, as qemu-io's `write -c`.
   */
  async writeCompressed(src: Uint8Array, offset: number): Promise<void> {
    checkRange(offset, src.byteLength, this.size);
    const cs = this.driver.clusterSize;
    await this.#locked(offset, src.byteLength, async (w) => {
      if (w.writeCompressed === undefined) throw new Qcow2Error('UNSUPPORTED', 'Compressed writes are not supported by this format', {});
      for (let p = 0; p < src.byteLength; p += cs) await w.writeCompressed(offset + p, src.subarray(p, Math.min(src.byteLength, p + cs)));
    });
  }

  /**
   * Discard whole clusters in the range (partial clusters are left as they are, like QEMU).
   * They then read as zeros; with `full`, they become unallocated again so that the backing
   * file shows through (what `commit` needs to empty an overlay).
   */
  async discard(offset: number, length: number, options: { full?: boolean } = {}): Promise<void> {
    checkRange(offset, length, this.size);
    if (length === 0) return;
    await this.#locked(offset, length, (w) => w.discard(offset, length, options.full ?? false));
  }

  /**
   * Change the virtual size. Growing reads as zeros in the new area (never as backing data);
   * shrinking drops everything past the new end.
   */
  async resize(size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid size ${size}`, { size });
    const w = this.driver.writer;
    if (w === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
    if (w.resize === undefined) throw new Qcow2Error('UNSUPPORTED', 'This image format does not support resize', {});
    const release = await this.#ranges.acquire(0, Number.MAX_SAFE_INTEGER);
    try {
      await w.resize(size, this.#below, this.backing?.size);
    } finally {
      this.#clusters.clear();
      release();
    }
  }

  /**
   * Rewrite the image's backing file reference (name and format; `undefined` removes it).
   * Content is not copied (that is rebase's job) and this open Image keeps its current chain.
   */
  async setBacking(name: string | undefined, format: string | undefined): Promise<void> {
    const w = this.driver.writer;
    if (w === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
    if (w.setBacking === undefined) throw new Qcow2Error('UNSUPPORTED', 'This image format has no backing file', {});
    await w.setBacking(name, format);
  }

  /** Make completed writes durable. */
  async flush(): Promise<void> {
    await this.driver.writer?.flush();
  }

  readonly #ranges = new RangeLock();

  /** Run `fn` holding the guest clusters of [offset, offset + length). */
  #locked(offset: number, length: number, fn: (w: DriverWriter) => Promise<void>): Promise<void> {
    const w = this.driver.writer;
    if (w === undefined) return Promise.reject(new Qcow2Error('READ_ONLY', 'Image is opened read-only'));
    const cs = this.driver.clusterSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    const unlock = (release: () => void): void => {
      for (let c = first; c <= last; c++) this.#clusters.delete(c * cs);
      release();
    };
    const run = (release: () => void): Promise<void> => {
      let done: Promise<void>;
      try {
        done = fn(w);
      } catch (e) {
        done = Promise.reject(e);
      }
      return done.then(
        () => unlock(release),
        (e: unknown) => {
          unlock(release);
          throw e;
        },
      );
    };
    // Uncontended (the usual case): no wait for the lock, and so no extra turn of the queue.
    const release = this.#ranges.tryAcquire(first, last);
    return release !== undefined ? run(release) : this.#ranges.acquire(first, last).then(run);
  }

  /** What the layers below show, for copy-on-write. */
  readonly #below = (dst: Uint8Array, offset: number): Promise<void> => this.#readBelow(dst, offset);

  async close(): Promise<void> {
    this.#clusters.clear();
    await this.driver.writer?.close();
    await this.driver.close();
    await this.driver.storage.close();
    await this.backing?.close();
  }

  /** Unallocated here: read the backing file where it exists, zeros past its end. */
  async #readBelow(piece: Uint8Array, pos: number): Promise<void> {
    const below = this.backing;
    const inBacking = below === undefined ? 0 : Math.max(0, Math.min(piece.byteLength, below.size - pos));
    if (inBacking < piece.byteLength) piece.fill(0, inBacking);
    if (inBacking > 0 && below !== undefined) await below.read(piece.subarray(0, inBacking), pos);
  }

  async #readCompressed(m: CompressedMapping, piece: Uint8Array, pos: number): Promise<void> {
    const cs = this.driver.clusterSize;
    const within = pos - m.clusterGuestOffset;
    if (within === 0 && piece.byteLength === cs) {
      // Whole cluster: decode straight into the caller's buffer, no copy, no caching.
      await this.driver.readCompressed(m, piece);
      return;
    }
    const cluster = await this.#clusters.get(m.clusterGuestOffset, async () => {
      const buf = new Uint8Array(cs);
      await this.driver.readCompressed(m, buf);
      return buf;
    });
    piece.set(cluster.subarray(within, within + piece.byteLength));
  }
}

/** The status a layer's mapping gives, or the layer below to ask (for `length` bytes). */
function statusOf(m: Mapping, layer: Image, offset: number, depth: number): BlockStatus | { below: Image; length: number } {
  if (m.kind === 'eof') throw new Qcow2Error('IO', `Mapping ended early at offset ${offset}`, { offset });
  const length = m.length;
  switch (m.kind) {
    case 'data':
      return { offset, length, depth, present: true, zero: false, data: true, compressed: false, hostOffset: m.hostOffset, filename: m.storage.name };
    case 'compressed':
      return { offset, length, depth, present: true, zero: false, data: true, compressed: true };
    case 'zero':
      return zeroStatus(m, offset, depth, true);
    case 'unallocated': {
      const below = layer.backing;
      // Past the end of a shorter backing file this layer decides: zeros, as QEMU reports.
      if (below === undefined || offset >= below.size) return zeroStatus(m, offset, depth, false);
      return { below, length: Math.min(length, below.size - offset) };
    }
  }
}

/** A range that reads as zeros, with its host place when the mapping has one. */
function zeroStatus(m: Extract<Mapping, { kind: 'zero' | 'unallocated' }>, offset: number, depth: number, present: boolean): BlockStatus {
  const length = m.length;
  return m.hostOffset !== undefined && m.storage !== undefined
    ? { offset, length, depth, present, zero: true, data: false, compressed: false, hostOffset: m.hostOffset, filename: m.storage.name }
    : { offset, length, depth, present, zero: true, data: false, compressed: false };
}

function checkRange(offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > size) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Request out of range: offset ${offset}, length ${length}, image size ${size}`, { offset, length, size });
  }
}
