/**
 * QEMU's check_refcounts_l1 / check_refcounts_l2: count the references an L1 table makes (the
 * table itself, its L2 tables, their data and compressed clusters) and report bad entries:
 * reserved bits, unaligned tables and clusters, COPIED on compressed clusters, broken
 * subcluster bitmaps. With `-r all`, unaligned preallocated zero clusters become plain zero
 * clusters, as QEMU does.
 */
import { viewOf } from '../../util/bytes.js';
import { decodeCompressed, entryOffset } from '../../format/qcow2/table-entries.js';
import { readAtU64, type CheckContext } from './check-context.js';
import { countReferences } from './count-references.js';
import { CheckAbort, type CheckResult, type FixMode } from './check-types.js';
import type { RefcountArray } from './refcount-array.js';
import { guardRepairWrite } from './repair-overlap.js';
import { hex64 } from './snapshot-entry.js';

/** QEMU's cluster types (qcow2_get_cluster_type). */
export const enum ClusterType {
  Unallocated,
  ZeroPlain,
  ZeroAlloc,
  Normal,
  Compressed,
}

const COPIED = 0x80000000;
const COMPRESSED = 0x40000000;

/** Classify an L2 entry like QEMU (the ZERO flag does not exist with extended L2 entries). */
export function clusterType(hi: number, lo: number, extendedL2: boolean, hasDataFile: boolean): ClusterType {
  if ((hi & COMPRESSED) !== 0) return ClusterType.Compressed;
  const hasOffset = (hi & 0x00ffffff) !== 0 || (lo & 0xfffffe00) !== 0;
  if ((lo & 1) !== 0 && !extendedL2) return hasOffset ? ClusterType.ZeroAlloc : ClusterType.ZeroPlain;
  if (!hasOffset) return hasDataFile && (hi & COPIED) !== 0 ? ClusterType.Normal : ClusterType.Unallocated;
  return ClusterType.Normal;
}

/** Options of one L1 walk. */
export interface L1WalkOptions {
  /** Count allocated / fragmented / compressed clusters (active L1 only). */
  fragInfo: boolean;
  fix: FixMode;
  /** The active L1 table (as opposed to a snapshot's). */
  active: boolean;
}

/**
 * Count references of the L1 table at `hi:lo` with `l1Size` entries. Throws CheckAbort when
 * the check cannot go on (I/O error).
 */
