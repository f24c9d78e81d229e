/**
 * QEMU's calculate_refcounts: build the in-memory refcount array from everything that
 * references host clusters, in QEMU's order (header, active L1 with its L2 tables and data,
 * snapshot L1 tables, snapshot table, refcount table, encryption header, bitmaps, refcount
 * blocks). Message order matches qemu-img's.
 */
import type { CheckContext } from './check-context.js';
import { checkBitmapsRefcounts } from './check-bitmaps.js';
import { checkRefcountsL1 } from './check-l1-l2.js';
import { checkRefblocks, type RebuildFlag } from './check-refblocks.js';
import { countReferences } from './count-references.js';
import type { CheckResult, FixMode } from './check-types.js';
import type { RefcountArray } from './refcount-array.js';
import { cString, hex64, hex64Alt } from './snapshot-entry.js';

/** QEMU's QCOW_MAX_L1_SIZE / 8. */
const MAX_L1_ENTRIES = (32 * 1024 * 1024) / 8;

export async function calculateRefcounts(ctx: CheckContext, res: CheckResult, fix: FixMode, flag: RebuildFlag, imrt: RefcountArray): Promise<void> {
  const img = ctx.img;
  const cs = img.clusterSize;
  // QEMU asks for the file length at every count; only a rebuild writes before this point.
  await img.refreshFileSize();
  countReferences(ctx, res, imrt, 0, cs);
  await checkRefcountsL1(ctx, res, imrt, Math.floor(img.l1Offset / 2 ** 32), img.l1Offset >>> 0, img.l1Size, { fragInfo: true, fix, active: true });

  const sns = img.snapshots;
  if (img.hasDataFile && sns.nbSnapshots > 0) {
    ctx.reporter.line(`ERROR ${sns.nbSnapshots} snapshots in image with data file`);
    res.corruptions++;
  }
  for (const sn of sns.snapshots) {
    const label = `${cString(sn.id)} (${cString(sn.name)})`;
    if (sn.l1OffsetLo % cs !== 0) {
      ctx.reporter.line(`ERROR snapshot ${label} l1_offset=${hex64Alt(sn.l1OffsetHi, sn.l1OffsetLo)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
      res.corruptions++;
      continue;
    }
    if (sn.l1Size > MAX_L1_ENTRIES) {
      ctx.reporter.line(`ERROR snapshot ${label} l1_size=${hex64Alt(0, sn.l1Size)}: L1 table is too large; snapshot table entry corrupted`);
      res.corruptions++;
      continue;
    }
    await checkRefcountsL1(ctx, res, imrt, sn.l1OffsetHi, sn.l1OffsetLo, sn.l1Size, { fragInfo: false, fix, active: false });
  }
  countReferences(ctx, res, imrt, sns.snapshotsOffset, sns.snapshotsSize, hex64(Math.floor(sns.snapshotsOffset / 2 ** 32), sns.snapshotsOffset >>> 0));
  countReferences(ctx, res, imrt, img.reftableOffset, img.reftableEntries * 8);
  if (img.crypto !== undefined && img.crypto.length !== 0) countReferences(ctx, res, imrt, img.crypto.offset, img.crypto.length);
  await checkBitmapsRefcounts(ctx, res, imrt);
  await checkRefblocks(ctx, res, fix, flag, imrt);
}
