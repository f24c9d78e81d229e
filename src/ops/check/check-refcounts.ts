/**
 * QEMU's qcow2_check_refcounts: count references, compare with the on-disk refcounts, fix
 * leaks and corruptions in place or rebuild the whole refcount structure, then check the
 * COPIED flags. Every step and message follows qemu-img 7.2, including its two-pass repair
 * (report first, then repair from the same counts).
 */
import type { CheckContext } from './check-context.js';
import { calculateRefcounts } from './calculate-refcounts.js';
import { checkOflagCopied } from './check-copied.js';
import type { RebuildFlag } from './check-refblocks.js';
import { compareRefcounts } from './compare-refcounts.js';
import {
  CheckAbort, emptyCheckResult, FIX_LEAKS, fixesAnything, NO_FIX, type CheckResult, type FixMode,
} from './check-types.js';
import { rebuildRefcountStructure } from './rebuild-refcounts.js';
import { RefcountArray } from './refcount-array.js';

const INT_MAX = 0x7fffffff;

export async function checkRefcounts(ctx: CheckContext, res: CheckResult, fix: FixMode): Promise<void> {
  const img = ctx.img;
  const cs = img.clusterSize;
  const nbClusters = Math.ceil((await img.refreshFileSize()) / cs);
  if (nbClusters > INT_MAX) {
    res.checkErrors++;
    throw new CheckAbort('EFBIG');
  }
  // QEMU: size_to_clusters(total_sectors * 512).
  res.totalClusters = Math.ceil((Math.floor(img.header.size / 512) * 512) / cs);
  let imrt: RefcountArray;
  try {
    imrt = new RefcountArray(img.refcountOrder, cs, nbClusters, ctx.maxArrayBytes);
  } catch (e) {
    if (e instanceof CheckAbort) res.checkErrors++;
    throw e;
  }
  const flag: RebuildFlag = { rebuild: false };
  await calculateRefcounts(ctx, res, fix, flag, imrt);

  // Without a rebuild, a repairing check compares again from these counters, fixing as it goes.
  const preCompare = { ...res };
  let highest = await compareRefcounts(ctx, res, NO_FIX, flag, imrt);

  if (flag.rebuild && fix.errors) {
    const old = { ...res };
    let freshLeaks = 0;
    ctx.reporter.line('Rebuilding refcount structure');
    try {
      await rebuildRefcountStructure(ctx, imrt);
    } catch (e) {
      if (e instanceof CheckAbort) {
        res.checkErrors++;
        ctx.reporter.error(`${e.message}: ${e.errnoText}`);
      }
      throw e;
    }
    res.corruptions = 0;
    res.leaks = 0;
    // The references are counted again against the new structure.
    flag.rebuild = false;
    imrt.clear();
    await calculateRefcounts(ctx, res, NO_FIX, flag, imrt);
    if (fix.leaks) {
      // The old structure is now leaked: free it. Only leaks made by the rebuild count here.
      const saved = { ...res };
      Object.assign(res, emptyCheckResult());
      highest = await compareRefcounts(ctx, res, FIX_LEAKS, flag, imrt);
      if (flag.rebuild) ctx.reporter.line('ERROR rebuilt refcount structure is still broken');
      freshLeaks = res.leaks;
      Object.assign(res, saved);
    }
    if (res.corruptions < old.corruptions) res.corruptionsFixed += old.corruptions - res.corruptions;
    if (res.leaks < old.leaks) res.leaksFixed += old.leaks - res.leaks;
    res.leaks += freshLeaks;
  } else if (fixesAnything(fix)) {
    if (flag.rebuild) {
      ctx.reporter.line('ERROR need to rebuild refcount structures');
      res.checkErrors++;
      throw new CheckAbort('EIO');
    }
    if (res.leaks > 0 || res.corruptions > 0) {
      Object.assign(res, preCompare);
      highest = await compareRefcounts(ctx, res, fix, flag, imrt);
    }
  }
  await checkOflagCopied(ctx, res, fix);
  res.imageEndOffset = (highest + 1) * cs;
}
