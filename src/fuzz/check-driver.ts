/**
 * Finds the check/repair implementation (src/ops/check/check-qcow2.ts, written separately) and
 * adapts it to what the fuzz harness drives. Loaded dynamically so that the harness runs (and
 * skips the check steps) in a tree where the check does not exist yet.
 */
import type { Storage } from '../storage/storage.js';
import type { CheckDriver } from './fuzz-exec.js';

/** Memory the check may use for its refcount array in a fuzz case (its default is 1 GiB). */
const CHECK_ARRAY_BYTES = 256 << 20;

interface CheckModule {
  checkQcow2?: (storage: Storage, opts: { repair?: 'none' | 'leaks' | 'all'; maxArrayBytes?: number }) => Promise<{ exitCode: number }>;
}

/** The check module, if it has been written; undefined otherwise. */
export async function loadCheckDriver(): Promise<CheckDriver | undefined> {
  let mod: CheckModule;
  try {
    mod = (await import('../ops/check/check-qcow2.js' as string)) as CheckModule;
  } catch {
    return undefined;
  }
  const checkQcow2 = mod.checkQcow2;
  if (typeof checkQcow2 !== 'function') return undefined;
  return {
    async check(storage, repair) {
      const outcome = await checkQcow2(storage, { repair, maxArrayBytes: CHECK_ARRAY_BYTES });
      return { exitCode: outcome.exitCode };
    },
  };
}
