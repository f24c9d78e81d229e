/**
 * QEMU's overlap check ("cached" template) for the writes a repair makes: a write that would
 * land on metadata other than the structure being repaired is refused, the image is marked
 * corrupt and the check fails, exactly as qemu-img 7.2 does (iotest 060: an L1 entry pointing
 * at the L1 table itself cannot be repaired). Only what is in memory is consulted: header,
 * active L1 and its L2 tables, refcount table and blocks, snapshot table and snapshot L1
 * tables, bitmap directory.
 */
import { hasBit, INCOMPAT_CORRUPT, withBit } from '../../format/qcow2/features.js';
import { entryOffset } from '../../format/qcow2/table-entries.js';
import type { CheckContext } from './check-context.js';
import { CheckAbort } from './check-types.js';
import { snapshotL1Offset } from './snapshot-entry.js';

/** What the overlap check needs of a check. */
export type OverlapScope = Pick<CheckContext, 'img' | 'reporter'>;

/** Metadata kinds, named as QEMU names them in its message. */
export type MetadataKind =
  | 'qcow2_header' | 'active L1 table' | 'active L2 table' | 'refcount table' | 'refcount block'
  | 'snapshot table' | 'inactive L1 table' | 'bitmap directory';

/** The first metadata structure `[offset, offset + size)` overlaps, in QEMU's order, or undefined. */
export function findOverlap(ctx: OverlapScope, offset: number, size: number, ignore: readonly MetadataKind[]): MetadataKind | undefined {
  if (size <= 0) return undefined;
  const img = ctx.img;
  const cs = img.clusterSize;
  const checks = (kind: MetadataKind): boolean => !ignore.includes(kind);
  if (checks('qcow2_header') && offset < cs) return 'qcow2_header';
  // QEMU compares whole clusters.
  const start = Math.floor(offset / cs) * cs;
  const end = Math.ceil((offset + size) / cs) * cs;
  const hits = (at: number, bytes: number): boolean => bytes > 0 && at < end && start < at + bytes;
  if (checks('active L1 table') && img.l1Size > 0 && hits(img.l1Offset, img.l1Size * 8)) return 'active L1 table';
  if (checks('refcount table') && img.reftableEntries > 0 && hits(img.reftableOffset, img.reftableEntries * 8)) return 'refcount table';
  const sns = img.snapshots;
  if (checks('snapshot table') && sns.snapshotsSize > 0 && hits(sns.snapshotsOffset, sns.snapshotsSize)) return 'snapshot table';
  if (checks('inactive L1 table')) {
    for (const sn of sns.snapshots) {
      const at = snapshotL1Offset(sn);
      if (at !== undefined && sn.l1Size > 0 && hits(at, sn.l1Size * 8)) return 'inactive L1 table';
    }
  }
  if (checks('active L2 table')) {
    for (let i = 0; i < img.l1Size; i++) {
      const [hi, lo] = img.l1Entry(i);
      const at = entryOffset(hi, lo);
      if (at !== 0 && hits(at, cs)) return 'active L2 table';
    }
  }
  if (checks('refcount block')) {
    for (let i = 0; i < img.reftableEntries; i++) {
      const [hi, lo] = img.reftableEntry(i);
      if (hi > 0x1fffff) continue;
      const at = hi * 2 ** 32 + ((lo & 0xfffffe00) >>> 0);
      if (at !== 0 && hits(at, cs)) return 'refcount block';
    }
  }
  const bm = img.bitmaps;
  if (checks('bitmap directory') && bm !== undefined && hits(bm.directoryOffset, bm.directorySize)) return 'bitmap directory';
  return undefined;
}

/**
 * Refuse a repair write that overlaps metadata: mark the image corrupt (v3) and fail with EIO,
 * as QEMU's qcow2_pre_write_overlap_check does on a writable image.
 */
export async function guardRepairWrite(ctx: OverlapScope, offset: number, size: number, ignore: readonly MetadataKind[]): Promise<void> {
  const hit = findOverlap(ctx, offset, size, ignore);
  if (hit === undefined) return;
  const img = ctx.img;
  const alreadyCorrupt = hasBit(img.incompatibleFeatures, INCOMPAT_CORRUPT);
  if (!alreadyCorrupt || !img.signaledCorruption) {
    ctx.reporter.line(`qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with ${hit}); further corruption events will be suppressed`);
  }
  img.signaledCorruption = true;
  if (img.header.version >= 3 && !alreadyCorrupt) await img.writeIncompatibleFeatures(withBit(img.incompatibleFeatures, INCOMPAT_CORRUPT, true));
  img.stopped = true;
  throw new CheckAbort('EIO', `Preventing invalid write on metadata (overlaps with ${hit})`);
}
