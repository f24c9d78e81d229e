/**
 * qemu-img rebase: move an overlay onto another backing file (or none) without changing
 * what it shows. Safe mode copies into the overlay exactly the sectors where the old and
 * the new backing chain differ, in the overlay's unallocated ranges; then the header is
 * rewritten. Browser-safe.
 */
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import type { ImageReader } from '../image/types.js';

/** qemu-img's IO_BUF_SIZE: rebase compares at most this much at a time. */
export const REBASE_BUF_SIZE = 2 << 20;
const SECTOR = 512;

/** How {@link rebaseCopy} runs. */
export interface RebaseCopyOptions {
  /** The new backing chain; undefined detaches (the new backing reads as zeros). */
  newBacking: ImageReader | undefined;
  /**
   * When the new backing is a layer of the overlay's current chain, its depth there
   * (1 = the current backing file). Ranges no layer above it changed are then skipped
   * without reading, as qemu-img does.
   */
  prefixDepth?: number;
  /**
   * Called after each compared range with qemu-img's progress step (percent, a
   * single-precision value; it adds up past 100 on images with many ranges).
   */
  progressStep?: (delta: number) => void;
}

/** What {@link rebaseCopy} did. */
export interface RebaseCopyResult {
  /** Bytes written into the overlay as data. */
  copiedBytes: number;
  /** Bytes written into the overlay as zeros (where the old chain ended). */
  zeroedBytes: number;
}

/**
 * The bytes-long prefix of `a` and `b` that is equal (false) or different (true), in whole
 * 512-byte sectors: qemu-img's compare_buffers().
 */
export function compareSectors(a: Uint8Array, b: Uint8Array, length: number): { differ: boolean; length: number } {
  let i = Math.min(length, SECTOR);
  const differ = !equalBytes(a, b, 0, i);
  while (i < length) {
    const len = Math.min(length - i, SECTOR);
    if (!equalBytes(a, b, i, i + len) !== differ) break;
    i += len;
  }
  return { differ, length: i };
}

function equalBytes(a: Uint8Array, b: Uint8Array, from: number, to: number): boolean {
  for (let k = from; k < to; k++) if (a[k] !== b[k]) return false;
  return true;
}

/**
 * The copy phase of a safe rebase, run exactly as qemu-img 7.2 does: over the overlay's
 * unallocated ranges (at most 2 MiB at a time), read the old chain (`image.backing`) and the
 * new one, and write into `image` the sectors that differ: old data, or zeros where the
 * old chain has ended. Afterwards the overlay reads the same over either chain; switch it
 * with {@link changeBackingFile}.
 *
 * @example
 * ```ts
 * const top = await openImageFile('top.qcow2', { readOnly: false, dependencies: 'follow' });
 * const nb = await openImageFile('new-base.qcow2', { dependencies: 'follow' });
 * await rebaseCopy(top, { newBacking: nb });
 * await changeBackingFile(top, 'new-base.qcow2', 'qcow2');
 * ```
 */
export async function rebaseCopy(image: Image, options: RebaseCopyOptions): Promise<RebaseCopyResult> {
  const size = image.size;
  const old = image.backing;
  const neu = options.newBacking;
  const oldSize = old?.size ?? 0;
  const newSize = neu?.size ?? 0;
  const prefix = options.prefixDepth;
  if (prefix !== undefined && (old === undefined || !Number.isInteger(prefix) || prefix < 1 || prefix >= image.chainLength)) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid prefix depth ${prefix}`, { prefix });
  }
  // qemu: (float)100 / (size / MIN(size, IO_BUF_SIZE)), the division in integers.
  const step = size === 0 ? 0 : Math.fround(100 / Math.floor(size / Math.min(size, REBASE_BUF_SIZE)));
  const bufOld = new Uint8Array(REBASE_BUF_SIZE);
  const bufNew = new Uint8Array(REBASE_BUF_SIZE);
  let copiedBytes = 0;
  let zeroedBytes = 0;
  let n: number;
  for (let offset = 0; offset < size; offset += n) {
    n = Math.min(REBASE_BUF_SIZE, size - offset);
    const m = await image.driver.getMapping(offset, n);
    if (m.kind === 'eof' || m.length <= 0) throw new Qcow2Error('IO', `Mapping ended early at offset ${offset}`, { offset });
    n = Math.min(n, m.length);
    if (m.kind !== 'unallocated') continue;

    // The new backing is the old one: nothing can differ.
    if (prefix === 1) continue;
    if (prefix !== undefined && old !== undefined && offset < oldSize) {
      // Past the old backing's end qemu-img compares anyway (zeros against the new chain).
      const st = await old.blockStatus(offset, n);
      n = st.length;
      const limit = prefix - 1; // the prefix's depth below the old backing
      const changed = st.present ? st.depth < limit : st.depth + 1 < limit;
      if (!changed) continue;
    }

    const oldIsZero = offset >= oldSize;
    if (oldIsZero) {
      bufOld.fill(0, 0, n);
    } else {
      if (offset + n > oldSize) n = oldSize - offset;
      await old!.read(bufOld.subarray(0, n), offset);
    }
    if (neu === undefined || offset >= newSize) {
      bufNew.fill(0, 0, n);
    } else {
      if (offset + n > newSize) n = newSize - offset;
      await neu.read(bufNew.subarray(0, n), offset);
    }

    let written = 0;
    while (written < n) {
      const c = compareSectors(bufOld.subarray(written, n), bufNew.subarray(written, n), n - written);
      if (c.differ) {
        if (oldIsZero) {
          await image.writeZeroes(offset + written, c.length);
          zeroedBytes += c.length;
        } else {
          await image.write(bufOld.subarray(written, written + c.length), offset + written);
          copiedBytes += c.length;
        }
      }
      written += c.length;
    }
    options.progressStep?.(step);
  }
  await image.flush();
  return { copiedBytes, zeroedBytes };
}

/**
 * Point a qcow2 image at another backing file, or at none (`name` undefined), rewriting its
 * header. Content is not touched: use {@link rebaseCopy} first unless the two chains are
 * known to read the same (`rebase -u`).
 *
 * Throws Qcow2Error('UNSUPPORTED') for formats without backing files (raw) and
 * Qcow2Error('INVALID_ARGUMENT') when the name is longer than 1023 bytes, the image has a
 * raw external data file, or the name does not fit in the first cluster.
 */
export async function changeBackingFile(image: Image, name: string | undefined, format: string | undefined): Promise<void> {
  if (name !== undefined && new TextEncoder().encode(name).byteLength > 1023) {
    throw new Qcow2Error('INVALID_ARGUMENT', 'Invalid argument', { errno: 'EINVAL' });
  }
  await image.setBacking(name, name === undefined ? undefined : format);
}
