import { Qcow2Error } from '../errors.js';
import type { BlockStatus, ImageReader } from '../image/types.js';
import { addChunkPercent } from './qemu-progress.js';
import { findNonzeroSector, firstDifferentSector, SECTOR } from './sector-scan.js';

/** Options for {@link compareImages}. */
export interface CompareOptions {
  /** `-s`: sizes and allocation status must match too. */
  strict?: boolean;
  /** Percentage done, accumulated in single precision exactly as qemu-img compare does. */
  progress?: (percent: number) => void;
  /**
   * Called when the sizes differ (non-strict), at the point qemu-img prints
   * "Warning: Image size mismatch!", before the longer image's tail is checked.
   */
  onSizeMismatch?: () => void;
}

/** Outcome of a comparison; `exitCode` is qemu-img compare's. */
export type CompareResult =
  /** Same guest content (exit 0). `sizeMismatch`: the longer tail reads as zeros. */
  | { status: 'identical'; exitCode: 0; sizeMismatch: boolean }
  /** First differing 512-byte sector (exit 1). */
  | { status: 'content-mismatch'; exitCode: 1; offset: number }
  /** Strict mode: the allocation status differs at `offset` (exit 1). */
  | { status: 'block-status-mismatch'; exitCode: 1; offset: number }
  /** Strict mode: the sizes differ (exit 1). */
  | { status: 'size-mismatch'; exitCode: 1 };

const IO_BUF_SIZE = 2 * 1024 * 1024;

/** The part of a block status qemu-img compare -s compares (qemu's status flags). */
interface Flags {
  present: boolean;
  zero: boolean;
  data: boolean;
  offsetValid: boolean;
  eof: boolean;
  length: number;
}

/** An image as qemu sees it: size rounded up to whole sectors, the padding reading as zeros. */
class Side {
  readonly size: number;
  readonly #reader: ImageReader;
  readonly #index: 0 | 1;

