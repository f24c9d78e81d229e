import type { CodecSet } from '../../codecs/codec.js';
import { invalidImage, Qcow2Error } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { AsyncMutex } from '../../util/async-mutex.js';
import { viewOf } from '../../util/bytes.js';
import { RUN_FIELDS, RunKind, type CompressedRead, type DependencyRequest, type FormatDriver, type Mapping } from '../driver.js';
import { readBitmapDirectory } from './read-bitmaps.js';
import { AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, hasBit, INCOMPAT_DATA_FILE, INCOMPAT_EXTL2 } from './features.js';
import {
  decodeCryptoHeader, decodeExtensions, decodeFeatureTable, decodeStringExtension, EXT_BACKING_FORMAT, EXT_BITMAPS,
  EXT_CRYPTO_HEADER, EXT_DATA_FILE, EXT_FEATURE_TABLE, findExtension,
} from './header-extensions.js';
import { decodeBackingName, decodeHeader, V2_HEADER_LENGTH } from './header.js';
import type { Qcow2Metadata } from './qcow2-metadata.js';
import { readSnapshotTable } from './read-snapshot-table.js';
import { Refcounts } from './refcounts.js';
import type { Qcow2State } from './qcow2-state.js';
import { TableCache } from './table-cache.js';
import { tableViews } from './table-views.js';
import { Qcow2Writer } from './qcow2-writer.js';
import { findSnapshot, Qcow2Snapshots } from './snapshot-ops.js';
import { Qcow2Bitmaps } from './bitmaps.js';
import type { SnapshotEntry } from './snapshot-table.js';
import { decodeCompressed, entryOffset, MAX_HOST_OFFSET, isCompressed, isCopied, isZeroFlag } from './table-entries.js';
import { MAX_L1_BYTES, validateCompressionType, validateHeaderFields, validateIncompatibleFeatures, validateTables } from './validate-header.js';

/** How a qcow2 image is opened. */
export interface Qcow2OpenOptions {
  readOnly: boolean;
  codecs: CodecSet;
  /** Open the image's external data file (called only when the image names or needs one). */
  openDataFile?: (request: DependencyRequest) => Promise<Storage>;
  /** Read the content of this internal snapshot (id or name) instead of the active state. */
  snapshot?: string;
  /** L2 cache budget in bytes (default: enough to cover the disk, at most 32 MiB). */
  l2CacheBytes?: number;
}

const DEFAULT_L2_CACHE_MAX = 32 << 20;
/** Longest run of file bytes read at once for neighbouring compressed clusters. */
const COMPRESSED_READ_SPAN = 4 << 20;
/** L2 tables loaded ahead of a sequential scan after a cache miss. */
const L2_READ_AHEAD = 4;

const EOF_MAPPING: Mapping = Object.freeze({ kind: 'eof', length: 0 }) as Mapping;

/**
 * Read-side qcow2 driver: parses and validates the header area at open, then answers mapping
 * queries through an LRU cache of L2 tables.
 *
 * @example
 * ```ts
 * const drv = await Qcow2Driver.open(storage, { readOnly: true, codecs: jsCodecs });
 * const m = await drv.getMapping(0, drv.size);
 * ```
 */
export { findSnapshot };

export class Qcow2Driver implements FormatDriver {
  readonly format = 'qcow2';
  readonly storage: Storage;
  readonly meta: Qcow2Metadata;
  readonly clusterSize: number;
  readonly backing: DependencyRequest | undefined;
  /** The snapshot whose content is read, when opened with `snapshot`. */
  readonly snapshot: SnapshotEntry | undefined;
  /** Shared with the write path. */
  readonly state: Qcow2State;
  readonly writer: Qcow2Writer | undefined;
  /** Internal snapshot operations (writable images only). */
  readonly snapshots: Qcow2Snapshots | undefined;
  /** Persistent dirty bitmaps. */
  readonly bitmaps: Qcow2Bitmaps;
  readonly #clusterBits: number;
  readonly #ownsDataStorage: boolean;
  /** One run, for getMapping. */
  readonly #run = new Float64Array(RUN_FIELDS);

