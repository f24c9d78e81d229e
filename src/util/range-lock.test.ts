import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RangeLock } from './range-lock.js';

test('overlapping ranges are granted in request order; disjoint ones at once', async () => {
  const locks = new RangeLock();
  const log: string[] = [];
  const rel1 = await locks.acquire(0, 3);
  const p2 = locks.acquire(3, 5).then((r) => { log.push('2'); return r; });
  const p3 = locks.acquire(4, 9).then((r) => { log.push('3'); return r; }); // waits for 2, which came first
  const rel4 = await locks.acquire(10, 12); // disjoint: granted while 1 is held
  log.push('4');
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(log, ['4']);
  rel1();
  const rel2 = await p2;
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(log, ['4', '2']);
  rel2();
  (await p3)();
  rel4();
  assert.deepEqual(log, ['4', '2', '3']);
});

test('tryAcquire grants only without overlap, and later requests wait for what it granted', async () => {
  const locks = new RangeLock();
  const rel1 = locks.tryAcquire(0, 3);
  assert.ok(rel1 !== undefined);
  assert.equal(locks.tryAcquire(3, 4), undefined);
  const rel2 = locks.tryAcquire(4, 6);
  assert.ok(rel2 !== undefined);
  let granted = false;
  const p3 = locks.acquire(2, 5).then((r) => {
    granted = true;
    return r;
  });
  assert.equal(locks.tryAcquire(7, 7) !== undefined, true); // disjoint from everything
  rel1();
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(granted, false); // 2 still holds 4..6
  rel2();
  (await p3)();
  assert.ok(locks.tryAcquire(0, 6) !== undefined);
});
