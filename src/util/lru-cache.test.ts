import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LruCache } from './lru-cache.js';

test('evicts least recently used past the byte budget', async () => {
  const c = new LruCache<number, Uint8Array>(300, (b) => b.byteLength);
  for (const k of [1, 2, 3]) c.set(k, new Uint8Array(100));
  c.peek(1);
  c.set(4, new Uint8Array(100));
  assert.equal(c.peek(2), undefined);
  assert.ok(c.peek(1));
  assert.equal(c.bytes, 300);
});

test('concurrent loads share one call; failures are not cached', async () => {
  const c = new LruCache<string, number>(10, () => 1);
  let calls = 0;
  const load = async (): Promise<number> => {
    calls++;
    await new Promise((r) => setTimeout(r, 5));
    return 42;
  };
  const [a, b] = await Promise.all([c.get('k', load), c.get('k', load)]);
  assert.equal(a, 42);
  assert.equal(b, 42);
  assert.equal(calls, 1);
  await assert.rejects(Promise.resolve(c.get('bad', async () => { throw new Error('x'); })));
  assert.equal(await c.get('bad', async () => 7), 7);
});

test('keeps a single entry larger than the budget', () => {
  const c = new LruCache<number, Uint8Array>(10, (b) => b.byteLength);
  c.set(1, new Uint8Array(100));
  assert.ok(c.peek(1));
});