  private constructor(storage: Storage, meta: Qcow2Metadata, l1: DataView, l1Entries: number, opts: Qcow2OpenOptions, snapshot: SnapshotEntry | undefined, refcounts: Refcounts | undefined) {
    this.storage = storage;
    this.meta = meta;
    this.clusterSize = meta.clusterSize;
    this.#clusterBits = meta.header.clusterBits;
    this.snapshot = snapshot;
    this.backing = meta.backingName === undefined || meta.backingName === ''
      ? undefined
      : { role: 'backing', name: meta.backingName, ...(meta.backingFormat !== undefined ? { format: meta.backingFormat } : {}) };
    const cover = Math.ceil(this.size / meta.clusterSize) * (meta.extendedL2 ? 16 : 8);
    const budget = opts.l2CacheBytes ?? Math.min(DEFAULT_L2_CACHE_MAX, Math.max(2 * meta.clusterSize, Math.ceil(cover / meta.clusterSize) * meta.clusterSize));
    this.state = {
      storage, meta, clusterSize: meta.clusterSize, clusterBits: meta.header.clusterBits, l1, l1Entries, l1Dirty: false,
      // Read-only, the driver takes tables only through `use` (#withRuns) and `has`.
      l2: new TableCache(storage, meta.clusterSize, budget, { recycle: opts.readOnly }),
      decompressor: opts.codecs.decompressor(meta.header.compressionType === 1 ? 'zstd' : 'zlib'),
      compressor: opts.codecs.compressor(meta.header.compressionType === 1 ? 'zstd' : 'zlib'),
      refcounts, lock: new AsyncMutex(), headerDirty: false, readOnly: opts.readOnly,
    };
    this.#ownsDataStorage = meta.dataStorage !== storage;
    this.writer = opts.readOnly ? undefined : new Qcow2Writer(this.state, this.backing !== undefined);
    this.snapshots = this.writer === undefined ? undefined : new Qcow2Snapshots(this.state, this.writer);
    this.bitmaps = new Qcow2Bitmaps(this.state, this.writer);
    if (this.writer !== undefined) this.writer.bitmaps = this.bitmaps;
  }

