import assert from 'node:assert/strict';
import { test } from 'node:test';
import { minimizeMutations } from './minimize.js';
import type { Mutation } from './mutation.js';

const m = (what: string, ats: number[], resize?: number): Mutation => ({
  kind: 'k', what, patches: ats.map((at) => ({ at, hex: '00' })), ...(resize !== undefined ? { resize } : {}),
});

test('keeps only the patch that reproduces the finding', async () => {
  const culprit = (ms: Mutation[]): boolean => ms.some((x) => x.patches.some((p) => p.at === 42));
  const out = await minimizeMutations([m('a', [1, 2]), m('b', [3, 42, 5], 100), m('c', [6])], async (c) => culprit(c));
  assert.deepEqual(out.map((x) => x.what), ['b']);
  assert.deepEqual(out[0]!.patches.map((p) => p.at), [42]);
  assert.equal(out[0]!.resize, undefined);
});

test('a finding that needs two mutations keeps both; the run budget is respected', async () => {
  const needsBoth = (ms: Mutation[]): boolean => ms.some((x) => x.what === 'a') && ms.some((x) => x.what === 'c');
  const out = await minimizeMutations([m('a', [1]), m('b', [2]), m('c', [3])], async (c) => needsBoth(c));
  assert.deepEqual(out.map((x) => x.what), ['a', 'c']);
  let runs = 0;
  await minimizeMutations([m('a', [1, 2, 3, 4]), m('b', [5, 6, 7, 8])], async () => {
    runs++;
    return false;
  }, 3);
  assert.equal(runs, 3);
});
