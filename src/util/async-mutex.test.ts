import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AsyncMutex } from './async-mutex.js';

test('runs holders one at a time in order, even when one fails', async () => {
  const m = new AsyncMutex();
  const log: string[] = [];
  const job = (name: string, ms: number, fail = false) => m.run(async () => {
    log.push(`start ${name}`);
    await new Promise((r) => setTimeout(r, ms));
    log.push(`end ${name}`);
    if (fail) throw new Error(name);
    return name;
  });
  const results = await Promise.allSettled([job('a', 10), job('b', 1, true), job('c', 1)]);
  assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  assert.equal(results[1]!.status, 'rejected');
  assert.deepEqual(results[2], { status: 'fulfilled', value: 'c' });
});

test('idle only while no holder runs or waits, failed holders included', async () => {
  const m = new AsyncMutex();
  assert.equal(m.idle, true);
  let open!: () => void;
  const first = m.run(() => new Promise<void>((r) => (open = r)));
  const second = m.run(async () => {
    assert.equal(m.idle, false);
    throw new Error('second');
  });
  assert.equal(m.idle, false);
  await Promise.resolve();
  open();
  await first;
  await assert.rejects(second, /second/);
  assert.equal(m.idle, true);
});
