import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clusterIn } from './overlap-check.js';

/** xorshift PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

test('clusterIn finds a cluster a range touches, walking the range or the set', () => {
  const cs = 512;
  const next = rng(7);
  for (let trial = 0; trial < 2000; trial++) {
    // Sets from empty to larger than most ranges, so both walks are taken.
    const set = new Set<number>();
    const members = Math.floor(next() * 40);
    for (let i = 0; i < members; i++) set.add(Math.floor(next() * 100) * cs);
    const start = Math.floor(next() * 100 * cs);
    const end = start + 1 + Math.floor(next() * 30 * cs);
    // The model: every cluster whose first byte lies in [cluster of start, end).
    let want = false;
    for (let c = Math.floor(start / cs); c * cs < end; c++) if (set.has(c * cs)) want = true;
    assert.equal(clusterIn(set, start, end, cs), want, `set ${[...set]} range ${start}-${end}`);
  }
  assert.equal(clusterIn(new Set([1024]), 1023, 1024, cs), false, 'the end is exclusive');
  assert.equal(clusterIn(new Set([1024]), 1535, 1536, cs), true, 'a byte inside the cluster');
  assert.equal(clusterIn(new Set([2 ** 40]), 2 ** 40 - cs, 2 ** 40 + 1, cs), true, 'offsets past 2^32');
});