  /** Parse, validate and load the metadata needed for reading. */
  static async open(storage: Storage, opts: Qcow2OpenOptions): Promise<Qcow2Driver> {
    const fileSize = await storage.size();
    const first = new Uint8Array(4096);
    await storage.read(first, 0);
    let header = decodeHeader(first);
    validateHeaderFields(header);
    const clusterSize = 2 ** header.clusterBits;
    let cluster0 = first;
    if (clusterSize > first.byteLength) {
      cluster0 = new Uint8Array(clusterSize);
      await storage.read(cluster0, 0);
      header = decodeHeader(cluster0);
    } else {
      cluster0 = first.subarray(0, clusterSize);
    }
    validateCompressionType(header);
    const extStart = header.version === 2 ? V2_HEADER_LENGTH : header.headerLength;
    const extEnd = header.backingFileOffset !== 0 ? header.backingFileOffset : clusterSize;
    const extensions = decodeExtensions(cluster0, extStart, extEnd);
    const featureTable = decodeFeatureTable(findExtension(extensions, EXT_FEATURE_TABLE));
    validateIncompatibleFeatures(header, featureTable, opts.readOnly);
    const extendedL2 = hasBit(header.incompatibleFeatures, INCOMPAT_EXTL2);
    const l2Entries = clusterSize / (extendedL2 ? 16 : 8);
    validateTables(header, l2Entries);
    if (header.cryptMethod !== 0) {
      const kind = header.cryptMethod === 1 ? 'aes' : header.cryptMethod === 2 ? 'luks' : `method ${header.cryptMethod}`;
      throw new Qcow2Error('UNSUPPORTED', `Encrypted images are not supported yet (encryption format: ${kind})`, { cryptMethod: header.cryptMethod });
    }

    const backingName = decodeBackingName(cluster0, header);
    const backingFormat = decodeStringExtension(findExtension(extensions, EXT_BACKING_FORMAT));
    const dataFileName = decodeStringExtension(findExtension(extensions, EXT_DATA_FILE));
    const hasDataFile = hasBit(header.incompatibleFeatures, INCOMPAT_DATA_FILE);
    const dataFileRaw = hasBit(header.autoclearFeatures, AUTOCLEAR_DATA_FILE_RAW);
    let dataStorage = storage;
    if (hasDataFile) {
      if (dataFileName === undefined || opts.openDataFile === undefined) {
        throw new Qcow2Error('INVALID_ARGUMENT', "'data-file' is required for this image", {});
      }
      dataStorage = await opts.openDataFile({ role: 'data-file', name: dataFileName });
    } else if (dataFileName !== undefined) {
      // QEMU ignores a data file name without the incompatible bit.
    }
    if (dataFileRaw && !hasDataFile) throw invalidImage('data-file-raw requires a data file');

    const snapshots = await readSnapshotTable(storage, header.snapshotsOffset, header.nbSnapshots, header.version, clusterSize);
    const bitmapsExt = findExtension(extensions, EXT_BITMAPS);
    // Without the autoclear bit the extension is stale (an old writer touched the image): QEMU ignores it.
    const bitmaps = bitmapsExt === undefined || !hasBit(header.autoclearFeatures, AUTOCLEAR_BITMAPS)
      ? []
      : await readBitmapDirectory(storage, bitmapsExt.data, clusterSize, header.size);

    const meta: Qcow2Metadata = {
      header, clusterSize, l2Entries, extendedL2, extensions, featureTable, backingName, backingFormat,
      dataFileName: hasDataFile ? dataFileName : undefined, dataFileRaw,
      crypto: decodeCryptoHeader(findExtension(extensions, EXT_CRYPTO_HEADER)), snapshots, bitmaps, dataStorage,
    };

    let l1Offset = header.l1TableOffset;
    let l1Size = header.l1Size;
    let snapshot: SnapshotEntry | undefined;
    if (opts.snapshot !== undefined) {
      snapshot = findSnapshot(snapshots, opts.snapshot);
      if (snapshot === undefined) throw new Qcow2Error('INVALID_ARGUMENT', `Can't find snapshot '${opts.snapshot}'`, { snapshot: opts.snapshot });
      if (snapshot.l1Size > MAX_L1_BYTES / 8) throw invalidImage('Snapshot L1 table too large');
      if (snapshot.l1TableOffset % clusterSize !== 0) throw invalidImage('Snapshot L1 table offset invalid');
      l1Offset = snapshot.l1TableOffset;
      l1Size = snapshot.l1Size;
    }
    void fileSize;
    const l1Bytes = new Uint8Array(l1Size * 8);
    if (l1Size > 0) await storage.read(l1Bytes, l1Offset);
    let refcounts: Refcounts | undefined;
    if (!opts.readOnly) {
      if (snapshot !== undefined) throw new Qcow2Error('INVALID_ARGUMENT', 'Snapshots can only be opened read-only', {});
      refcounts = await Refcounts.open(storage, header.clusterBits, header.refcountOrder, { offset: header.refcountTableOffset, clusters: header.refcountTableClusters });
    }
    const driver = new Qcow2Driver(storage, meta, viewOf(l1Bytes), l1Size, opts, snapshot, refcounts);
    await driver.writer?.prepare();
    if (driver.writer !== undefined) await driver.bitmaps.openForWrite();
    return driver;
  }

  /** Virtual size (changes with resize). */
  get size(): number {
    return this.meta.header.size;
  }

  /** The image file, or its external data file. */
  get dataStorage(): Storage {
    return this.meta.dataStorage;
  }

  getMapping(offset: number, maxLength: number): Mapping | Promise<Mapping> {
    // `#run` is shared: the run is turned into a Mapping as soon as it is written, also after
    // a table load, before another call can overwrite it.
    return this.#withRuns(offset, maxLength, this.#run, (n) => this.#runMapping(offset, n));
  }

