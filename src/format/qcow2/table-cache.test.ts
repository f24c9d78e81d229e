import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { TableCache } from './table-cache.js';

const T = 4096;

/** A storage of `count` tables, table i filled with byte i + 1. */
function tables(count: number): MemoryStorage {
  const bytes = new Uint8Array(count * T);
  for (let i = 0; i < count; i++) bytes.fill(i + 1, i * T, (i + 1) * T);
  return new MemoryStorage(bytes);
}

test('TableCache evicts clean tables past the budget, least recently used first', async () => {
  const cache = new TableCache(tables(4), T, 2 * T);
  await cache.get(0);
  await cache.get(T);
  cache.peek(0); // now T is the oldest
  await cache.get(2 * T);
  assert.equal(cache.has(T), false);
  assert.equal(cache.has(0), true);
  assert.equal(cache.has(2 * T), true);
});

test('with recycle, a table loaded after an eviction reuses the evicted memory and holds its own bytes', async () => {
  const cache = new TableCache(tables(8), T, 2 * T, { recycle: true });
  const seen = new Set<Uint8Array>();
  for (let i = 0; i < 8; i++) {
    const t = await cache.get(i * T);
    assert.ok(t.every((b) => b === i + 1), `table ${i}`);
    seen.add(t);
  }
  // Two tables in the budget, plus the one evicted while the next loads.
  assert.ok(seen.size <= 3, `${seen.size} buffers for 8 loads`);
});

test('without recycle, every load gets fresh memory (callers may keep tables)', async () => {
  const cache = new TableCache(tables(8), T, 2 * T);
  const kept: Uint8Array[] = [];
  for (let i = 0; i < 8; i++) kept.push(await cache.get(i * T));
  assert.equal(new Set(kept).size, 8);
  kept.forEach((t, i) => assert.ok(t.every((b) => b === i + 1), `table ${i} unchanged`));
});

test('recycled memory never comes from a dirty table', async () => {
  const cache = new TableCache(tables(4), T, 2 * T, { recycle: true });
  const dirty = cache.create(3 * T);
  dirty.fill(0xee);
  for (let i = 0; i < 3; i++) await cache.get(i * T);
  assert.ok(dirty.every((b) => b === 0xee));
  assert.equal(cache.dirtyTables()[0]![1], dirty);
});

/** A storage whose reads finish only when the test says so. */
class HeldStorage extends MemoryStorage {
  readonly held: (() => void)[] = [];
  override async read(dst: Uint8Array, offset: number): Promise<void> {
    await new Promise<void>((resolve) => this.held.push(resolve));
    return super.read(dst, offset);
  }
  releaseAll(): void {
    for (const r of this.held.splice(0)) r();
  }
}

test('use() hands a private copy to a callback whose recycled table was evicted before it ran', async () => {
  const bytes = new Uint8Array(5 * T);
  for (let i = 0; i < 5; i++) bytes.fill(i + 1, i * T, (i + 1) * T);
  const storage = new HeldStorage(bytes);
  const cache = new TableCache(storage, T, 2 * T, { recycle: true });
  let loaded: Uint8Array | undefined;
  let got: Uint8Array | undefined;
  const done = cache.use(0, (t) => (got = t));
  void (cache.get(0) as Promise<Uint8Array>).then((t) => (loaded = t));
  const others = [cache.get(T), cache.get(2 * T)];
  // Table 0 is inserted first, 1 and 2 right after, before use()'s callback runs: 0 is evicted.
  storage.releaseAll();
  await Promise.all(others);
  assert.equal(cache.has(0), false);
  assert.equal(got, undefined, 'the callback waits for a fresh read');
  // The evicted memory goes to the next load, which overwrites it.
  const next = cache.get(3 * T);
  storage.releaseAll();
  await next;
  storage.releaseAll();
  const copy = await done;
  assert.ok(loaded !== undefined);
  assert.notEqual(copy, loaded, 'a private copy');
  assert.ok(copy.every((b) => b === 1), 'with table 0 bytes');
  assert.equal(await next, loaded, 'the evicted memory was reused for table 3');
  assert.ok(loaded.every((b) => b === 4));
});

test('use() runs the callback at once on a hit and calls onMiss only on a miss', async () => {
  const cache = new TableCache(tables(2), T, 2 * T, { recycle: true });
  let misses = 0;
  assert.equal(await cache.use(T, (t) => t[0], () => misses++), 2);
  assert.equal(cache.use(T, (t) => t[0], () => misses++), 2);
  assert.equal(misses, 1);
});
