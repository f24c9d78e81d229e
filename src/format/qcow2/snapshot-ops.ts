import { Qcow2Error } from '../../errors.js';
import { viewOf } from '../../util/bytes.js';
import type { Qcow2State } from './qcow2-state.js';
import type { Qcow2Writer } from './qcow2-writer.js';
import type { Refcounts } from './refcounts.js';
import { encodeSnapshotTable, type SnapshotEntry } from './snapshot-table.js';
import { compressedClusters, decodeCompressed, entryOffset, isCompressed, MAX_HOST_OFFSET } from './table-entries.js';

const MAX_SNAPSHOTS = 65536;
const COPIED = 0x80000000;

/** Details of a snapshot to create; unset fields get qemu-img's values. */
export interface NewSnapshot {
  name: string;
  /** Defaults to the next free numeric id, as QEMU picks it. */
  id?: string;
  dateSec?: number;
  dateNsec?: number;
  vmClockNsec?: number;
}

/**
 * Internal snapshots: create, apply (revert to) and delete, with QEMU's refcount rules (every
 * cluster reachable from a snapshot's L1 counts once per table that reaches it) and COPIED
 * flags recomputed afterwards. Each operation runs under the metadata lock and writes its
 * commit point (the header or the active L1) only after what it points to is on disk.
 */
export class Qcow2Snapshots {
  readonly #s: Qcow2State;
  readonly #w: Qcow2Writer;

  constructor(state: Qcow2State, writer: Qcow2Writer) {
    this.#s = state;
    this.#w = writer;
  }

  #rc(): Refcounts {
    const rc = this.#s.refcounts;
    if (rc === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
    return rc;
  }