  constructor(reader: ImageReader, index: 0 | 1) {
    if (!Number.isSafeInteger(reader.size) || reader.size < 0) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid image size ${reader.size}`);
    this.#reader = reader;
    this.#index = index;
    this.size = Math.ceil(reader.size / SECTOR) * SECTOR;
  }

  async status(offset: number): Promise<Flags> {
    const real = this.#reader.size;
    let st: BlockStatus;
    if (offset >= real) {
      st = { offset, length: this.size - offset, depth: 0, present: false, zero: true, data: false, compressed: false };
    } else {
      try {
        st = await this.#reader.blockStatus(offset, real - offset);
      } catch (e) {
        throw this.#error(e, 'block-status', offset);
      }
      if (!(st.length > 0) || st.offset !== offset) {
        throw this.#error(new Qcow2Error('INVALID_IMAGE', `Block status at ${offset} returned an invalid run`), 'block-status', offset);
      }
    }
    // Runs are used as reported (qemu does not round them); the padding is its own run.
    const end = Math.min(offset + st.length, this.size);
    return {
      present: st.present,
      zero: st.zero,
      data: st.data,
      offsetValid: st.hostOffset !== undefined,
      eof: end === this.size,
      length: end - offset,
    };
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    const real = Math.max(0, Math.min(dst.length, this.#reader.size - offset));
    try {
      if (real > 0) await this.#reader.read(dst.subarray(0, real), offset);
    } catch (e) {
      throw this.#error(e, 'read', offset);
    }
    if (real < dst.length) dst.fill(0, real);
  }

  #error(e: unknown, stage: 'block-status' | 'read', offset: number): Qcow2Error {
    const message = e instanceof Error ? e.message : String(e);
    const code = e instanceof Qcow2Error ? e.code : 'IO';
    return new Qcow2Error(code, message, { image: this.#index, stage, offset }, { cause: e });
  }
}

function sameFlags(a: Flags, b: Flags): boolean {
  return a.present === b.present && a.zero === b.zero && a.data === b.data && a.offsetValid === b.offsetValid && a.eof === b.eof;
}

/**
 * Compare the guest content of two images with `qemu-img compare` semantics: unallocated
 * and zero ranges are equal, a size difference is fine when the longer image's tail reads
 * as zeros, and strict mode also requires equal sizes and allocation. Ranges both images
 * report as zero are never read.
 *
 * Sizes count in whole 512-byte sectors, as qemu does. When an image cannot be inspected it
 * throws Qcow2Error with `context.image` (0 or 1), `context.offset` and `context.stage`:
 * 'block-status' (qemu-img exits 3) or 'read' (exits 4).
 *
 * @example
 * ```ts
 * const r = await compareImages(a, b);
 * if (r.status === 'content-mismatch') console.log(`Content mismatch at offset ${r.offset}!`);
 * ```
 */
export async function compareImages(a: ImageReader, b: ImageReader, options: CompareOptions = {}): Promise<CompareResult> {
  const one = new Side(a, 0);
  const two = new Side(b, 1);
  const strict = options.strict ?? false;
  const progress = options.progress;
  const total = Math.min(one.size, two.size);
  const base = Math.max(one.size, two.size);
  let current = 0;
  const advance = (chunk: number): void => {
    if (!progress) return;
    current = addChunkPercent(current, chunk, base);
    progress(current);
  };

  if (strict && one.size !== two.size) return { status: 'size-mismatch', exitCode: 1 };

  let buf1: Uint8Array | undefined;
  let buf2: Uint8Array | undefined;
  let offset = 0;
  while (offset < total) {
    const s1 = await one.status(offset);
    const s2 = await two.status(offset);
    let chunk = Math.min(s1.length, s2.length);
    if (strict && !sameFlags(s1, s2)) return { status: 'block-status-mismatch', exitCode: 1, offset };
    if (s1.zero && s2.zero) {
      // Both read as zeros: nothing to read.
    } else if (s1.present === s2.present) {
      if (s1.present) {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        buf1 ??= new Uint8Array(IO_BUF_SIZE);
        buf2 ??= new Uint8Array(IO_BUF_SIZE);
        const x = buf1.subarray(0, chunk);
        const y = buf2.subarray(0, chunk);
        await readBoth(one.read(x, offset), two.read(y, offset));
        const at = firstDifferentSector(x, y, chunk);
        if (at >= 0) return { status: 'content-mismatch', exitCode: 1, offset: offset + at };
      }
    } else {
      chunk = Math.min(chunk, IO_BUF_SIZE);
      buf1 ??= new Uint8Array(IO_BUF_SIZE);
      const at = await nonzeroAt(s1.present ? one : two, buf1, offset, chunk);
      if (at >= 0) return { status: 'content-mismatch', exitCode: 1, offset: at };
    }
    offset += chunk;
    advance(chunk);
  }

  if (one.size !== two.size) {
    options.onSizeMismatch?.();
    const over = one.size > two.size ? one : two;
    while (offset < base) {
      const s = await over.status(offset);
      let chunk = s.length;
      if (s.present && !s.zero) {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        buf1 ??= new Uint8Array(IO_BUF_SIZE);
        const at = await nonzeroAt(over, buf1, offset, chunk);
        if (at >= 0) return { status: 'content-mismatch', exitCode: 1, offset: at };
      }
      offset += chunk;
      advance(chunk);
    }
  }
  return { status: 'identical', exitCode: 0, sizeMismatch: one.size !== two.size };
}

/** Read both images at once, but report a failure of the first image first, as qemu-img does. */
async function readBoth(p1: Promise<void>, p2: Promise<void>): Promise<void> {
  const [r1, r2] = await Promise.allSettled([p1, p2]);
  if (r1.status === 'rejected') throw r1.reason;
  if (r2.status === 'rejected') throw r2.reason;
}

/** qemu's check_empty_sectors: offset of the first non-zero sector in the range, or -1. */
async function nonzeroAt(side: Side, buf: Uint8Array, offset: number, length: number): Promise<number> {
  const view = buf.subarray(0, length);
  await side.read(view, offset);
  const at = findNonzeroSector(view, length);
  return at < 0 ? -1 : offset + at;
}
