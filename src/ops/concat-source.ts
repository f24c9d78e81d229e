import { Qcow2Error } from '../errors.js';
import type { ImageReader } from '../image/types.js';
import { SECTOR } from './sector-scan.js';

/** How a run of source bytes must be copied. */
export type SourceRunKind = 'data' | 'zero';

/** A run of the source with one status. */
export interface SourceRun {
  kind: SourceRunKind;
  length: number;
  /** Stored compressed: block status answers one cluster at a time for these. */
  compressed: boolean;
}

/** qemu's BDRV_REQUEST_MAX_SECTORS in bytes: the longest block-status query qemu-img makes. */
export const MAX_STATUS_QUERY = Math.floor(0x7fffffff / SECTOR) * SECTOR;

/**
 * Several images read back to back as one disk, the way `qemu-img convert a b c out`
 * concatenates its sources. Like qemu, each source counts as a whole number of 512-byte
 * sectors: a source whose size is not a multiple of 512 is padded with zeros.
 */
export class ConcatSource {
  readonly size: number;
  readonly #readers: readonly ImageReader[];
  /** Start offset of each source in the concatenation, plus the total at the end. */
  readonly #starts: number[];

  constructor(readers: readonly ImageReader[]) {
    if (readers.length === 0) throw new Qcow2Error('INVALID_ARGUMENT', 'At least one source image is needed');
    this.#readers = readers;
    this.#starts = [0];
    let total = 0;
    for (const r of readers) {
      if (!Number.isSafeInteger(r.size) || r.size < 0) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid source size ${r.size}`);
      total += Math.ceil(r.size / SECTOR) * SECTOR;
      this.#starts.push(total);
    }
    this.size = total;
  }

  /** Index of the source holding `offset` (offset < size). */
  #locate(offset: number): number {
    let lo = 0;
    let hi = this.#readers.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /**
   * Kind and length of the run at `offset`, resolved through each source's backing chain,
   * never crossing a source boundary. Lengths are rounded up to whole sectors as qemu-img
   * does, so every run starts on a sector boundary.
   */
  async status(offset: number, maxLength: number): Promise<SourceRun> {
    const i = this.#locate(offset);
    const reader = this.#readers[i]!;
    const base = this.#starts[i]!;
    const end = Math.min(this.#starts[i + 1]!, offset + maxLength);
    const local = offset - base;
    if (local >= reader.size) return { kind: 'zero', length: end - offset, compressed: false }; // sector padding
    const st = await reader.blockStatus(local, Math.min(end - base, reader.size) - local);
    if (!(st.length > 0) || st.offset !== local) {
      throw new Qcow2Error('INVALID_IMAGE', `Block status at ${local} returned an invalid run`, { offset: local, length: st.length });
    }
    let runEnd = base + local + st.length;
    runEnd = Math.min(Math.ceil(runEnd / SECTOR) * SECTOR, end);
    // Zeros are skipped; anything else (data, or unallocated with nothing below) is read.
    return { kind: st.zero ? 'zero' : 'data', length: runEnd - offset, compressed: st.compressed };
  }

  /** Fill `dst` with the concatenated bytes at `offset`. */
  async read(dst: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < dst.length) {
      const pos = offset + done;
      const i = this.#locate(pos);
      const reader = this.#readers[i]!;
      const local = pos - this.#starts[i]!;
      const take = Math.min(dst.length - done, this.#starts[i + 1]! - pos);
      const real = Math.max(0, Math.min(take, reader.size - local));
      if (real > 0) await reader.read(dst.subarray(done, done + real), local);
      if (real < take) dst.fill(0, done + real, done + take);
      done += take;
    }
  }
}
