import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AmendProgress, amendPercent } from './amend-progress.js';

test('one operation reports its own work', () => {
  const seen: [number, number][] = [];
  const p = new AmendProgress(1, (o, t) => seen.push([o, t]));
  p.operation('upgrade');
  p.report(0, 2);
  p.report(1, 2);
  p.report(2, 2);
  assert.deepEqual(seen, [[0, 2], [1, 2], [2, 2]]);
});

test('two operations: the second is projected from the first, then added after it', () => {
  const seen: [number, number][] = [];
  const p = new AmendProgress(2, (o, t) => seen.push([o, t]));
  p.operation('upgrade');
  p.report(1, 2);
  p.report(2, 2);
  p.operation('downgrade');
  p.report(5, 10);
  assert.deepEqual(seen, [[1, 4], [2, 4], [7, 12]]);
});

test('percentages in single precision, as qemu-img computes them', () => {
  assert.equal(amendPercent(1, 2), 50);
  assert.equal(amendPercent(1, 3), Math.fround(Math.fround(100) / 3));
});
