/**
 * One check (and repair) pass over a qcow2 image: QEMU's qcow2_co_check_locked. Reads the
 * snapshot table, checks and repairs refcounts, rewrites the snapshot table if it needed
 * repairs, and when a repairing pass leaves no corruption, clears the dirty and corrupt bits.
 */
import { Qcow2Error } from '../../errors.js';
import { hasBit, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, withBit } from '../../format/qcow2/features.js';
import type { CheckContext } from './check-context.js';
import type { CheckImage } from './check-image.js';
import { checkRefcounts } from './check-refcounts.js';
import { readSnapshotTableForCheck } from './check-snapshot-table.js';
import {
  addCheckResult, CheckAbort, emptyCheckResult, fixesAnything, type CheckReporter, type CheckResult, type FixMode,
} from './check-types.js';
import { OnDiskRefcounts } from './ondisk-refcounts.js';
import { DEFAULT_MAX_REFCOUNT_ARRAY_BYTES } from './refcount-array.js';
import { repairSnapshotTable } from './repair-snapshot-table.js';

/** The outcome of one pass: the counters, and why it stopped early if it did. */
export interface CheckPassOutcome {
  result: CheckResult;
  /** Set when the check could not complete (qemu-img: "Check failed: <text>"). */
  failure: CheckAbort | undefined;
}

export interface CheckPassOptions {
  fix: FixMode;
  reporter: CheckReporter;
  maxArrayBytes?: number;
}

/**
 * Run one pass on an image opened with CheckImage.open (writable when `fix` repairs anything).
 *
 * @example
 * ```ts
 * const { result, failure } = await runCheckPass(img, { fix: NO_FIX, reporter });
 * ```
 */
export async function runCheckPass(img: CheckImage, opts: CheckPassOptions): Promise<CheckPassOutcome> {
  const ctx: CheckContext = {
    img, reporter: opts.reporter, disk: new OnDiskRefcounts(img, opts.reporter), maxArrayBytes: opts.maxArrayBytes ?? DEFAULT_MAX_REFCOUNT_ARRAY_BYTES,
  };
  const fix = opts.fix;
  const result = emptyCheckResult();
  const snapshotRes = emptyCheckResult();
  const refcountRes = emptyCheckResult();
  try {
    await guard(snapshotRes, () => readSnapshotTableForCheck(ctx, snapshotRes, fix));
  } catch (e) {
    addCheckResult(result, snapshotRes, false);
    return failed(ctx, result, e);
  }
  try {
    await guard(refcountRes, () => checkRefcounts(ctx, refcountRes, fix));
  } catch (e) {
    addCheckResult(result, refcountRes, true);
    addCheckResult(result, snapshotRes, false);
    return failed(ctx, result, e);
  }
  addCheckResult(result, refcountRes, true);
  try {
    await guard(snapshotRes, () => repairSnapshotTable(ctx, snapshotRes, fix));
  } catch (e) {
    addCheckResult(result, snapshotRes, false);
    return failed(ctx, result, e);
  }
  addCheckResult(result, snapshotRes, false);
  await ctx.disk.flush();

  if (fixesAnything(fix) && result.checkErrors === 0 && result.corruptions === 0) {
    const bits = img.incompatibleFeatures;
    if (hasBit(bits, INCOMPAT_DIRTY) || hasBit(bits, INCOMPAT_CORRUPT)) {
      await img.writeIncompatibleFeatures(withBit(withBit(bits, INCOMPAT_DIRTY, false), INCOMPAT_CORRUPT, false));
    }
  }
  return { result, failure: undefined };
}

/**
 * Failures inside a step (storage errors, values this implementation cannot represent) end
 * the check like QEMU's -EIO: a typed result, never an escaping exception.
 */
async function guard(res: CheckResult, step: () => Promise<void>): Promise<void> {
  try {
    await step();
  } catch (e) {
    if (e instanceof CheckAbort) throw e;
    if (e instanceof Qcow2Error) {
      res.checkErrors++;
      throw new CheckAbort('EIO', e.message);
    }
    throw e;
  }
}

/** A pass that stopped early still writes back the refcount fixes it made (QEMU flushes at close). */
async function failed(ctx: CheckContext, result: CheckResult, e: unknown): Promise<CheckPassOutcome> {
  if (!(e instanceof CheckAbort)) throw e;
  await ctx.disk.flush().catch(() => undefined);
  return { result, failure: e };
}
