import { Qcow2Error } from '../errors.js';
import { type ConcatSource, MAX_STATUS_QUERY, type SourceRun, type SourceRunKind } from './concat-source.js';

/** One piece of a conversion: a data range to read and write, or a zero range. */
export interface Job {
  /** Position in cutting order (writes may be gated on it). */
  seq: number;
  offset: number;
  length: number;
  kind: SourceRunKind;
}

/** Buffers' worth of guest bytes the first block-status query covers. */
const FIRST_QUERY_BUFFERS = 8;

/**
 * Walks the source's block status and cuts it into jobs the way qemu-img's
 * convert_iteration_sectors does: one block-status query per run (at most
 * {@link MAX_STATUS_QUERY} bytes, the first few shorter), data cut into buffer-sized pieces
 * from the run start.
 */
export class JobCutter {
  readonly #source: ConcatSource;
  readonly #bufferSize: number;
  readonly #zeroAsData: boolean;
  #pos = 0;
  #runEnd = 0;
  #kind: SourceRunKind = 'data';
  #seq = 0;
  /**
   * Longest block-status query for now. It starts at a few buffers and doubles up to qemu's
   * limit: the first answer is what the first read waits for, and one query over a whole
   * 512 MiB L2 table, with the scan not yet optimized by V8, took ~16 ms. Job cuts are the
   * same as with one long query, because every limit is a multiple of the buffer size.
   */
  #queryLimit: number;

  readonly #cluster: number;

  /** `cluster` > 0: compressed output, jobs cover whole clusters (qemu-img convert -c). */
  constructor(source: ConcatSource, bufferSize: number, zeroAsData: boolean, cluster = 0) {
    this.#source = source;
    this.#bufferSize = bufferSize;
    this.#zeroAsData = zeroAsData;
    this.#cluster = cluster;
    this.#queryLimit = FIRST_QUERY_BUFFERS * bufferSize;
  }

  /** Block status at the cut position, the query limit raised for the next one. */
  #status(offset: number): Promise<SourceRun> {
    const limit = Math.min(this.#source.size - offset, MAX_STATUS_QUERY, this.#queryLimit);
    if (this.#queryLimit < MAX_STATUS_QUERY) this.#queryLimit *= 2;
    return statusAt(this.#source, offset, limit);
  }

  async next(): Promise<Job | undefined> {
    const size = this.#source.size;
    if (this.#pos >= size) return undefined;
    if (this.#pos >= this.#runEnd) {
      const run = await this.#status(this.#pos);
      this.#kind = run.kind;
      this.#runEnd = this.#pos + run.length;
      // Compressed clusters come one per status answer; a job per cluster would read and decode
      // them one at a time. Neighbours that are compressed too join the job, up to a buffer.
      let last = run;
      while (last.compressed && this.#runEnd - this.#pos < this.#bufferSize && this.#runEnd < size) {
        last = await this.#status(this.#runEnd);
        if (!last.compressed || last.kind !== run.kind) break; // asked again when the job gets there
        this.#runEnd += last.length;
      }
    }
    let length = this.#runEnd - this.#pos;
    // Data goes through a buffer; so do zeros that must be written out in full (-S 0).
    if (this.#kind === 'data' || this.#zeroAsData) length = Math.min(length, this.#bufferSize);
    const c = this.#cluster;
    if (c > 0) {
      // A run shorter than a cluster makes the whole cluster data (and the rest of the run too).
      if (length < c) {
        length = Math.min(c, size - this.#pos);
        this.#kind = 'data';
      } else {
        length -= length % c;
      }
    }
    const job: Job = { seq: this.#seq++, offset: this.#pos, length, kind: this.#kind };
    this.#pos += length;
    return job;
  }
}

async function statusAt(source: ConcatSource, offset: number, maxLength: number): Promise<SourceRun> {
  try {
    return await source.status(offset, maxLength);
  } catch (e) {
    throw wrapConvertError(e, `error while reading block status at offset ${offset}`, offset, 'status');
  }
}

/** Wrap a failure with qemu-img's "error while ... at byte N" wording, keeping the code. */
export function wrapConvertError(e: unknown, what: string, offset: number, stage: string): Qcow2Error {
  const message = e instanceof Error ? e.message : String(e);
  const code = e instanceof Qcow2Error ? e.code : 'IO';
  return new Qcow2Error(code, `${what}: ${message}`, { offset, stage }, { cause: e });
}