  /** A snapshot's L1 table, validated before it sizes anything. */
  async #readSnapshotL1(sn: SnapshotEntry): Promise<Uint8Array> {
    const s = this.#s;
    if (sn.l1Size > (32 << 20) / 8) throw new Qcow2Error('INVALID_IMAGE', 'Snapshot L1 table too large', { id: sn.id });
    if (sn.l1TableOffset % s.clusterSize !== 0 || sn.l1TableOffset + sn.l1Size * 8 > MAX_HOST_OFFSET) {
      throw new Qcow2Error('INVALID_IMAGE', 'Snapshot L1 table offset invalid', { id: sn.id });
    }
    const bytes = new Uint8Array(sn.l1Size * 8);
    if (sn.l1Size > 0) await s.storage.read(bytes, sn.l1TableOffset);
    return bytes;
  }

  #checkAllowed(): void {
    if (this.#s.meta.dataStorage !== this.#s.storage) {
      throw new Qcow2Error('UNSUPPORTED', 'Internal snapshots are not supported with an external data file', {});
    }
  }

  /** Take a snapshot of the current disk content. */
  async create(spec: NewSnapshot): Promise<SnapshotEntry> {
    this.#checkAllowed();
    const s = this.#s;
    const meta = s.meta;
    if (meta.snapshots.length >= MAX_SNAPSHOTS) throw new Qcow2Error('UNSUPPORTED', 'Too many snapshots', {});
    if (spec.id !== undefined && meta.snapshots.some((x) => x.id === spec.id)) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Snapshot with id '${spec.id}' already exists`, {});
    }
    await this.#w.beforeMetadataChange();
    return s.lock.run(async () => {
      await this.#w.flushLocked();
      const rc = this.#rc();
      const cs = s.clusterSize;
      // 1. A copy of the active L1 (COPIED flags included, as QEMU writes it).
      const l1Bytes = new Uint8Array(s.l1.buffer, s.l1.byteOffset, s.l1Entries * 8).slice();
      const l1Clusters = Math.max(1, Math.ceil(l1Bytes.byteLength / cs));
      const l1Offset = l1Bytes.byteLength === 0 ? 0 : await rc.allocate(l1Clusters);
      if (l1Offset !== 0) await s.storage.write(l1Bytes, l1Offset);
      // 2. Everything reachable gains a reference; COPIED flags drop where counts exceed one.
      await this.#adjustRefcounts(viewOf(l1Bytes), s.l1Entries, 1);
      await this.#fixCopiedFlags();
      const now = Date.now();
      const entry: SnapshotEntry = {
        l1TableOffset: l1Offset, l1Size: s.l1Entries,
        id: spec.id ?? String(nextId(meta.snapshots)), name: spec.name,
        dateSec: spec.dateSec ?? Math.floor(now / 1000), dateNsec: spec.dateNsec ?? (now % 1000) * 1e6,
        vmClockNsec: spec.vmClockNsec ?? 0, vmStateSize: 0, diskSize: meta.header.size, icount: 0,
        extraData: new Uint8Array(0),
      };
      await this.#writeTable([...meta.snapshots, entry]);
      this.#w.metadataMoved();
      return entry;
    });
  }

  /** Make the disk content that of snapshot `idOrName` again. */
  async apply(idOrName: string): Promise<void> {
    this.#checkAllowed();
    const s = this.#s;
    const sn = findSnapshot(s.meta.snapshots, idOrName);
    if (sn === undefined) throw new Qcow2Error('INVALID_ARGUMENT', `Can't find snapshot '${idOrName}'`, {});
    await this.#w.beforeMetadataChange();
    await s.lock.run(async () => {
      await this.#w.flushLocked();
      const cs = s.clusterSize;
      const snapL1 = await this.#readSnapshotL1(sn);
      // The snapshot's clusters gain the active L1's reference before the old ones lose it.
      await this.#adjustRefcounts(viewOf(snapL1), sn.l1Size, 1);
      const oldL1 = new Uint8Array(s.l1.buffer, s.l1.byteOffset, s.l1Entries * 8).slice();
      const oldEntries = s.l1Entries;
      const h = s.meta.header;
      if (sn.l1Size > oldEntries) {
        throw new Qcow2Error('UNSUPPORTED', 'Applying a snapshot with a larger L1 table than the active one is not supported yet', {});
      }
      void cs;
      const active = new Uint8Array(oldEntries * 8);
      active.set(snapL1);
      await this.#w.flushLocked();
      // Commit point: the active L1 on disk now names the snapshot's tables.
      await s.storage.write(active.subarray(0, oldEntries * 8), h.l1TableOffset);
      await s.storage.flush();
      s.l1 = viewOf(active);
      s.l1Dirty = false;
      s.l2.clear();
      if (sn.diskSize !== undefined && sn.diskSize !== h.size) {
        h.size = sn.diskSize;
        s.headerDirty = true;
      }
      await this.#adjustRefcounts(viewOf(oldL1), oldEntries, -1);
      await this.#fixCopiedFlags();
      this.#w.metadataMoved();
      await this.#w.flushLocked();
    });
  }

  /** Remove snapshot `idOrName` and release what only it referenced. */
  async delete(idOrName: string): Promise<void> {
    const s = this.#s;
    const sn = findSnapshot(s.meta.snapshots, idOrName);
    if (sn === undefined) throw new Qcow2Error('INVALID_ARGUMENT', `Can't find snapshot '${idOrName}'`, {});
    await this.#w.beforeMetadataChange();
    await s.lock.run(async () => {
      await this.#w.flushLocked();
      await this.#writeTable(s.meta.snapshots.filter((x) => x !== sn));
      const snapL1 = await this.#readSnapshotL1(sn);
      await this.#adjustRefcounts(viewOf(snapL1), sn.l1Size, -1);
      if (sn.l1Size > 0) await this.#rc().free(sn.l1TableOffset, Math.ceil((sn.l1Size * 8) / s.clusterSize));
      await this.#fixCopiedFlags();
      this.#w.metadataMoved();
      await this.#w.flushLocked();
    });
  }

  /**
   * Write `entries` as a new snapshot table (QEMU's qcow2_write_snapshots), e.g. to give v2
   * entries the extra data v3 requires. Call with the metadata lock held.
   */
  async rewriteTableLocked(entries: SnapshotEntry[]): Promise<void> {
    await this.#writeTable(entries);
    await this.#w.flushLocked();
  }

  /** Write a new snapshot table, switch the header to it, then free the old one. */
  async #writeTable(entries: SnapshotEntry[]): Promise<void> {
    const s = this.#s;
    const h = s.meta.header;
    const rc = this.#rc();
    const cs = s.clusterSize;
    const bytes = entries.length > 0 ? encodeSnapshotTable(entries) : new Uint8Array(0);
    const clusters = Math.ceil(bytes.byteLength / cs);
    const offset = clusters > 0 ? await rc.allocate(clusters) : 0;
    if (clusters > 0) await s.storage.write(bytes, offset);
    await this.#w.flushLocked();
    const oldOffset = h.snapshotsOffset;
    const oldClusters = s.meta.snapshots.length > 0 ? Math.ceil(encodeSnapshotTable(s.meta.snapshots).byteLength / cs) : 0;
    h.snapshotsOffset = offset;
    h.nbSnapshots = entries.length;
    await this.#w.writeHeaderLocked();
    await s.storage.flush();
    s.meta.snapshots = entries;
    if (oldClusters > 0 && oldOffset !== 0) await rc.free(oldOffset, oldClusters);
  }

  /** Add `delta` to the refcount of every L2 table and data cluster reachable from an L1 table. */
  async #adjustRefcounts(l1: DataView, entries: number, delta: 1 | -1): Promise<void> {
    const s = this.#s;
    const rc = this.#rc();
    const cs = s.clusterSize;
    const step = s.meta.extendedL2 ? 16 : 8;
    const change = (off: number, n: number): Promise<void> => (delta > 0 ? rc.addRef(off, n) : rc.free(off, n));
    for (let i = 0; i < entries; i++) {
      const l2Offset = entryOffset(l1.getUint32(i * 8), l1.getUint32(i * 8 + 4));
      if (l2Offset === 0) continue;
      if (l2Offset % cs !== 0 || l2Offset > MAX_HOST_OFFSET) throw new Qcow2Error('CORRUPT', `L2 table offset 0x${l2Offset.toString(16)} invalid`, {});
      const table = viewOf(await s.l2.get(l2Offset));
      for (let j = 0; j < s.meta.l2Entries; j++) {
        const hi = table.getUint32(j * step);
        const lo = table.getUint32(j * step + 4);
        if (isCompressed(hi)) {
          const [off, n] = compressedClusters(decodeCompressed(hi, lo, s.clusterBits), cs);
          await change(off, n);
          continue;
        }
        const off = entryOffset(hi, lo);
        if (off !== 0) {
          if (off % cs !== 0) throw new Qcow2Error('CORRUPT', `Cluster offset 0x${off.toString(16)} unaligned`, {});
          await change(off, 1);
        }
      }
      await change(l2Offset, 1);
    }
  }

  /** COPIED on the active L1 and its L2 entries exactly where the refcount is one. */
  async #fixCopiedFlags(): Promise<void> {
    const s = this.#s;
    const rc = this.#rc();
    const cs = s.clusterSize;
    const step = s.meta.extendedL2 ? 16 : 8;
    for (let i = 0; i < s.l1Entries; i++) {
      const hi = s.l1.getUint32(i * 8);
      const lo = s.l1.getUint32(i * 8 + 4);
      const l2Offset = entryOffset(hi, lo);
      if (l2Offset === 0) continue;
      if (l2Offset % cs !== 0 || l2Offset > MAX_HOST_OFFSET) throw new Qcow2Error('CORRUPT', `L2 table offset 0x${l2Offset.toString(16)} invalid`, {});
      const l2Copied = (await rc.get(l2Offset / cs)) === 1;
      const nhi = l2Copied ? (hi | COPIED) >>> 0 : (hi & ~COPIED) >>> 0;
      if (nhi !== hi) {
        s.l1.setUint32(i * 8, nhi);
        s.l1Dirty = true;
      }
      const bytes = await s.l2.get(l2Offset);
      const table = viewOf(bytes);
      let changed = false;
      for (let j = 0; j < s.meta.l2Entries; j++) {
        const ehi = table.getUint32(j * step);
        if (isCompressed(ehi)) continue;
        const off = entryOffset(ehi, table.getUint32(j * step + 4));
        if (off === 0 || off % cs !== 0) continue;
        const copied = (await rc.get(off / cs)) === 1;
        const next = copied ? (ehi | COPIED) >>> 0 : (ehi & ~COPIED) >>> 0;
        if (next !== ehi) {
          table.setUint32(j * step, next);
          changed = true;
        }
      }
      if (changed) s.l2.markDirty(l2Offset);
    }
  }
}

/** QEMU's find_new_snapshot_id: one more than the largest numeric id. */
function nextId(snapshots: readonly SnapshotEntry[]): number {
  let max = 0;
  for (const sn of snapshots) {
    const n = Number.parseInt(sn.id, 10);
    if (Number.isFinite(n) && n > max) max = n;
  }
  return max + 1;
}

/** Find a snapshot by id first, then by name, as QEMU does for `-l` and `snapshot -a`. */
export function findSnapshot(snapshots: readonly SnapshotEntry[], idOrName: string): SnapshotEntry | undefined {
  return snapshots.find((s) => s.id === idOrName) ?? snapshots.find((s) => s.name === idOrName);
}
