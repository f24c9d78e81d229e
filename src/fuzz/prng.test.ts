import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Prng } from './prng.js';

test('the same seed gives the same sequence, pinned across versions', () => {
  const a = new Prng(1);
  const b = new Prng(1);
  const seqA = Array.from({ length: 5 }, () => a.u32());
  assert.deepEqual(seqA, Array.from({ length: 5 }, () => b.u32()));
  // Pinned: a change here silently changes every fuzz case a seed names.
  assert.deepEqual(seqA, PINNED);
  const other = new Prng(2);
  assert.notDeepEqual(Array.from({ length: 5 }, () => other.u32()), seqA);
});

const PINNED = [2442144158, 3238099751, 3819917871, 2104621829, 2021136066];

test('int, range, chance, pick and weighted stay in bounds', () => {
  const r = new Prng(42);
  for (let i = 0; i < 2000; i++) {
    const n = r.int(10);
    assert.ok(Number.isInteger(n) && n >= 0 && n < 10);
    const big = r.int(2 ** 53);
    assert.ok(Number.isSafeInteger(big) && big >= 0);
    const v = r.range(-3, 3);
    assert.ok(v >= -3 && v <= 3);
  }
  assert.equal(r.int(1), 0);
  assert.equal(r.int(0), 0);
  assert.equal(r.chance(0), false);
  assert.equal(r.chance(1), true);
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) seen.add(r.pick(['a', 'b', 'c']));
  assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);
  for (let i = 0; i < 200; i++) assert.notEqual(r.weighted([['never', 0], ['always', 1]] as const), 'never');
  assert.throws(() => r.pick([]), RangeError);
  assert.equal(r.bytes(7).byteLength, 7);
});

test('fork is deterministic and independent of later draws of the parent', () => {
  const p1 = new Prng(9);
  const p2 = new Prng(9);
  const f1 = p1.fork();
  const f2 = p2.fork();
  p1.u32();
  assert.equal(f1.u32(), f2.u32());
});
