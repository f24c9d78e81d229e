import type { Qcow2State } from './qcow2-state.js';
import { entryOffset } from './table-entries.js';

/**
 * QEMU's "cached" overlap check: before guest data is written to the image file, make sure
 * the target does not hit metadata (header, L1/L2 tables, refcount structures, snapshot
 * table and snapshot L1 tables). Everything checked is already in memory; the sets of L2
 * tables and refcount blocks are built once and kept current by the writer.
 */
export class OverlapCheck {
  readonly #s: Qcow2State;
  #l2: Set<number> | undefined;
  #snapshotTableBytes: number | undefined;
  readonly #tableBytes: () => number;

  /** `snapshotTableBytes` measures the current snapshot table (recomputed after `reset`). */
  constructor(state: Qcow2State, snapshotTableBytes: () => number) {
    this.#s = state;
    this.#tableBytes = snapshotTableBytes;
  }

  /** Tables moved wholesale (snapshot apply/create/delete): rebuild from memory on next use. */
  reset(): void {
    this.#l2 = undefined;
    this.#snapshotTableBytes = undefined;
  }

  /** The writer allocated or freed an active L2 table. */
  l2Added(offset: number): void {
    this.#l2?.add(offset);
  }

  l2Removed(offset: number): void {
    this.#l2?.delete(offset);
  }

  /** Name of the metadata structure `[offset, offset + length)` overlaps, if any. */
  check(offset: number, length: number): string | undefined {
    const s = this.#s;
    const cs = s.clusterSize;
    const end = offset + length;
    const hits = (start: number, bytes: number): boolean => bytes > 0 && offset < start + bytes && start < end;
    const h = s.meta.header;
    if (offset < cs) return 'qcow2_header';
    if (hits(h.l1TableOffset, s.l1Entries * 8)) return 'active L1 table';
    const rc = s.refcounts;
    if (rc !== undefined) {
      if (hits(rc.location.offset, rc.location.clusters * cs)) return 'refcount table';
      if (clusterIn(rc.refblocks(), offset, end, cs)) return 'refcount block';
    }
    this.#snapshotTableBytes ??= this.#tableBytes();
    if (hits(h.snapshotsOffset, this.#snapshotTableBytes)) return 'snapshot table';
    for (const sn of s.meta.snapshots) if (hits(sn.l1TableOffset, sn.l1Size * 8)) return 'inactive L1 table';
    if (clusterIn(this.#l2Set(), offset, end, cs)) return 'active L2 table';
    return undefined;
  }

  #l2Set(): Set<number> {
    if (this.#l2 === undefined) {
      const s = this.#s;
      this.#l2 = new Set();
      for (let i = 0; i < s.l1Entries; i++) {
        const off = entryOffset(s.l1.getUint32(i * 8), s.l1.getUint32(i * 8 + 4));
        if (off !== 0) this.#l2.add(off);
      }
    }
    return this.#l2;
  }
}

/**
 * True when `clusters` (offsets of whole clusters of size `cs`) holds one that `[start, end)`
 * touches. Walks the range's clusters or the set, whichever is shorter: a 2 MiB write covers
 * 32 clusters of 64 KiB, while a small image has one or two tables of each kind.
 */
export function clusterIn(clusters: ReadonlySet<number>, start: number, end: number, cs: number): boolean {
  const first = Math.floor(start / cs) * cs;
  if ((end - first) / cs <= clusters.size) {
    for (let c = first; c < end; c += cs) if (clusters.has(c)) return true;
    return false;
  }
  for (const c of clusters) if (c >= first && c < end) return true;
  return false;
}
