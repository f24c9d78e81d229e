import { Qcow2Error } from '../errors.js';
import { RUN_FIELDS, RunKind } from '../format/driver.js';
import type { ImageReader } from '../image/types.js';

/** One merged run of `qemu-img map`: a range with one status, as its JSON output names it. */
export interface MapEntry {
  /** Guest offset. */
  start: number;
  /** Length in bytes (> 0). */
  length: number;
  /** Layer of the backing chain that decides the range (0 = the image itself). */
  depth: number;
  /** Some layer of the chain allocates the range. */
  present: boolean;
  /** Reads as zeros. */
  zero: boolean;
  /** Holds data. */
  data: boolean;
  /** Stored compressed (not printed by qemu-img 7.2). */
  compressed: boolean;
  /** Host offset of `start`, when the range sits uncompressed at a host offset. */
  offset?: number;
  /** File holding `offset` (only with `offset`). */
  filename?: string;
}

/** Range to map; defaults to the whole image. */
export interface MapRange {
  /** First guest byte (`--start-offset`), default 0. */
  start?: number;
  /** Bytes to map from `start` (`--max-length`), default up to the end; cut at the end. */
  length?: number;
}

/** qemu-img probes at most this much per block-status call. */
const PROBE_LIMIT = 1024 * 1024 * 1024;

