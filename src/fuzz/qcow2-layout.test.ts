import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Prng } from './prng.js';
import { parseLayout } from './qcow2-layout.js';
import { RICH_CLUSTER_BITS, richImage } from './rich-image.test.helper.js';

const CS = 2 ** RICH_CLUSTER_BITS;

test('finds every structure of a rich image', () => {
  const bytes = richImage();
  const l = parseLayout(bytes);
  assert.ok(l !== undefined);
  assert.equal(l.clusterSize, CS);
  assert.equal(l.version, 3);
  const kinds = (k: string) => l.tables.filter((t) => t.kind === k).map((t) => t.offset);
  assert.deepEqual(kinds('reftable'), [CS]);
  assert.deepEqual(kinds('refblock'), [2 * CS]);
  assert.deepEqual(kinds('l1'), [3 * CS]);
  assert.deepEqual(kinds('l2').sort((a, b) => a - b), [4 * CS, 5 * CS]);
  assert.equal(kinds('snapshot-l1').length, 1);
  assert.equal(kinds('bitmap-table').length, 1);
  assert.equal(l.dataClusters.length, 2);
  assert.equal(l.compressed.length, 1);
  assert.equal(l.compressed[0]!.entryOffset, 4 * CS + 2 * 8);
  assert.equal(l.snapshots.length, 1);
  assert.equal(l.bitmapEntries.length, 1);
  assert.ok(l.bitmapExt !== undefined);
  assert.deepEqual(l.extensions.map((e) => e.type), [0x23852875]);
  assert.ok(l.metadataClusters.includes(0) && l.metadataClusters.includes(3 * CS));
});

test('not qcow2: undefined; damaged qcow2: never throws', () => {
  assert.equal(parseLayout(new Uint8Array(4096)), undefined);
  assert.equal(parseLayout(new Uint8Array(10)), undefined);
  const base = richImage();
  const rng = new Prng(5);
  for (let i = 0; i < 500; i++) {
    const b = base.slice(0, rng.chance(0.2) ? rng.int(base.byteLength) : base.byteLength);
    for (let k = 0; k < 16; k++) b[rng.int(Math.min(b.byteLength, 6 * CS))] = rng.u32() & 0xff;
    if (b.byteLength >= 4) b.set([0x51, 0x46, 0x49, 0xfb], 0);
    parseLayout(b);
  }
});
