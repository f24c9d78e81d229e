// Test helper: an ImageReader over in-memory content with a scripted block-status map.
import type { FormatDriver } from '../format/driver.js';
import type { BlockStatus, ImageReader } from '../image/types.js';

/** One run of the fake image's map. */
export interface FakeRun {
  length: number;
  /** data: holds bytes; zero: allocated zeros; unallocated: nothing in the chain (reads as zero). */
  kind: 'data' | 'zero' | 'unallocated';
  /** Byte value (or generator by guest offset) for data runs. Default: a position-dependent pattern. */
  fill?: number | ((offset: number) => number);
  /** Report a host offset for this run (data/zero), as a raw file or qcow2 data cluster would. */
  hostOffset?: boolean;
}

export interface FakeImageOptions {
  /** Max random delay in ms for read and blockStatus, to shuffle completion order. */
  maxDelayMs?: number;
  /** Split block-status answers at this granularity (an engine may answer shorter runs). */
  statusGranularity?: number;
  /** Throw from read() when the range touches this offset. */
  failReadAt?: number;
  /** Throw from blockStatus() when asked at or after this offset. */
  failStatusAt?: number;
  /** Virtual size if not the sum of the runs (shorter runs: rest is unallocated). */
  size?: number;
  /** Delay blockStatus() too (default true). */
  delayStatus?: boolean;
  /** Seed for the deterministic pseudo-random delays. */
  seed?: number;
}

/** Default data pattern: never zero within a sector, differs by offset. */
export function pattern(offset: number): number {
  return ((offset * 7 + (offset >>> 9)) & 0xff) | 1;
}

export class FakeImage implements ImageReader {
  readonly size: number;
  readonly driver = undefined as unknown as FormatDriver;
  readonly backing = undefined;
  readonly content: Uint8Array;
  readonly runs: { start: number; end: number; run: FakeRun }[] = [];
  readonly reads: { offset: number; length: number }[] = [];
  /** Reads that touched a zero or unallocated run. */
  readonly badReads: { offset: number; length: number }[] = [];
  statusCalls = 0;
  inFlight = 0;
  maxInFlight = 0;
  readonly #opts: FakeImageOptions;
  #rand: number;

  constructor(runs: FakeRun[], opts: FakeImageOptions = {}) {
    this.#opts = opts;
    this.#rand = opts.seed ?? 12345;
    let pos = 0;
    for (const run of runs) {
      this.runs.push({ start: pos, end: pos + run.length, run });
      pos += run.length;
    }
    this.size = opts.size ?? pos;
    if (this.size > pos) this.runs.push({ start: pos, end: this.size, run: { length: this.size - pos, kind: 'unallocated' } });
    this.content = new Uint8Array(this.size);
    for (const { start, end, run } of this.runs) {
      if (run.kind !== 'data') continue;
      for (let o = start; o < Math.min(end, this.size); o++) {
        this.content[o] = typeof run.fill === 'number' ? run.fill : (run.fill ?? pattern)(o);
      }
    }
  }

  #delay(): Promise<void> | undefined {
    const max = this.#opts.maxDelayMs ?? 0;
    if (max <= 0) return undefined;
    this.#rand = (this.#rand * 1103515245 + 12345) & 0x7fffffff;
    const ms = this.#rand % (max + 1);
    return new Promise((r) => setTimeout(r, ms));
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    if (offset < 0 || offset + dst.length > this.size) throw new RangeError(`read out of bounds ${offset}+${dst.length}`);
    const fail = this.#opts.failReadAt;
    this.reads.push({ offset, length: dst.length });
    for (const { start, end, run } of this.runs) {
      if (run.kind !== 'data' && start < offset + dst.length && end > offset) this.badReads.push({ offset, length: dst.length });
    }
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await this.#delay();
      if (fail !== undefined && fail >= offset && fail < offset + dst.length) throw new Error('Input/output error');
      dst.set(this.content.subarray(offset, offset + dst.length));
    } finally {
      this.inFlight--;
    }
  }

  async blockStatus(offset: number, maxLength: number): Promise<BlockStatus> {
    this.statusCalls++;
    if (this.#opts.failStatusAt !== undefined && offset >= this.#opts.failStatusAt) throw new Error('status failed');
    if (this.#opts.delayStatus !== false) await this.#delay();
    const hit = this.runs.find((r) => r.start <= offset && offset < r.end);
    if (!hit) throw new RangeError(`blockStatus out of bounds ${offset}`);
    let length = Math.min(hit.end - offset, maxLength);
    const g = this.#opts.statusGranularity;
    if (g) length = Math.min(length, g - (offset % g));
    const { kind, hostOffset } = hit.run;
    const st: BlockStatus = {
      offset,
      length,
      depth: 0,
      present: kind !== 'unallocated',
      zero: kind !== 'data',
      data: kind === 'data',
      compressed: false,
    };
    if (hostOffset && kind !== 'unallocated') st.hostOffset = offset;
    return st;
  }

  async close(): Promise<void> {}
}