function checkArg(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid ${name}: ${value}`, { [name]: value });
  }
}

/**
 * The map of an image as `qemu-img map` computes it: block status probed from `start` in
 * pieces of at most 1 GiB, adjacent runs merged when depth, present, zero, data, compressed,
 * file and offset presence are equal and host offsets are contiguous. Entries are yielded as
 * soon as they are complete, so a huge map streams. Nothing is yielded for an empty range
 * (qemu-img then prints one zero-length entry; the map formatters do that).
 *
 * @example
 * ```ts
 * for await (const e of mapEntries(image, { start: 0 })) console.log(e.start, e.length, e.data);
 * ```
 */
export async function* mapEntries(image: ImageReader, range: MapRange = {}): AsyncGenerator<MapEntry, void, undefined> {
  for await (const batch of mapEntryBatches(image, range)) yield* batch;
}

/** Entries gathered before a batch is handed out. */
const BATCH = 4096;

/** Runs asked from a driver's `mapRuns` at once. */
const RUN_BATCH = 1024;

/**
 * Merges runs into entries as qemu-img's entry_mergeable does: same depth, present, zero, data,
 * compressed and file, offsets both absent or contiguous. (qemu-img 8.2+ compares compressed
 * too; in 7.2 images a compressed run never borders an otherwise equal uncompressed one, since
 * only the latter has an offset.) Complete entries collect in `batch`.
 */
class EntryMerger {
  batch: MapEntry[] = [];
  #curr: MapEntry | undefined;

  /** The next run; `offset` -1 when it has no host offset (then `filename` is ignored). */
  add(start: number, length: number, depth: number, present: boolean, zero: boolean, data: boolean, compressed: boolean, offset: number, filename: string | undefined): void {
    const c = this.#curr;
    if (
      c !== undefined && c.depth === depth && c.present === present && c.zero === zero && c.data === data && c.compressed === compressed &&
      (offset < 0 ? c.offset === undefined : c.offset !== undefined && c.offset + c.length === offset && c.filename === filename)
    ) {
      c.length += length;
      return;
    }
    if (c !== undefined) this.batch.push(c);
    const e: MapEntry = { start, length, depth, present, zero, data, compressed };
    // qemu-img names a file only together with an offset.
    if (offset >= 0) {
      e.offset = offset;
      if (filename !== undefined) e.filename = filename;
    }
    this.#curr = e;
  }

  /** Hand out the entries completed so far. */
  take(): MapEntry[] {
    const b = this.batch;
    this.batch = [];
    return b;
  }

  /** The last entry is complete too. */
  finish(): void {
    if (this.#curr !== undefined) this.batch.push(this.#curr);
    this.#curr = undefined;
  }
}

/**
 * {@link mapEntries} in arrays of complete entries: status answered from cached metadata costs
 * no promise, so a map of many small runs is not dominated by one await per entry. A batch
 * ends at 4096 entries or when the next answer needs I/O. Drivers with `mapRuns` are asked for
 * many runs at once; only runs their backing file decides go through `blockStatus`.
 *
 * @example
 * ```ts
 * for await (const batch of mapEntryBatches(image)) for (const e of batch) console.log(e.start);
 * ```
 */
export async function* mapEntryBatches(image: ImageReader, range: MapRange = {}): AsyncGenerator<MapEntry[], void, undefined> {
  const start = range.start ?? 0;
  checkArg(start, 'start');
  let end = image.size;
  if (range.length !== undefined) {
    checkArg(range.length, 'length');
    end = Math.min(start + range.length, end);
  }
  const merger = new EntryMerger();
  const drv = image.driver;
  const runs = drv.mapRuns === undefined ? undefined : new Float64Array(RUN_FIELDS * RUN_BATCH);
  const filename = runs === undefined ? undefined : drv.dataStorage.name;
  const below = image.backing;
  let pos = start;
  while (pos < end) {
    if (runs !== undefined) {
      let n = drv.mapRuns!(pos, Math.min(PROBE_LIMIT, end - pos), runs);
      if (typeof n !== 'number') {
        // Hand out what is complete before waiting on I/O, so that a slow map still streams.
        // The answer may fail while the consumer holds the batch: it is awaited (and its error
        // thrown) only after that, so mark it handled now.
        if (merger.batch.length > 0) {
          n.catch(() => {});
          yield merger.take();
        }
        n = await n;
      }
      if (!(n > 0)) throw badStatus(pos, n);
      let i = 0;
      for (; i < n; i++) {
        const f = i * RUN_FIELDS;
        const kind = runs[f]!;
        const length = runs[f + 1]!;
        if (!(length > 0) || length > end - pos) throw badStatus(pos, length);
        // The backing chain decides unallocated runs above it (below its end): blockStatus then.
        if (kind <= RunKind.UnallocatedAlloc && below !== undefined && pos < below.size) break;
        addDepth0Run(merger, pos, length, kind, runs[f + 2]!, filename);
        pos += length;
      }
      if (merger.batch.length >= BATCH) yield merger.take();
      if (i === n) continue;
    }
    const want = Math.min(PROBE_LIMIT, end - pos);
    let st = image.blockStatusNow?.(pos, want);
    if (st === undefined) {
      if (merger.batch.length > 0) yield merger.take();
      st = await image.blockStatus(pos, want);
    }
    if (st.offset !== pos || !(st.length > 0)) throw badStatus(pos, st);
    const length = Math.min(st.length, want);
    merger.add(pos, length, st.depth, st.present, st.zero, st.data, st.compressed, st.hostOffset ?? -1, st.filename);
    pos += length;
    if (merger.batch.length >= BATCH) yield merger.take();
  }
  merger.finish();
  if (merger.batch.length > 0) yield merger.take();
}

/** A run the top layer decides, with the status Image.blockStatus gives it. */
function addDepth0Run(merger: EntryMerger, pos: number, length: number, kind: number, host: number, filename: string | undefined): void {
  switch (kind) {
    case RunKind.Data:
      return merger.add(pos, length, 0, true, false, true, false, host, filename);
    case RunKind.Compressed:
      return merger.add(pos, length, 0, true, false, true, true, -1, undefined);
    case RunKind.Zero:
      return merger.add(pos, length, 0, true, true, false, false, -1, undefined);
    case RunKind.ZeroAlloc:
      return merger.add(pos, length, 0, true, true, false, false, host, filename);
    case RunKind.UnallocatedAlloc:
      return merger.add(pos, length, 0, false, true, false, false, host, filename);
    default:
      return merger.add(pos, length, 0, false, true, false, false, -1, undefined);
  }
}

function badStatus(pos: number, status: unknown): Qcow2Error {
  return new Qcow2Error('IO', `Could not read file metadata: bad block status at offset ${pos}`, { offset: pos, status });
}
