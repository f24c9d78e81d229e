import type { Storage } from '../storage/storage.js';

/**
 * One run of guest bytes with a single status, as answered by a format driver.
 * `length` is always > 0 except for `eof`.
 */
export type Mapping =
  /** Stored uncompressed at `hostOffset` in `storage` (the image file or its data file). */
  | { kind: 'data'; length: number; storage: Storage; hostOffset: number }
  /**
   * Reads as zeros. When the zeros sit on allocated host space (a preallocated zero cluster)
   * `hostOffset`/`storage` say where, as qemu-img map reports them.
   */
  | { kind: 'zero'; length: number; storage?: Storage; hostOffset?: number }
  /**
   * Not allocated in this layer: the backing file decides (zeros when there is none).
   * `hostOffset` is set for unallocated subclusters of an allocated cluster (extended L2),
   * which qemu-img map reports with their host offset when nothing below has data.
   */
  | { kind: 'unallocated'; length: number; storage?: Storage; hostOffset?: number }
  /**
   * Inside one compressed cluster. The driver decodes it: `readCompressed(mapping, dst)` fills
   * `dst` (cluster-sized) with the whole decompressed cluster starting at `clusterGuestOffset`.
   */
  | { kind: 'compressed'; length: number; clusterGuestOffset: number; hostOffset: number; compressedLength: number }
  /** At or past the end of the virtual disk. */
  | { kind: 'eof'; length: 0 };

export type MappingKind = Mapping['kind'];

/**
 * Run kinds in a {@link FormatDriver.mapRuns} buffer. `*Alloc` kinds sit on host space (their
 * host offset is set); the others have none, except `Compressed`, whose host offset is where
 * its stored bytes start.
 */
export const RunKind = { Unallocated: 0, UnallocatedAlloc: 1, Zero: 2, ZeroAlloc: 3, Data: 4, Compressed: 5 } as const;
export type RunKind = (typeof RunKind)[keyof typeof RunKind];

/**
 * Numbers per run in a {@link FormatDriver.mapRuns} buffer: kind ({@link RunKind}), length,
 * host offset (0 when the kind has none), stored length (compressed runs only).
 */
export const RUN_FIELDS = 4;

/** A compressed mapping and the cluster-sized buffer its decoded cluster goes to. */
export interface CompressedRead {
  readonly mapping: Extract<Mapping, { kind: 'compressed' }>;
  readonly dst: Uint8Array;
}

/** Facts about a dependency named by an image, for the open policy. */
export interface DependencyRequest {
  /** 'backing' for a backing file, 'data-file' for an external data file. */
  role: 'backing' | 'data-file';
  /** The name as stored in the image. */
  name: string;
  /** The format stored in the image, if any (backing format extension). */
  format?: string;
}

/** Reads what the backing chain shows at a guest offset (zeros past its end or without one). */
export type BelowReader = (dst: Uint8Array, guestOffset: number) => Promise<void>;

/**
 * Write side of a driver. The engine serialises writes to overlapping guest clusters, so a
 * writer never sees two requests racing on one cluster.
 */
export interface DriverWriter {
  /**
   * Store guest data, allocating and copying on write as needed. `placed`, when given, may be
   * called once every cluster the write needs has its place in the file (before the data is
   * written): writes started after that allocate after this one. Writers that do not call it
   * are fine; callers also treat completion as placed.
   */
  writeData(offset: number, src: Uint8Array, below: BelowReader, placed?: () => void): Promise<void>;
  /** Make the range read as zeros; `unmap` allows freeing the host space. */
  writeZeroes(offset: number, length: number, unmap: boolean, below: BelowReader): Promise<void>;
  /**
   * Hint that a range is unused (whole clusters): it then reads as zeros, or with `full` as
   * the backing file.
   */
  discard(offset: number, length: number, full?: boolean): Promise<void>;
  /**
   * Store one whole cluster compressed (`src.length` = cluster size, or the shorter tail of
   * the disk). Only into unallocated clusters, as QEMU; optional.
   */
  writeCompressed?(offset: number, src: Uint8Array): Promise<void>;
  /** Change the virtual size (qcow2: grow L1; shrink frees clusters past the end). Optional. */
  resize?(size: number, below: BelowReader, belowSize: number | undefined): Promise<void>;
  /** Rewrite the backing file reference (`undefined` detaches). Optional. */
  setBacking?(name: string | undefined, format: string | undefined): Promise<void>;
  /** Make all completed writes durable. */
  flush(): Promise<void>;
  /** Flush and leave the image clean. */
  close(): Promise<void>;
}

/**
 * Read-side format driver: owns metadata only and answers where guest bytes live.
 * Drivers never move guest data themselves except to decode compressed clusters.
 */
export interface FormatDriver {
  /** Format name as qemu-img prints it: 'qcow2' or 'raw'. */
  readonly format: string;
  /** Virtual disk size in bytes. */
  readonly size: number;
  /** Allocation granularity in bytes for map and copy (the cluster size; 512 for raw). */
  readonly clusterSize: number;
  /** The storage holding the image's metadata (the file passed to open). */
  readonly storage: Storage;
  /** The backing file this image names, if any. */
  readonly backing: DependencyRequest | undefined;
  /**
   * Describe the run starting at `offset`, at most `maxLength` bytes long. Runs may be
   * shorter than the longest possible; callers loop. Drivers may answer synchronously when
   * the metadata is cached (callers `await` the result either way), which keeps scans of
   * sparse images from paying a promise per run.
   */
  getMapping(offset: number, maxLength: number): Mapping | Promise<Mapping>;
  /**
   * Optional fast path for scans over many small runs (`map`): the runs `getMapping` would
   * answer one by one from `offset` (at most `maxLength` bytes), written into `out` as
   * {@link RUN_FIELDS} numbers each, as many as fit; returns how many (at least one before the
   * end of the disk). A promise when metadata must be loaded first. Host offsets are in
   * `dataStorage`; a compressed run never spans two clusters.
   */
  mapRuns?(offset: number, maxLength: number, out: Float64Array): number | Promise<number>;
  /** Where `data` mappings point: the image file itself or its external data file. */
  readonly dataStorage: Storage;
  /** Decode the compressed cluster a `compressed` mapping points into. `dst.length === clusterSize`. */
  readCompressed(mapping: Extract<Mapping, { kind: 'compressed' }>, dst: Uint8Array): Promise<void>;
  /**
   * Decode several compressed clusters, reading the stored bytes of neighbours in the file
   * with one read (a read per cluster costs more than the decoding on some platforms).
   * Optional: engines fall back to `readCompressed` per cluster.
   */
  readCompressedClusters?(items: readonly CompressedRead[]): Promise<void>;
  /** Present when the image was opened writable. */
  readonly writer?: DriverWriter | undefined;
  /** Release caches and close storages the driver opened itself (data file). Not the main storage. */
  close(): Promise<void>;
}
