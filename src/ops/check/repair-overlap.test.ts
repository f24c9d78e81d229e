import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClusterRuns } from './repair-overlap.js';

/** The same question answered by a plain scan, as the index must answer it. */
function scan(cs: number, ranges: number[][], from: number, to: number): boolean {
  return ranges.some(([at, bytes]) => bytes! > 0 && Math.floor(at! / cs) < to && Math.floor((at! + bytes! - 1) / cs) >= from);
}

describe('ClusterRuns', () => {
  it('finds a structure touching any cluster of the range, unaligned ones included', () => {
    const cs = 512;
    const ranges = [[1024, 512], [4096 + 200, 512], [10240, 4096], [0, 0], [2048, 8]];
    const runs = new ClusterRuns(cs, Float64Array.from(ranges.flat()));
    assert.equal(runs.hits(2, 3), true); // [1024, 512) is cluster 2
    assert.equal(runs.hits(3, 4), false);
    assert.equal(runs.hits(4, 5), true); // [2048, 8)
    assert.equal(runs.hits(9, 10), true); // 4296 + 511 reaches cluster 9
    assert.equal(runs.hits(10, 20), false); // [10240, 4096) is clusters 20..27
    assert.equal(runs.hits(10, 21), true);
    assert.equal(runs.hits(28, 1000), false);
    assert.equal(runs.hits(0, 1), false); // empty ranges count for nothing
  });

  it('agrees with a full scan on random structures', () => {
    let s = 12345;
    const rnd = (n: number): number => {
      s = (s * 1103515245 + 12345) % 2 ** 31;
      return s % n;
    };
    const cs = 65536;
    for (let round = 0; round < 50; round++) {
      const ranges = Array.from({ length: 1 + rnd(40) }, () => [rnd(200) * cs + (rnd(2) === 0 ? 0 : rnd(cs)), rnd(3) * cs + rnd(100)]);
      const runs = new ClusterRuns(cs, Float64Array.from(ranges.flat()));
      for (let q = 0; q < 100; q++) {
        const from = rnd(220);
        const to = from + 1 + rnd(4);
        assert.equal(runs.hits(from, to), scan(cs, ranges, from, to), `round ${round} [${from}, ${to})`);
      }
    }
  });
});
