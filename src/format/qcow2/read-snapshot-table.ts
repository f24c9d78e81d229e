import type { Storage } from '../../storage/storage.js';
import { decodeSnapshotTable, snapshotTableExtent, type SnapshotEntry } from './snapshot-table.js';

const CHUNK = 64 * 1024;

/**
 * Read the snapshot table in growing pieces so that only the bytes actually used are held,
 * never more than QEMU's 64 MiB limit, however large the counts in the image claim to be.
 */
export async function readSnapshotTable(storage: Storage, offset: number, count: number, version: 2 | 3, clusterSize: number): Promise<SnapshotEntry[]> {
  if (count === 0) return [];
  let buf = new Uint8Array(0);
  for (;;) {
    const extent = snapshotTableExtent(buf, count);
    if (extent.complete) return decodeSnapshotTable(buf.subarray(0, extent.length), count, { version, clusterSize });
    const next = new Uint8Array(Math.max(extent.needed, Math.min(buf.byteLength * 2, buf.byteLength + (8 << 20)), CHUNK));
    next.set(buf);
    await storage.read(next.subarray(buf.byteLength), offset + buf.byteLength);
    buf = next;
  }
}