export async function checkRefcountsL1(ctx: CheckContext, res: CheckResult, imrt: RefcountArray, offsetHi: number, offsetLo: number, l1Size: number, opts: L1WalkOptions): Promise<void> {
  if (l1Size === 0) return;
  const cs = ctx.img.clusterSize;
  const bytes = l1Size * 8;
  if (offsetHi >= 0x80000000) {
    // QEMU takes this offset as a negative int64 and fails allocating a refcount array for it.
    res.checkErrors++;
    throw new CheckAbort('ENOMEM');
  }
  const offset = offsetHi * 2 ** 32 + offsetLo;
  countReferences(ctx, res, imrt, offset, bytes, hex64(offsetHi, offsetLo));
  // Entries past the end of the file read as zero and are skipped: only the part inside the
  // file is read and walked (a hostile snapshot list cannot make us zero-fill 32 MiB each).
  const inFile = Math.max(0, Math.min(bytes, ctx.img.fileSize - offset));
  const l1 = new Uint8Array(inFile - (inFile % 8));
  if (offsetHi >= 0x7fffffff || !(await readAtU64(ctx, l1, offsetHi, offsetLo))) {
    ctx.reporter.line('ERROR: I/O error in check_refcounts_l1');
    res.checkErrors++;
    throw new CheckAbort('EIO');
  }
  const v = viewOf(l1);
  for (let i = 0; i < l1.byteLength / 8; i++) {
    const hi = v.getUint32(i * 8);
    const lo = v.getUint32(i * 8 + 4);
    if (hi === 0 && lo === 0) continue;
    if ((hi & 0x7f000000) !== 0 || (lo & 0x1ff) !== 0) {
      ctx.reporter.line(`ERROR found L1 entry with reserved bits set: ${hex64(hi, lo)}`);
      res.corruptions++;
    }
    const l2Offset = entryOffset(hi, lo);
    countReferences(ctx, res, imrt, l2Offset, cs);
    if (l2Offset % cs !== 0) {
      ctx.reporter.line(`ERROR l2_offset=${l2Offset.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
      res.corruptions++;
    }
    await checkRefcountsL2(ctx, res, imrt, l2Offset, opts);
  }
}

async function checkRefcountsL2(ctx: CheckContext, res: CheckResult, imrt: RefcountArray, l2Offset: number, opts: L1WalkOptions): Promise<void> {
  const img = ctx.img;
  const cs = img.clusterSize;
  const ext = img.extendedL2;
  const entrySize = img.l2EntrySize;
  // Past the end of the file a table reads as zeros (as QEMU's reads do), and zero entries
  // need nothing: never ask the storage for offsets a hostile L1 entry made up, and do not
  // walk the table again for each of the (possibly millions of) L1 entries naming it.
  if (l2Offset >= img.fileSize) return;
  const table = new Uint8Array(cs);
  await img.storage.read(table, l2Offset);
  const v = viewOf(table);
  const words = new Uint32Array(table.buffer, 0, cs >>> 2);
  const wordsPerEntry = entrySize >>> 2;
  const report = (text: string): void => ctx.reporter.line(text);
  let nextContiguous = 0;
  for (let i = 0; i < img.l2Entries; i++) {
    if (isZeroEntry(words, i * wordsPerEntry, wordsPerEntry)) continue;
    const at = i * entrySize;
    let hi = v.getUint32(at);
    const lo = v.getUint32(at + 4);
    // Extended L2 bitmap: high word "reads as zero" bits, low word "allocated" bits.
    const zeroBits = ext ? v.getUint32(at + 8) : 0;
    const allocBits = ext ? v.getUint32(at + 12) : 0;
    const type = clusterType(hi, lo, ext, img.hasDataFile);
    if (type !== ClusterType.Compressed && ((hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0)) {
      report(`ERROR found l2 entry with reserved bits set: ${hex64(hi, lo)}`);
      res.corruptions++;
    }
    switch (type) {
      case ClusterType.Compressed: {
        const shiftHi = 38 - img.clusterBits;
        const offsetHi = (hi & 0x3fffffff) & ((1 << shiftHi) - 1);
        if ((hi & COPIED) !== 0) {
          report(`ERROR: coffset=0x${hex64(offsetHi, lo)}: copied flag must never be set for compressed clusters`);
          hi = (hi & ~COPIED) >>> 0;
          res.corruptions++;
        }
        if (img.hasDataFile) {
          report(`ERROR compressed cluster ${i} with data file, entry=0x${hex64(hi, lo)}`);
          res.corruptions++;
          break;
        }
        if (zeroBits !== 0 || allocBits !== 0) {
          report(`ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${hex64(hi, lo)}`);
          res.corruptions++;
          break;
        }
        const d = decodeCompressed(hi, lo, img.clusterBits);
        // The length from the low bits: the offset is inexact above 2^53 (a hostile entry).
        const sectors = ((hi & 0x3fffffff) >>> shiftHi) & ((1 << (img.clusterBits - 8)) - 1);
        countReferences(ctx, res, imrt, d.hostOffset, (sectors + 1) * 512 - (lo & 511), hex64(offsetHi, lo));
        if (opts.fragInfo) {
          res.allocatedClusters++;
          res.compressedClusters++;
          // QEMU: compressed clusters are fragmented by nature.
          res.fragmentedClusters++;
        }
        break;
      }
      case ClusterType.ZeroAlloc:
      case ClusterType.Normal: {
        const offset = entryOffset(hi, lo);
        if ((zeroBits & allocBits) !== 0) {
          res.corruptions++;
          report(`ERROR offset=${offset.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap`);
        }
        if (offset % cs !== 0) {
          res.corruptions++;
          const containsData = ext ? allocBits !== 0 : (lo & 1) === 0;
          if (!containsData) {
            report(`${opts.fix.errors ? 'Repairing' : 'ERROR'} offset=${offset.toString(16)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
            if (opts.fix.errors) {
              await fixL2EntryByZero(ctx, res, table, l2Offset, i, opts.active);
              res.corruptions--;
              res.corruptionsFixed++;
              continue; // the cluster is unused now
            }
          } else {
            report(`ERROR offset=${offset.toString(16)}: Data cluster is not properly aligned; L2 entry corrupted.`);
          }
        }
        if (opts.fragInfo) {
          res.allocatedClusters++;
          if (nextContiguous !== 0 && offset !== nextContiguous) res.fragmentedClusters++;
          nextContiguous = offset + cs;
        }
        if (!img.hasDataFile) countReferences(ctx, res, imrt, offset, cs);
        break;
      }
      case ClusterType.ZeroPlain:
        break;
      case ClusterType.Unallocated:
        if (allocBits !== 0) {
          res.corruptions++;
          report('ERROR: Unallocated cluster has non-zero subcluster allocation map');
        }
        break;
    }
  }
}

/** QEMU's fix_l2_entry_by_zero: make the entry a plain zero cluster and write it back. */
async function fixL2EntryByZero(ctx: CheckContext, res: CheckResult, table: Uint8Array, l2Offset: number, index: number, active: boolean): Promise<void> {
  const img = ctx.img;
  const at = index * img.l2EntrySize;
  try {
    await guardRepairWrite(ctx, l2Offset + at, img.l2EntrySize, active ? ['active L2 table'] : []);
  } catch (e) {
    // QEMU gives up on the whole check when the entry cannot be written safely.
    ctx.reporter.line('ERROR: Overlap check failed');
    res.checkErrors++;
    throw e;
  }
  const v = viewOf(table);
  if (img.extendedL2) {
    // Allocated subclusters become zero subclusters; nothing stays allocated.
    v.setUint32(at + 8, (v.getUint32(at + 8) | v.getUint32(at + 12)) >>> 0);
    v.setUint32(at + 12, 0);
    v.setUint32(at, 0);
    v.setUint32(at + 4, 0);
  } else {
    v.setUint32(at, 0);
    v.setUint32(at + 4, 1);
  }
  await img.storage.write(table.slice(at, at + img.l2EntrySize), l2Offset + at);
}

/** True when the L2 entry at word `w` (2 or 4 words) is all zero: unallocated, nothing to check. */
export function isZeroEntry(words: Uint32Array, w: number, wordsPerEntry: number): boolean {
  return words[w] === 0 && words[w + 1] === 0 && (wordsPerEntry === 2 || (words[w + 2] === 0 && words[w + 3] === 0));
}
