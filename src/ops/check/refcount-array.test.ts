import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getRefcount } from '../../format/qcow2/refcount-codec.js';
import { CheckAbort } from './check-types.js';
import { RefcountArray } from './refcount-array.js';
import { allocClustersImrt } from './rebuild-refcounts.js';

describe('RefcountArray', () => {
  it('encodes refcount blocks the way the image stores them, for every width', () => {
    for (let order = 0; order <= 6; order++) {
      const a = new RefcountArray(order, 512, 100);
      const max = Math.min(a.max, 1000);
      const values = [1, max, 0, 1, max > 2 ? 2 : 1];
      values.forEach((v, i) => a.set(i * 3, v));
      const block = a.block(0);
      assert.equal(block.byteLength, 512);
      values.forEach((v, i) => assert.equal(getRefcount(block, i * 3, order), v, `order ${order} entry ${i * 3}`));
      assert.equal(getRefcount(block, 1, order), 0);
    }
  });

  it('grows, keeps counts, and reads zero past its size', () => {
    const a = new RefcountArray(4, 65536, 10);
    a.set(9, 7);
    a.resize(100000);
    assert.equal(a.size, 100000);
    assert.equal(a.get(9), 7);
    assert.equal(a.get(99999), 0);
    assert.equal(a.get(10 ** 9), 0);
  });

  it('fails with ENOMEM instead of allocating past its cap', () => {
    assert.throws(() => new RefcountArray(4, 65536, 1 << 20, 1 << 20), (e: unknown) => e instanceof CheckAbort && e.errno === 'ENOMEM');
    const a = new RefcountArray(4, 65536, 1000, 1 << 20);
    assert.throws(() => a.resize(2 ** 40), CheckAbort);
  });
});

describe('allocClustersImrt (QEMU first fit)', () => {
  it('takes the first run of free clusters and extends the array when none is big enough', () => {
    const a = new RefcountArray(4, 65536, 8);
    for (const c of [0, 1, 2, 4, 6, 7]) a.set(c, 1);
    const cursor = { first: 0 };
    assert.equal(allocClustersImrt(a, 1, cursor), 3 * 65536);
    assert.equal(cursor.first, 3);
    assert.equal(allocClustersImrt(a, 2, { first: 0 }), 8 * 65536, 'cluster 5 alone is too small');
    assert.equal(a.size, 10);
    assert.equal(a.get(8), 1);
    assert.equal(a.get(9), 1);
  });
});