  /** The first run in `#run` as a Mapping (`count` 0: the end of the disk). */
  #runMapping(offset: number, count: number): Mapping {
    if (count === 0) return EOF_MAPPING;
    const r = this.#run;
    const kind = r[0]!;
    const length = r[1]!;
    const hostOffset = r[2]!;
    switch (kind) {
      case RunKind.Data:
        return { kind: 'data', length, storage: this.meta.dataStorage, hostOffset };
      case RunKind.ZeroAlloc:
        return { kind: 'zero', length, storage: this.meta.dataStorage, hostOffset };
      case RunKind.Zero:
        return { kind: 'zero', length };
      case RunKind.UnallocatedAlloc:
        return { kind: 'unallocated', length, storage: this.meta.dataStorage, hostOffset };
      case RunKind.Compressed: {
        const cs = this.clusterSize;
        return { kind: 'compressed', length, clusterGuestOffset: offset - (offset % cs), hostOffset, compressedLength: r[3]! };
      }
      default:
        return { kind: 'unallocated', length };
    }
  }

  mapRuns(offset: number, maxLength: number, out: Float64Array): number | Promise<number> {
    return this.#withRuns(offset, maxLength, out, runCount);
  }

  /** mapRuns, then `done(count)` right after the runs are written (at once when cached). */
  #withRuns<T>(offset: number, maxLength: number, out: Float64Array, done: (count: number) => T): T | Promise<T> {
    if (offset >= this.size || maxLength <= 0 || out.length < RUN_FIELDS) return done(0);
    const cs = this.clusterSize;
    const l2Entries = this.meta.l2Entries;
    const clusterIndex = Math.floor(offset / cs);
    const l1Index = Math.floor(clusterIndex / l2Entries);
    const l2Span = l2Entries * cs;
    const end = Math.min(offset + maxLength, this.size, (l1Index + 1) * l2Span);
    const { l1, l1Entries } = this.state;
    const l2Offset = l1Index < l1Entries ? entryOffset(l1.getUint32(l1Index * 8), l1.getUint32(l1Index * 8 + 4)) : 0;
    if (l2Offset === 0) {
      out[0] = RunKind.Unallocated;
      out[1] = end - offset;
      out[2] = 0;
      out[3] = 0;
      return done(1);
    }
    if (l2Offset % cs !== 0 || l2Offset > MAX_HOST_OFFSET) {
      throw new Qcow2Error('CORRUPT', `L2 table offset ${hex(l2Offset)} unaligned (L1 index: ${hex(l1Index)})`, { l1Index, l2Offset });
    }
    return this.state.l2.use(l2Offset, (t) => done(this.#scanTable(t, offset, end, l1Index, l2Offset, out)), () => this.#readAheadL2(l1Index));
  }

  /**
   * Start loading the next few L2 tables after a miss: scans (map, convert) walk the L1
   * table in order, and one read at a time would leave them waiting on I/O most of the time.
   */
  #readAheadL2(l1Index: number): void {
    const { l1, l1Entries, l2 } = this.state;
    const count = Math.min(L2_READ_AHEAD, l2.capacity - 2);
    for (let i = l1Index + 1; i <= l1Index + count && i < l1Entries; i++) {
      const off = entryOffset(l1.getUint32(i * 8), l1.getUint32(i * 8 + 4));
      if (off === 0 || off % this.clusterSize !== 0 || off > MAX_HOST_OFFSET || l2.has(off)) continue;
      // Errors surface when the table is really needed (the load is retried then).
      void Promise.resolve(l2.get(off)).catch(() => {});
    }
  }

  /**
   * The runs from `offset` to `end` (inside L2 table `l1Index`) described by that table, into
   * `out` as mapRuns documents; stops early when `out` is full. Returns the number of runs.
   */
  #scanTable(tableBytes: Uint8Array, offset: number, end: number, l1Index: number, l2Offset: number, out: Float64Array): number {
    const cs = this.clusterSize;
    const bits = this.#clusterBits;
    const l2Span = this.meta.l2Entries * cs;
    const { view: table, words } = tableViews(tableBytes);
    const ext = this.meta.extendedL2;
    const unitBits = ext ? bits - 5 : bits;
    const unit = 2 ** unitBits;
    const l2Base = l1Index * l2Span;
    const wordsPerEntry = ext ? 4 : 2;
    const maxRuns = Math.floor(out.length / RUN_FIELDS);

    let runs = 0;
    let pos = offset;
    let runStart = offset;
    let kind = -1; // no run open
    let expectHost = 0;
    let hostful = false;
    while (pos < end) {
      let rel = pos - l2Base;
      if (kind === RunKind.Unallocated && rel % cs === 0) {
        // Sparse images are mostly all-zero entries: skip them without decoding each one.
        let w = (rel / cs) * wordsPerEntry;
        const stop = Math.ceil((end - l2Base) / cs) * wordsPerEntry;
        while (w < stop && words[w] === 0) w++;
        const skippedTo = Math.min(end, l2Base + Math.floor(w / wordsPerEntry) * cs);
        if (skippedTo >= end) {
          pos = end;
          break;
        }
        pos = skippedTo;
        rel = pos - l2Base;
      }
      const l2Index = Math.floor(rel / cs);
      const e = ext ? l2Index * 16 : l2Index * 8;
      const hi = table.getUint32(e);
      const lo = table.getUint32(e + 4);
      const sub = ext ? Math.floor((rel % cs) / unit) : 0;
      const k = this.#classify(hi, lo, ext ? table.getUint32(e + 8) : 0, ext ? table.getUint32(e + 12) : 0, sub, l2Offset, l2Index);
      const unitStart = l2Base + l2Index * cs + sub * unit;
      if (k === RunKind.Compressed) {
        if (kind !== -1) {
          putRun(out, runs++, kind, pos - runStart, hostful ? expectHost - (pos - runStart) : 0, 0);
          kind = -1;
          if (runs === maxRuns) return runs;
        }
        const d = decodeCompressed(hi, lo, bits);
        if (d.hostOffset + d.length > MAX_HOST_OFFSET) {
          throw new Qcow2Error('CORRUPT', `Compressed cluster offset ${hex(d.hostOffset)} out of range (L2 offset: ${hex(l2Offset)}, L2 index: ${hex(l2Index)})`, { l2Offset, l2Index });
        }
        const next = Math.min(end, l2Base + l2Index * cs + cs);
        putRun(out, runs++, k, next - pos, d.hostOffset, d.length);
        if (runs === maxRuns) return runs;
        pos = next;
        runStart = next;
        continue;
      }
      const hasHost = k === RunKind.Data || k === RunKind.ZeroAlloc || k === RunKind.UnallocatedAlloc;
      const host = hasHost ? this.#hostOffset(hi, lo, l2Offset, l2Index) + sub * unit + (pos - unitStart) : 0;
      if (kind !== k || (hostful && host !== expectHost)) {
        if (kind !== -1) {
          putRun(out, runs++, kind, pos - runStart, hostful ? expectHost - (pos - runStart) : 0, 0);
          if (runs === maxRuns) return runs;
        }
        kind = k;
        hostful = hasHost;
        expectHost = host;
        runStart = pos;
      }
      const next = Math.min(end, unitStart + unit);
      expectHost += next - pos;
      pos = next;
    }
    if (kind !== -1) putRun(out, runs++, kind, pos - runStart, hostful ? expectHost - (pos - runStart) : 0, 0);
    return runs;
  }

  async readCompressed(m: Extract<Mapping, { kind: 'compressed' }>, dst: Uint8Array): Promise<void> {
    const src = new Uint8Array(m.compressedLength);
    await this.storage.read(src, m.hostOffset);
    await this.#decode(m, src, dst);
  }

  async readCompressedClusters(items: readonly CompressedRead[]): Promise<void> {
    // Groups of clusters stored close together (QEMU packs them back to back): one read each.
    let i = 0;
    while (i < items.length) {
      const first = items[i]!.mapping;
      const start = first.hostOffset;
      let end = start + first.compressedLength;
      let j = i + 1;
      for (; j < items.length; j++) {
        const m = items[j]!.mapping;
        const mEnd = m.hostOffset + m.compressedLength;
        if (m.hostOffset < start || m.hostOffset > end + this.clusterSize || Math.max(end, mEnd) - start > COMPRESSED_READ_SPAN) break;
        end = Math.max(end, mEnd);
      }
      const span = new Uint8Array(end - start);
      await this.storage.read(span, start);
      for (; i < j; i++) {
        const { mapping: m, dst } = items[i]!;
        await this.#decode(m, span.subarray(m.hostOffset - start, m.hostOffset - start + m.compressedLength), dst);
      }
    }
  }

  async #decode(m: Extract<Mapping, { kind: 'compressed' }>, src: Uint8Array, dst: Uint8Array): Promise<void> {
    try {
      await this.state.decompressor.decompress(src, dst);
    } catch (e) {
      if (e instanceof Qcow2Error) {
        throw new Qcow2Error(e.code, `Could not read compressed cluster at guest offset ${m.clusterGuestOffset} (host offset ${hex(m.hostOffset)}): ${e.message}`, { ...e.context, hostOffset: m.hostOffset }, { cause: e });
      }
      throw e;
    }
  }

  async close(): Promise<void> {
    this.state.l2.clear();
    if (this.#ownsDataStorage) await this.meta.dataStorage.close();
  }

  #hostOffset(hi: number, lo: number, l2Offset: number, l2Index: number): number {
    const off = entryOffset(hi, lo);
    if (off % this.clusterSize !== 0 || off > MAX_HOST_OFFSET) {
      throw new Qcow2Error('CORRUPT', `Cluster allocation offset ${hex(off)} unaligned (L2 offset: ${hex(l2Offset)}, L2 index: ${hex(l2Index)})`, { l2Offset, l2Index, offset: off });
    }
    return off;
  }

  #classify(hi: number, lo: number, bmHi: number, bmLo: number, sub: number, l2Offset: number, l2Index: number): RunKind {
    if (isCompressed(hi)) {
      if (this.meta.dataStorage !== this.storage) {
        throw new Qcow2Error('CORRUPT', `Compressed cluster in an image with an external data file (L2 offset: ${hex(l2Offset)}, L2 index: ${hex(l2Index)})`, { l2Offset, l2Index });
      }
      return RunKind.Compressed;
    }
    const offset = entryOffset(hi, lo);
    const allocated = offset !== 0 || (this.#ownsDataStorage && isCopied(hi));
    if (!this.meta.extendedL2) {
      if (isZeroFlag(lo)) return allocated ? RunKind.ZeroAlloc : RunKind.Zero;
      return allocated ? RunKind.Data : RunKind.Unallocated;
    }
    // Extended L2: bitmap low word = allocated subclusters, high word = zero subclusters.
    const allocBit = (bmLo >>> sub) & 1;
    const zeroBit = (bmHi >>> sub) & 1;
    if (allocated) {
      if ((bmHi & bmLo) !== 0) throw invalidEntry(l2Offset, l2Index);
      if (zeroBit) return RunKind.ZeroAlloc;
      return allocBit ? RunKind.Data : RunKind.UnallocatedAlloc;
    }
    if (bmLo !== 0) throw invalidEntry(l2Offset, l2Index);
    return zeroBit ? RunKind.Zero : RunKind.Unallocated;
  }
}

const runCount = (count: number): number => count;

function putRun(out: Float64Array, i: number, kind: number, length: number, hostOffset: number, storedLength: number): void {
  const f = i * RUN_FIELDS;
  out[f] = kind;
  out[f + 1] = length;
  out[f + 2] = hostOffset;
  out[f + 3] = storedLength;
}

function invalidEntry(l2Offset: number, l2Index: number): Qcow2Error {
  return new Qcow2Error('CORRUPT', `Invalid cluster entry found (L2 offset: ${hex(l2Offset)}, L2 index: ${hex(l2Index)})`, { l2Offset, l2Index });
}

function hex(n: number): string {
  return '0x' + n.toString(16);
}
