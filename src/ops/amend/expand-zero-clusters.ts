/**
 * QEMU's qcow2_expand_zero_clusters, for a downgrade to v2 (which has no zero flag): every
 * zero cluster in the active L2 tables and in every snapshot's L2 tables becomes a data
 * cluster full of zeros, or, when there is no backing file to show through, an unallocated
 * cluster. L2 tables shared between L1 tables are expanded once and stay shared (a new data
 * cluster gets one reference per table reference).
 */
import { Qcow2Error } from '../../errors.js';
import type { Qcow2State } from '../../format/qcow2/qcow2-state.js';
import type { Qcow2Writer } from '../../format/qcow2/qcow2-writer.js';
import type { Refcounts } from '../../format/qcow2/refcounts.js';
import { snapshotL1Problem } from '../../format/qcow2/snapshot-table.js';
import { encodeStandard, entryOffset, isCompressed, isZeroFlag, MAX_HOST_OFFSET } from '../../format/qcow2/table-entries.js';
import { viewOf } from '../../util/bytes.js';

/** Progress over all L1 entries visited (active and snapshots'). */
export type ExpandProgress = (visited: number, total: number) => void;

interface Walk {
  s: Qcow2State;
  w: Qcow2Writer;
  rc: Refcounts;
  hasBacking: boolean;
  visited: number;
  total: number;
  progress: ExpandProgress;
  zeros: Uint8Array;
}

/**
 * Expand zero clusters of an open, writable image without extended L2 entries. Takes the
 * metadata lock; everything is flushed when it returns.
 *
 * @example
 * ```ts
 * await expandZeroClusters(driver.state, driver.writer!, driver.backing !== undefined, () => {});
 * ```
 */
export async function expandZeroClusters(s: Qcow2State, w: Qcow2Writer, hasBacking: boolean, progress: ExpandProgress): Promise<void> {
  const rc = s.refcounts;
  if (rc === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
  if (s.meta.extendedL2) throw new Qcow2Error('UNSUPPORTED', 'Cannot expand zero clusters with extended L2 entries', {});
  await s.lock.run(async () => {
    await w.flushLocked();
    let total = s.l1Entries;
    for (const sn of s.meta.snapshots) total += sn.l1Size;
    const walk: Walk = { s, w, rc, hasBacking, visited: 0, total, progress, zeros: new Uint8Array(s.clusterSize) };
    await expandInL1(walk, s.l1, s.l1Entries, true);
    // Snapshot L1 tables may point at active L2 tables: write them and drop the cached copies.
    await w.flushLocked();
    s.l2.clear();
    for (const sn of s.meta.snapshots) {
      const problem = snapshotL1Problem(sn, s.clusterSize);
      if (problem !== undefined) throw new Qcow2Error('CORRUPT', problem, { snapshot: sn.id });
      const l1 = new Uint8Array(sn.l1Size * 8);
      if (sn.l1Size > 0) await s.storage.read(l1, sn.l1TableOffset);
      await expandInL1(walk, viewOf(l1), sn.l1Size, false);
    }
    await w.flushLocked();
  });
}

async function expandInL1(walk: Walk, l1: DataView, entries: number, active: boolean): Promise<void> {
  const { s, w } = walk;
  const cs = s.clusterSize;
  for (let i = 0; i < entries; i++) {
    const l2Offset = entryOffset(l1.getUint32(i * 8), l1.getUint32(i * 8 + 4));
    if (l2Offset !== 0) {
      if (l2Offset % cs !== 0 || l2Offset > MAX_HOST_OFFSET) {
        throw new Qcow2Error('CORRUPT', `L2 table offset 0x${l2Offset.toString(16)} unaligned (L1 index: 0x${i.toString(16)})`, { l1Index: i });
      }
      const l2Refcount = await walk.rc.get(l2Offset / cs);
      const bytes = active ? await s.l2.get(l2Offset) : new Uint8Array(cs);
      if (!active) await s.storage.read(bytes, l2Offset);
      const changed = await expandInL2(walk, viewOf(bytes), l2Refcount);
      if (changed && active) {
        s.l2.markDirty(l2Offset);
      } else if (changed) {
        // The zeroed data clusters and their refcounts must be durable before the table names them.
        await w.flushLocked();
        await s.storage.write(bytes, l2Offset);
        s.l2.forget(l2Offset);
      }
    }
    walk.visited++;
    walk.progress(walk.visited, walk.total);
  }
}

/** Expand the zero entries of one L2 table in place; true when it changed. */
async function expandInL2(walk: Walk, table: DataView, l2Refcount: number): Promise<boolean> {
  const { s, rc } = walk;
  const cs = s.clusterSize;
  let changed = false;
  for (let j = 0; j < s.meta.l2Entries; j++) {
    const hi = table.getUint32(j * 8);
    const lo = table.getUint32(j * 8 + 4);
    if (isCompressed(hi) || !isZeroFlag(lo)) continue;
    let offset = entryOffset(hi, lo);
    if (offset === 0 && !walk.hasBacking) {
      // Nothing below shows through: unallocated reads as zeros too.
      table.setUint32(j * 8, 0);
      table.setUint32(j * 8 + 4, 0);
      changed = true;
      continue;
    }
    if (offset % cs !== 0 || offset > MAX_HOST_OFFSET) {
      throw new Qcow2Error('CORRUPT', `Cluster allocation offset 0x${offset.toString(16)} unaligned`, { offset });
    }
    // A preallocated zero cluster is zeroed in place only when every reference to it comes
    // through this table; otherwise zeroing it would change other tables' data.
    const shared = offset !== 0 && (await rc.get(offset / cs)) > l2Refcount;
    if (offset === 0 || shared) {
      const fresh = await rc.allocate(1);
      for (let k = 1; k < l2Refcount; k++) await rc.addRef(fresh, 1);
      if (shared) for (let k = 0; k < l2Refcount; k++) await rc.free(offset, 1);
      offset = fresh;
    }
    if (s.storage.writeZeroes !== undefined) await s.storage.writeZeroes(offset, cs);
    else await s.storage.write(walk.zeros, offset);
    const [nhi, nlo] = encodeStandard(offset, l2Refcount === 1);
    table.setUint32(j * 8, nhi);
    table.setUint32(j * 8 + 4, nlo);
    changed = true;
  }
  return changed;
}
