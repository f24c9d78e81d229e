import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Qcow2Error } from '../../errors.js';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { Refcounts } from './refcounts.js';

const CS = 512;

/**
 * 512-byte clusters with 64-bit refcounts (64 clusters per refblock): cluster 0 a header,
 * cluster 1 the refcount table, cluster 2 the refblock covering clusters 0-63.
 */
async function tiny(patch: (view: DataView) => void = () => {}): Promise<Refcounts> {
  const bytes = new Uint8Array(3 * CS);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(CS, BigInt(2 * CS)); // reftable[0] -> refblock at cluster 2
  for (const c of [0, 1, 2]) view.setBigUint64(2 * CS + c * 8, 1n);
  patch(view);
  return Refcounts.open(new MemoryStorage(bytes), 9, 6, { offset: CS, clusters: 1 });
}

describe('Refcounts allocation lays clusters out as QEMU does', () => {
  test('a run reaching an uncovered range gets its refblock right after it', async () => {
    const rc = await tiny();
    assert.equal(await rc.allocate(70), 3 * CS); // clusters 3-72, into the second refblock's range
    for (const c of [3, 63, 64, 72, 73]) assert.equal(await rc.get(c), 1, `cluster ${c}`);
    assert.equal(await rc.get(74), 0);
    assert.equal(await rc.allocate(1), 74 * CS);
  });

  test('a refblock outside its own range is counted by the next one, never placed twice', async () => {
    const rc = await tiny();
    assert.equal(await rc.allocate(61), 3 * CS); // fills the first range exactly
    // Clusters 64-127 need refblock 1; it lands at 128 (range 2), whose refblock goes to 129.
    assert.equal(await rc.allocate(64), 64 * CS);
    assert.equal(await rc.get(128), 1);
    assert.equal(await rc.get(129), 1);
    assert.equal(await rc.allocate(1), 130 * CS);
  });
});

test('a refblock that cannot be addressed exactly is corrupt, not read', async () => {
  // Found by the fuzzer: the block would end just past 2^53.
  const rc = await tiny((view) => view.setBigUint64(CS + 8, 2n ** 53n - BigInt(CS)));
  assert.equal(await rc.allocate(61), 3 * CS);
  await assert.rejects(rc.allocate(1), (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT');
});

describe('Refcounts.allocateNow', () => {
  test('takes the clusters allocate would, while the refblocks are cached', async () => {
    const slow = await tiny();
    const fast = await tiny();
    await fast.get(3); // loads the refblock: allocateNow never reads
    for (const n of [1, 5, 2, 40]) assert.equal(fast.allocateNow(n), await slow.allocate(n), `run of ${n}`);
    await fast.free(4 * CS, 2); // a hole in the middle: found again
    await slow.free(4 * CS, 2);
    assert.equal(fast.allocateNow(1), await slow.allocate(1));
    for (const c of [3, 4, 5, 50, 51]) assert.equal(await fast.get(c), await slow.get(c), `cluster ${c}`);
  });

  test('declines, changing nothing, when it would need a refblock it does not have', async () => {
    const cold = await tiny();
    assert.equal(cold.allocateNow(1), undefined); // refblock 0 not loaded yet
    assert.equal(await cold.allocate(1), 3 * CS);
    const rc = await tiny();
    await rc.get(0);
    assert.equal(rc.allocateNow(61), 3 * CS); // the first refblock's range, exactly
    assert.equal(rc.allocateNow(1), undefined); // cluster 64 has no refblock yet
    assert.equal(await rc.get(64), 0);
    assert.equal(await rc.allocate(1), 64 * CS);
  });

  test('declines while an allocation is awaiting', async () => {
    const rc = await tiny();
    await rc.get(0);
    const pending = rc.allocate(70); // needs a new refblock: awaits
    assert.equal(rc.allocateNow(1), undefined);
    assert.equal(await pending, 3 * CS);
    assert.equal(rc.allocateNow(1), 74 * CS);
  });
});
