/**
 * Shrink the mutation list of a finding to what still reproduces it: drop whole mutations,
 * then single patches, then a resize, greedily, with a bounded number of re-executions.
 * A report then shows the one or two byte changes that matter instead of four random ones.
 */
import type { Mutation } from './mutation.js';

/**
 * Greedy minimisation. `reproduces` re-runs the case with a candidate list and says whether
 * the same finding happens.
 *
 * @example
 * ```ts
 * const small = await minimizeMutations(c.mutations, async (ms) => (await rerun(ms)).finding?.name === 'TypeError');
 * ```
 */
export async function minimizeMutations(
  mutations: readonly Mutation[],
  reproduces: (candidate: Mutation[]) => Promise<boolean>,
  maxRuns = 64,
): Promise<Mutation[]> {
  let best = mutations.map((m) => ({ ...m, patches: [...m.patches] }));
  let runs = 0;
  const attempt = async (candidate: Mutation[]): Promise<boolean> => {
    if (runs >= maxRuns) return false;
    runs++;
    if (await reproduces(candidate)) {
      best = candidate;
      return true;
    }
    return false;
  };
  // Whole mutations.
  for (let i = best.length - 1; i >= 0 && best.length > 1; i--) {
    await attempt(best.filter((_, j) => j !== i));
  }
  // Single patches and resizes inside the remaining mutations.
  for (let i = 0; i < best.length; i++) {
    const m = best[i]!;
    for (let p = m.patches.length - 1; p >= 0 && m.patches.length + (m.resize !== undefined ? 1 : 0) > 1; p--) {
      const cur = best[i]!;
      if (cur.patches.length <= p) continue;
      const smaller: Mutation = { ...cur, patches: cur.patches.filter((_, k) => k !== p) };
      await attempt(best.map((x, k) => (k === i ? smaller : x)));
    }
    const cur = best[i]!;
    if (cur.resize !== undefined && cur.patches.length > 0) {
      const { resize: _drop, ...rest } = cur;
      void _drop;
      await attempt(best.map((x, k) => (k === i ? rest : x)));
    }
  }
  return best;
}
