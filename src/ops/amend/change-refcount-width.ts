/**
 * refcount_bits=N (QEMU's qcow2_change_refcount_order): copy every refcount into a new
 * refcount structure of the new width, switch the header to it, free the old one.
 *
 * The new refcount blocks and table go into clusters that are free in the old structure
 * (the old structure stays in charge and untouched until the header switch), and count
 * themselves. A crash before the switch leaves the old structure valid; after it, at worst
 * the old structure's clusters leak. The result is clean under `qemu-img check`.
 */
import { Qcow2Error } from '../../errors.js';
import type { Qcow2State } from '../../format/qcow2/qcow2-state.js';
import type { Qcow2Writer } from '../../format/qcow2/qcow2-writer.js';
import { decodeReftableEntry, encodeReftableEntry, getRefcount, refblockEntries } from '../../format/qcow2/refcount-codec.js';
import { Refcounts } from '../../format/qcow2/refcounts.js';
import { allocClustersImrt } from '../check/rebuild-refcounts.js';
import { RefcountArray } from '../check/refcount-array.js';

/** QEMU's QCOW_MAX_REFTABLE_SIZE. */
const MAX_REFTABLE_BYTES = 8 << 20;

/** Progress of QEMU's reftable walks: (done, total) in reftable entries. */
export type WidthProgress = (done: number, total: number) => void;

/**
 * Change the refcount width of an open, writable v3 image to `2^order` bits. Takes the
 * metadata lock. Throws QEMU's message when a refcount does not fit the new width.
 *
 * @example
 * ```ts
 * await changeRefcountWidth(driver.state, driver.writer!, 0, () => {}); // 1-bit refcounts
 * ```
 */
export async function changeRefcountWidth(s: Qcow2State, w: Qcow2Writer, order: number, progress: WidthProgress): Promise<void> {
  const h = s.meta.header;
  if (s.refcounts === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
  if (!Number.isInteger(order) || order < 0 || order > 6) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid refcount order ${order}`, { order });
  if (order === h.refcountOrder) return;
  await s.lock.run(async () => {
    await w.flushLocked();
    const cs = s.clusterSize;
    const old = s.refcounts!.location;
    const oldTable = new Uint8Array(old.clusters * cs);
    await s.storage.read(oldTable, old.offset);
    const oldEntries = oldTable.byteLength / 8;
    const oldPer = refblockEntries(cs, h.refcountOrder);
    const walkReport = (walk: number, walks: number): void => {
      for (let i = 0; i < oldEntries; i++) progress(walk * oldEntries + i, walks * oldEntries);
      progress((walk + 1) * oldEntries, walks * oldEntries);
    };

    // Copy every refcount, refusing those that do not fit (in cluster order, as QEMU reports).
    let last = 0;
    const blocks: { index: number; offset: number }[] = [];
    for (let i = 0; i < oldEntries; i++) {
      const { offset } = decodeReftableEntry(oldTable, i);
      if (offset === 0) continue;
      if (offset % cs !== 0) throw new Qcow2Error('CORRUPT', 'Image is corrupt (unaligned refblock offset)', { index: i });
      blocks.push({ index: i, offset });
      last = (i + 1) * oldPer;
    }
    const imrt = new RefcountArray(order, cs, last);
    const block = new Uint8Array(cs);
    for (const b of blocks) {
      await s.storage.read(block, b.offset);
      for (let k = 0; k < oldPer; k++) {
        const value = getRefcount(block, k, h.refcountOrder);
        if (value === 0) continue;
        const cluster = b.index * oldPer + k;
        if (value > imrt.max) {
          throw new Qcow2Error('INVALID_ARGUMENT', `Cannot decrease refcount entry width to ${2 ** order} bits: Cluster at offset 0x${(cluster * cs).toString(16)} has a refcount of ${value}`, { cluster, value });
        }
        imrt.set(cluster, value);
      }
    }
    walkReport(0, 3);

    // Place the new blocks and table in free clusters until nothing more is needed.
    const per = imrt.entriesPerCluster;
    const table: number[] = [];
    let reftable = { offset: 0, clusters: 0 };
    for (let changed = true; changed;) {
      changed = false;
      for (let i = 0; i * per < imrt.size; i++) {
        if ((table[i] ?? 0) !== 0 || !blockUsed(imrt, i)) continue;
        table[i] = allocClustersImrt(imrt, 1, { first: 0 });
        changed = true;
      }
      const entries = Math.ceil(Math.max(table.length, 1) / (cs / 8)) * (cs / 8);
      if (entries * 8 > MAX_REFTABLE_BYTES) {
        throw new Qcow2Error('UNSUPPORTED', 'This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting');
      }
      const clusters = (entries * 8) / cs;
      if (clusters !== reftable.clusters) {
        for (let c = 0; c < reftable.clusters; c++) imrt.set(reftable.offset / cs + c, 0);
        reftable = { offset: allocClustersImrt(imrt, clusters, { first: 0 }), clusters };
        changed = true;
      }
    }
    walkReport(1, 3);

    // Write blocks and table; the header switch is the commit point.
    const rawTable = new Uint8Array(reftable.clusters * cs);
    table.forEach((offset, i) => {
      if (offset !== 0) encodeReftableEntry(rawTable, i, offset);
    });
    for (let i = 0; i < table.length; i++) if ((table[i] ?? 0) !== 0) await s.storage.write(imrt.block(i), table[i]!);
    await s.storage.write(rawTable, reftable.offset);
    await s.storage.flush();
    const before = { order: h.refcountOrder, offset: h.refcountTableOffset, clusters: h.refcountTableClusters };
    h.refcountOrder = order;
    h.refcountTableOffset = reftable.offset;
    h.refcountTableClusters = reftable.clusters;
    try {
      await w.writeHeaderLocked();
      await s.storage.flush();
    } catch (e) {
      h.refcountOrder = before.order;
      h.refcountTableOffset = before.offset;
      h.refcountTableClusters = before.clusters;
      throw e;
    }
    walkReport(2, 3);

    // The old structure is garbage now: free its clusters in the new one.
    const touched = new Set<number>();
    const release = (cluster: number): void => {
      imrt.set(cluster, Math.max(0, imrt.get(cluster) - 1));
      touched.add(Math.floor(cluster / per));
    };
    for (const b of blocks) release(b.offset / cs);
    for (let c = 0; c < old.clusters; c++) release(old.offset / cs + c);
    for (const i of touched) {
      const offset = table[i] ?? 0;
      if (offset !== 0) await s.storage.write(imrt.block(i), offset);
    }
    await s.storage.flush();
    s.refcounts = await Refcounts.open(s.storage, s.clusterBits, order, reftable);
    w.metadataMoved();
  });
}

function blockUsed(imrt: RefcountArray, index: number): boolean {
  const per = imrt.entriesPerCluster;
  const end = Math.min(imrt.size, (index + 1) * per);
  for (let c = index * per; c < end; c++) if (imrt.get(c) !== 0) return true;
  return false;
}
