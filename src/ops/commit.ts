/**
 * qemu-img commit: copy what an overlay (and the layers between it and a base) changed into
 * the base, then optionally empty the overlay so that it shows the base through.
 * Browser-safe.
 */
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';

/** How {@link commitImage} runs. */
export interface CommitOptions {
  /**
   * Where the base sits in `top`'s chain: 1 is `top`'s backing file, 2 the one below, ...
   */
  baseDepth: number;
  /**
   * The base layer opened writable (the same image as the chain's layer at `baseDepth`,
   * which the chain itself holds read-only). Its own backing chain must be open, for
   * copy-on-write of partial clusters.
   */
  base: Image;
  /** Called with the percentage of bytes copied so far (0 to 100). */
  progress?: (percent: number) => void;
  /** Bytes per read/write request (default 1 MiB). */
  chunkSize?: number;
}

/** What {@link commitImage} did. */
export interface CommitResult {
  /** Bytes copied as data into the base. */
  copiedBytes: number;
  /** Bytes written as zeros into the base. */
  zeroedBytes: number;
  /** True when the base was grown to the overlay's size. */
  grewBase: boolean;
}

interface Run {
  offset: number;
  length: number;
  zero: boolean;
}

const DEFAULT_CHUNK = 1 << 20;

/**
 * The ranges QEMU's commit job copies: allocated in `top` or a layer above the base (data,
 * zeros, compressed), plus ranges past the end of a shorter intermediate layer, which QEMU
 * treats as zeros allocated in that layer.
 */
export async function commitRuns(top: Image, baseDepth: number): Promise<Run[]> {
  const runs: Run[] = [];
  const size = top.size;
  let offset = 0;
  while (offset < size) {
    const st = await top.blockStatus(offset, size - offset);
    // Unallocated all the way: `depth` names the layer whose backing is short (or missing).
    const decidedAbove = st.present ? st.depth < baseDepth : st.depth + 1 < baseDepth;
    if (decidedAbove) {
      const zero = st.zero && !st.data;
      const last = runs[runs.length - 1];
      if (last !== undefined && last.zero === zero && last.offset + last.length === offset) last.length += st.length;
      else runs.push({ offset, length: st.length, zero });
    }
    offset += st.length;
  }
  return runs;
}

/**
 * Write into the base everything the layers above it decide, growing the base to the
 * overlay's size first if it is smaller (as QEMU's commit job does). The overlay is only
 * read; empty it afterwards with {@link emptyImage} unless the caller keeps it.
 *
 * @example
 * ```ts
 * const top = await openImageFile('top.qcow2', { readOnly: false, dependencies: 'follow' });
 * const base = await openImageFile('base.qcow2', { readOnly: false, dependencies: 'follow' });
 * await commitImage(top, { baseDepth: 1, base });
 * await emptyImage(top);
 * ```
 */
export async function commitImage(top: Image, options: CommitOptions): Promise<CommitResult> {
  const { base, baseDepth } = options;
  if (!Number.isInteger(baseDepth) || baseDepth < 1 || baseDepth >= top.chainLength) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid base depth ${baseDepth} for a chain of ${top.chainLength} images`, { baseDepth });
  }
  const chunk = options.chunkSize ?? DEFAULT_CHUNK;
  const runs = await commitRuns(top, baseDepth);
  let grewBase = false;
  if (base.size < top.size) {
    await base.resize(top.size);
    grewBase = true;
  }
  let total = 0;
  for (const r of runs) total += r.length;
  let done = 0;
  let copiedBytes = 0;
  let zeroedBytes = 0;
  const report = (): void => options.progress?.(total === 0 ? 100 : (done / total) * 100);
  report();
  const buf = new Uint8Array(Math.max(1, chunk));
  for (const r of runs) {
    if (r.zero) {
      await base.writeZeroes(r.offset, r.length, { unmap: true });
      zeroedBytes += r.length;
      done += r.length;
      report();
      continue;
    }
    for (let p = r.offset; p < r.offset + r.length; p += buf.byteLength) {
      const piece = buf.subarray(0, Math.min(buf.byteLength, r.offset + r.length - p));
      await top.read(piece, p);
      await base.write(piece, p);
      copiedBytes += piece.byteLength;
      done += piece.byteLength;
      report();
    }
  }
  await base.flush();
  return { copiedBytes, zeroedBytes, grewBase };
}

/**
 * Make every cluster of an image unallocated again, so that the backing file shows through
 * (QEMU's bdrv_make_empty, done the way its fallback does: a full discard of every
 * allocated cluster, the partial last cluster included). Clusters shared with internal
 * snapshots stay referenced by them.
 *
 * Throws Qcow2Error('UNSUPPORTED') for formats that cannot be emptied (raw), which
 * qemu-img ignores.
 *
 * @example
 * ```ts
 * await emptyImage(top); // top now reads exactly as its backing file
 * ```
 */
export async function emptyImage(image: Image): Promise<void> {
  const writer = image.driver.writer;
  if (writer === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
  if (image.driver.format !== 'qcow2') throw new Qcow2Error('UNSUPPORTED', `Emptying '${image.driver.format}' images is not supported`, {});
  const cs = image.driver.clusterSize;
  const size = image.size;
  const wholeEnd = Math.floor(size / cs) * cs;
  let start = -1;
  let end = -1;
  let tail = false;
  const flushRun = async (): Promise<void> => {
    if (start >= 0 && Math.min(end, wholeEnd) > start) await image.discard(start, Math.min(end, wholeEnd) - start, { full: true });
    start = -1;
  };
  let offset = 0;
  while (offset < size) {
    const m = await image.driver.getMapping(offset, size - offset);
    if (m.kind === 'eof' || m.length <= 0) break;
    if (m.kind !== 'unallocated') {
      const a = Math.floor(offset / cs) * cs;
      const b = Math.ceil((offset + m.length) / cs) * cs;
      if (b > wholeEnd && wholeEnd < size) tail = true;
      if (start >= 0 && a <= end) end = Math.max(end, b);
      else {
        await flushRun();
        start = a;
        end = b;
      }
    }
    offset += m.length;
  }
  await flushRun();
  // Image.discard stops at the last whole cluster; QEMU's discard at the image end also
  // drops the partial last cluster. The writer takes whole clusters, so ask for that one.
  if (tail) await writer.discard(wholeEnd, cs, true);
  await image.flush();
}
