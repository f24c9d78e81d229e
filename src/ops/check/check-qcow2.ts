/**
 * `qemu-img check` for a qcow2 image, as a library call: open in check mode, run a pass, and
 * when that pass repaired something run a second, read-only pass ("Double checking the fixed
 * image now...") whose counters are the answer, with the repair counts of the first.
 */
import type { Storage } from '../../storage/storage.js';
import { CheckImage } from './check-image.js';
import { runCheckPass } from './check-pass.js';
import { ReadCacheStorage } from './read-cache-storage.js';
import { CheckAbort, FIX_ALL, FIX_LEAKS, NO_FIX, SILENT_REPORTER, type CheckReporter, type CheckResult } from './check-types.js';

/** What to repair: nothing, leaked clusters only, or everything QEMU repairs. */
export type RepairMode = 'none' | 'leaks' | 'all';

export interface CheckQcow2Options {
  repair?: RepairMode;
  /** Per-problem messages (qemu-img prints them on stderr). */
  reporter?: CheckReporter;
  /** Memory cap for the in-memory refcount array (default 1 GiB). */
  maxArrayBytes?: number;
}

export interface CheckQcow2Outcome {
  /** The final counters; undefined when the check could not complete. */
  result: CheckResult | undefined;
  /** Repairs done by the first pass, when there were any (qemu-img prints a summary of them). */
  repaired: { leaks: number; corruptions: number } | undefined;
  /** Why the check could not complete. */
  failure: CheckAbort | undefined;
  /** qemu-img's exit status: 0 clean, 1 not completed, 2 corruptions, 3 leaks only. */
  exitCode: 0 | 1 | 2 | 3;
}

/**
 * Check (and with `repair`, repair) the qcow2 image in `storage`, which must be writable when
 * repairing. Throws Qcow2Error when the image cannot be opened at all (qemu-img: "Could not
 * open ...").
 *
 * @example
 * ```ts
 * const storage = await NodeFileStorage.open('disk.qcow2', { readOnly: false });
 * const { exitCode, result } = await checkQcow2(storage, { repair: 'all' });
 * if (exitCode === 0) console.log('clean, image ends at', result!.imageEndOffset);
 * ```
 */
export async function checkQcow2(storage: Storage, opts: CheckQcow2Options = {}): Promise<CheckQcow2Outcome> {
  const repair = opts.repair ?? 'none';
  const reporter = opts.reporter ?? SILENT_REPORTER;
  const img = await CheckImage.open(new ReadCacheStorage(storage), { writable: repair !== 'none' });
  if (repair !== 'none') await img.clearUnknownAutoclear();
  const pass = (fix: typeof NO_FIX) => runCheckPass(img, { fix, reporter, ...(opts.maxArrayBytes !== undefined ? { maxArrayBytes: opts.maxArrayBytes } : {}) });

  const first = await pass(repair === 'all' ? FIX_ALL : repair === 'leaks' ? FIX_LEAKS : NO_FIX);
  if (first.failure !== undefined) return { result: undefined, repaired: undefined, failure: first.failure, exitCode: 1 };
  let result = first.result;
  let repaired: CheckQcow2Outcome['repaired'];
  if (result.corruptionsFixed > 0 || result.leaksFixed > 0) {
    repaired = { leaks: result.leaksFixed, corruptions: result.corruptionsFixed };
    const second = await pass(NO_FIX);
    if (second.failure !== undefined) return { result: undefined, repaired, failure: second.failure, exitCode: 1 };
    result = { ...second.result, leaksFixed: repaired.leaks, corruptionsFixed: repaired.corruptions };
  }
  if (repair !== 'none') await storage.flush();
  const exitCode = result.checkErrors > 0 ? 1 : result.corruptions > 0 ? 2 : result.leaks > 0 ? 3 : 0;
  return { result, repaired, failure: undefined, exitCode };
}
