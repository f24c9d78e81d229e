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
import type { CheckImage, SnapshotState } from './check-image.js';
import { CheckAbort } from './check-types.js';
import { snapshotL1Offset } from './snapshot-entry.js';

/** What the overlap check needs of a check. */
export type OverlapScope = Pick<CheckContext, 'img' | 'reporter'>;

/** Metadata kinds, named as QEMU names them in its message. */
export type MetadataKind =
  | 'qcow2_header' | 'active L1 table' | 'active L2 table' | 'refcount table' | 'refcount block'
  | 'snapshot table' | 'inactive L1 table' | 'bitmap directory';

/**
 * Clusters touched by the structures of one kind, as disjoint sorted runs of cluster indexes:
 * a query is a binary search, however many tables a hostile image has (QEMU walks the whole
 * L1 and refcount table per write; a repair can make millions of writes).
 */
export class ClusterRuns {
  readonly #first: Float64Array;
  readonly #last: Float64Array;

  /** `ranges` holds [offset, bytes] pairs; empty ranges are ignored. */
  constructor(cs: number, ranges: Float64Array) {
    const n = ranges.length / 2;
    const first = new Float64Array(n);
    const last = new Float64Array(n);
    let m = 0;
    for (let i = 0; i < n; i++) {
      const at = ranges[2 * i]!;
      const bytes = ranges[2 * i + 1]!;
      if (bytes <= 0) continue;
      first[m] = Math.floor(at / cs);
      last[m] = Math.floor((at + bytes - 1) / cs);
      m++;
    }
    const order = new Uint32Array(m);
    for (let i = 0; i < m; i++) order[i] = i;
    order.sort((a, b) => first[a]! - first[b]!);
    const f: number[] = [];
    const l: number[] = [];
    for (let k = 0; k < m; k++) {
      const i = order[k]!;
      const top = l.length - 1;
      if (top >= 0 && first[i]! <= l[top]! + 1) {
        if (last[i]! > l[top]!) l[top] = last[i]!;
      } else {
        f.push(first[i]!);
        l.push(last[i]!);
      }
    }
    this.#first = Float64Array.from(f);
    this.#last = Float64Array.from(l);
  }

  /** Whether any cluster of `[from, to)` is touched. */
  hits(from: number, to: number): boolean {
    // The last run starting before `to`.
    let lo = 0;
    let hi = this.#first.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#first[mid]! < to) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && this.#last[lo - 1]! >= from;
  }
}

/** Indexes built from what a check holds in memory, rebuilt when their source changes. */
interface OverlapIndex {
  l2: { source: Uint8Array; runs: ClusterRuns } | undefined;
  refblocks: { source: Uint8Array; runs: ClusterRuns } | undefined;
  inactiveL1: { source: SnapshotState; runs: ClusterRuns } | undefined;
}

const indexes = new WeakMap<CheckImage, OverlapIndex>();

function indexOf(img: CheckImage): OverlapIndex {
  let index = indexes.get(img);
  if (index === undefined) {
    index = { l2: undefined, refblocks: undefined, inactiveL1: undefined };
    indexes.set(img, index);
  }
  return index;
}

/** Forget the refcount block index after the refcount table was changed in place. */
export function refcountTableChanged(img: CheckImage): void {
  indexOf(img).refblocks = undefined;
}

/** Active L2 tables: repairs change only the COPIED flags of the L1 table, never its offsets. */
function activeL2Runs(img: CheckImage, index: OverlapIndex): ClusterRuns {
  if (index.l2?.source !== img.l1) {
    const ranges = new Float64Array(img.l1Size * 2);
    for (let i = 0; i < img.l1Size; i++) {
      const [hi, lo] = img.l1Entry(i);
      const at = entryOffset(hi, lo);
      ranges[2 * i] = at;
      ranges[2 * i + 1] = at !== 0 ? img.clusterSize : 0;
    }
    index.l2 = { source: img.l1, runs: new ClusterRuns(img.clusterSize, ranges) };
  }
  return index.l2.runs;
}

function refblockRuns(img: CheckImage, index: OverlapIndex): ClusterRuns {
  if (index.refblocks?.source !== img.reftable) {
    const n = img.reftableEntries;
    const ranges = new Float64Array(n * 2);
    for (let i = 0; i < n; i++) {
      const [hi, lo] = img.reftableEntry(i);
      if (hi > 0x1fffff) continue;
      const at = hi * 2 ** 32 + ((lo & 0xfffffe00) >>> 0);
      ranges[2 * i] = at;
      ranges[2 * i + 1] = at !== 0 ? img.clusterSize : 0;
    }
    index.refblocks = { source: img.reftable, runs: new ClusterRuns(img.clusterSize, ranges) };
  }
  return index.refblocks.runs;
}

function inactiveL1Runs(img: CheckImage, index: OverlapIndex): ClusterRuns {
  const sns = img.snapshots;
  if (index.inactiveL1?.source !== sns) {
    const ranges = new Float64Array(sns.snapshots.length * 2);
    sns.snapshots.forEach((sn, i) => {
      const at = snapshotL1Offset(sn);
      if (at === undefined) return;
      ranges[2 * i] = at;
      ranges[2 * i + 1] = sn.l1Size * 8;
    });
    index.inactiveL1 = { source: sns, runs: new ClusterRuns(img.clusterSize, ranges) };
  }
  return index.inactiveL1.runs;
}

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
  const index = indexOf(img);
  const from = start / cs;
  const to = end / cs;
  if (checks('inactive L1 table') && inactiveL1Runs(img, index).hits(from, to)) return 'inactive L1 table';
  if (checks('active L2 table') && activeL2Runs(img, index).hits(from, to)) return 'active L2 table';
  if (checks('refcount block') && refblockRuns(img, index).hits(from, to)) return 'refcount block';
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
