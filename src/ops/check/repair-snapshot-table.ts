/**
 * QEMU's qcow2_check_fix_snapshot_table: when the snapshot table check found problems and
 * `-r all` is given, write the (already trimmed) snapshot list as a new table the way QEMU 7.2
 * writes tables, point the header at it, then free the old table. New table first, header
 * second, free last: a crash in between leaks clusters, it never loses the table.
 */
import { viewOf, writeU64 } from '../../util/bytes.js';
import type { CheckContext } from './check-context.js';
import { HEADER_NB_SNAPSHOTS } from './check-image.js';
import { CheckAbort, type CheckResult, type FixMode } from './check-types.js';
import { RepairAllocator } from './repair-allocator.js';
import { guardRepairWrite } from './repair-overlap.js';
import { encodeSnapshotsLikeQemu } from './snapshot-entry.js';

const MAX_TABLE_BYTES = 64 * 1024 * 1024;

export async function repairSnapshotTable(ctx: CheckContext, res: CheckResult, fix: FixMode): Promise<void> {
  if (res.corruptions === 0 || !fix.errors) return;
  const img = ctx.img;
  try {
    const sns = img.snapshots;
    const bytes = encodeSnapshotsLikeQemu(sns.snapshots, Math.floor(img.header.size / 512) * 512);
    if (bytes.byteLength > MAX_TABLE_BYTES) throw new CheckAbort('EFBIG');
    const allocator = new RepairAllocator(ctx);
    const offset = bytes.byteLength > 0 ? await allocator.allocate(bytes.byteLength) : 0;
    if (bytes.byteLength > 0) {
      await guardRepairWrite(ctx, offset, bytes.byteLength, []);
      await img.storage.write(bytes, offset);
    }
    await img.storage.flush();
    const pointer = new Uint8Array(12);
    const v = viewOf(pointer);
    v.setUint32(0, sns.snapshots.length);
    writeU64(v, 4, offset);
    await img.storage.write(pointer, HEADER_NB_SNAPSHOTS);
    await img.storage.flush();
    await allocator.free(sns.snapshotsOffset, sns.snapshotsSize);
    img.snapshots = { nbSnapshots: sns.snapshots.length, snapshotsOffset: offset, snapshotsSize: bytes.byteLength, snapshots: sns.snapshots };
  } catch (e) {
    if (e instanceof CheckAbort) {
      res.checkErrors++;
      ctx.reporter.line(`ERROR failed to update snapshot table: ${e.errnoText}`);
    }
    throw e;
  }
  res.corruptionsFixed += res.corruptions;
  res.corruptions = 0;
}
