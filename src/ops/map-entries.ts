import { Qcow2Error } from '../errors.js';
import type { BlockStatus, ImageReader } from '../image/types.js';

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

function toEntry(st: BlockStatus, start: number, length: number): MapEntry {
  const e: MapEntry = { start, length, depth: st.depth, present: st.present, zero: st.zero, data: st.data, compressed: st.compressed };
  // qemu-img names a file only together with an offset.
  if (st.hostOffset !== undefined) {
    e.offset = st.hostOffset;
    if (st.filename !== undefined) e.filename = st.filename;
  }
  return e;
}

/**
 * qemu-img's entry_mergeable: same status, same file and contiguous host offsets. The
 * compressed flag is compared too (as qemu-img 8.2+ does); in 7.2 images a compressed range
 * never borders an uncompressed one that is otherwise equal, since only the latter has an offset.
 */
function mergeable(curr: MapEntry, next: MapEntry): boolean {
  if (
    curr.zero !== next.zero || curr.data !== next.data || curr.depth !== next.depth || curr.present !== next.present ||
    curr.compressed !== next.compressed || curr.filename !== next.filename || (curr.offset === undefined) !== (next.offset === undefined)
  ) {
    return false;
  }
  return curr.offset === undefined || curr.offset + curr.length === next.offset;
}

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

/**
 * {@link mapEntries} in arrays of complete entries: status answered from cached metadata costs
 * no promise, so a map of many small runs is not dominated by one await per entry. A batch
 * ends at 4096 entries or when the next answer needs I/O.
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
  let batch: MapEntry[] = [];
  let curr: MapEntry | undefined;
  let pos = start;
  while (pos < end) {
    const want = Math.min(PROBE_LIMIT, end - pos);
    let st = image.blockStatusNow?.(pos, want);
    if (st === undefined) {
      // Hand out what is complete before waiting on I/O, so that a slow map still streams.
      if (batch.length > 0) {
        yield batch;
        batch = [];
      }
      st = await image.blockStatus(pos, want);
    }
    if (st.offset !== pos || !(st.length > 0)) {
      throw new Qcow2Error('IO', `Could not read file metadata: bad block status at offset ${pos}`, { offset: pos, status: st });
    }
    const length = Math.min(st.length, want);
    const next = toEntry(st, pos, length);
    if (curr !== undefined && mergeable(curr, next)) {
      curr.length += length;
    } else {
      if (curr !== undefined) batch.push(curr);
      curr = next;
      if (batch.length >= BATCH) {
        yield batch;
        batch = [];
      }
    }
    pos += length;
  }
  if (curr !== undefined) batch.push(curr);
  if (batch.length > 0) yield batch;
}
