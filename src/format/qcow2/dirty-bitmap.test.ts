import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DirtyBitmap, MAX_BITMAP_BITS } from './dirty-bitmap.js';
import { Qcow2Error } from '../../errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Reference model: a boolean per bit. */
function model(size: number, gbits: number): boolean[] {
  return new Array<boolean>(Math.ceil(size / 2 ** gbits)).fill(false);
}

function modelRanges(bits: boolean[], g: number, size: number): { offset: number; length: number }[] {
  const out: { offset: number; length: number }[] = [];
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    let j = i;
    while (j < bits.length && bits[j]) j++;
    out.push({ offset: i * g, length: Math.min(j * g, size) - i * g });
    i = j;
  }
  return out;
}

test('setRange sets exactly the bits a byte range touches', () => {
  const bm = new DirtyBitmap(1 * MiB, 16);
  bm.setRange(65535, 2);
  assert.deepEqual([...bm.ranges()], [{ offset: 0, length: 128 * KiB }]);
  assert.equal(bm.count(), 2);
  assert.ok(bm.isDirty(0) && bm.isDirty(65536) && !bm.isDirty(131072));
  bm.clear();
  assert.equal(bm.count(), 0);
  assert.deepEqual([...bm.ranges()], []);
});

test('ranges are clamped to the disk size and empty lengths are ignored', () => {
  const bm = new DirtyBitmap(100_000, 16);
  bm.setRange(0, 0);
  assert.equal(bm.count(), 0);
  bm.setRange(90_000, 1 << 30);
  assert.deepEqual([...bm.ranges()], [{ offset: 65536, length: 100_000 - 65536 }]);
  bm.setRange(200_000, 10);
  assert.equal(bm.count(), 1);
});

test('random ranges match a per-bit model (granularity 512, unaligned size)', () => {
  const size = 3 * MiB + 512 * 7;
  const g = 9;
  const bm = new DirtyBitmap(size, g);
  const ref = model(size, g);
  let x = 12345;
  const rnd = (n: number): number => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % n;
  };
  for (let k = 0; k < 300; k++) {
    const off = rnd(size);
    const len = 1 + rnd(k % 10 === 0 ? 200 * KiB : 3000);
    bm.setRange(off, len);
    const end = Math.min(size, off + len);
    for (let b = Math.floor(off / 512); b < Math.ceil(end / 512); b++) ref[b] = true;
  }
  assert.deepEqual([...bm.ranges()], modelRanges(ref, 512, size));
  assert.equal(bm.count(), ref.filter(Boolean).length);
});

test('merge: same granularity ORs, different granularity dirties every touched bit', () => {
  const a = new DirtyBitmap(4 * MiB, 16);
  const b = new DirtyBitmap(4 * MiB, 16);
  a.setRange(0, 1);
  b.setRange(MiB, 1);
  a.merge(b);
  assert.deepEqual([...a.ranges()], [{ offset: 0, length: 65536 }, { offset: MiB, length: 65536 }]);

  const fine = new DirtyBitmap(4 * MiB, 9);
  fine.setRange(3 * MiB + 100, 10);
  const coarse = new DirtyBitmap(4 * MiB, 20);
  coarse.merge(fine);
  assert.deepEqual([...coarse.ranges()], [{ offset: 3 * MiB, length: MiB }]);
  fine.merge(coarse);
  assert.deepEqual([...fine.ranges()], [{ offset: 3 * MiB, length: MiB }]);

  assert.throws(() => a.merge(new DirtyBitmap(8 * MiB, 16)), /different sizes \(destination size is 4194304, source size is 8388608\)/);
});

test('resize keeps bits, clears the new area and drops bits past a new end', () => {
  const bm = new DirtyBitmap(MiB, 12);
  bm.setRange(MiB - 4096, 4096);
  bm.resize(2 * MiB);
  assert.deepEqual([...bm.ranges()], [{ offset: MiB - 4096, length: 4096 }]);
  bm.setRange(0, 2 * MiB);
  bm.resize(MiB - 4096 + 1);
  assert.deepEqual([...bm.ranges()], [{ offset: 0, length: MiB - 4096 + 1 }]);
  assert.equal(bm.count(), 256);
  bm.resize(2 * MiB);
  assert.equal(bm.count(), 256, 'bits past the shrunk end stay clear after growing again');
});

test('cluster serialisation: LSB-first bytes, zero/ones/mixed, padded tail', () => {
  const cs = 512;
  // 2 clusters of bitmap data cover 2 * 512 * 8 bits; the disk needs 1.5 clusters.
  const size = 512 * 8 * 512 * 1.5;
  const bm = new DirtyBitmap(size, 9);
  assert.equal(DirtyBitmap.tableSizeFor(size, 9, cs), 2);
  assert.equal(bm.clusterState(0, cs), 'zero');
  bm.setRange(0, 512 * 3); // bits 0..2
  assert.equal(bm.clusterBytes(0, cs)[0], 0b111);
  assert.equal(bm.clusterState(0, cs), 'mixed');
  bm.setRange(0, 512 * 8 * 512); // the whole first cluster
  assert.equal(bm.clusterState(0, cs), 'ones');
  bm.setRange(512 * 8 * 512, size);
  // The last cluster is only half used: never 'ones', and its tail bytes stay zero.
  assert.equal(bm.clusterState(1, cs), 'mixed');
  const last = bm.clusterBytes(1, cs);
  assert.equal(last.length, cs);
  assert.ok(last.subarray(0, 256).every((b) => b === 0xff));
  assert.ok(last.subarray(256).every((b) => b === 0));
});

test('loadCluster and fillCluster round-trip and never set bits past the disk', () => {
  const cs = 512;
  const size = 10 * 512 + 1; // 11 bits
  const bm = new DirtyBitmap(size, 9);
  const raw = new Uint8Array(cs).fill(0xff);
  bm.loadCluster(0, cs, raw);
  assert.equal(bm.count(), 11);
  assert.deepEqual([...bm.ranges()], [{ offset: 0, length: size }]);
  const other = new DirtyBitmap(size, 9);
  other.fillCluster(0, cs);
  assert.deepEqual(other.bytes, bm.bytes);
  assert.equal(other.bytes.length, 2);
  assert.equal(other.bytes[1], 0b111);
});

test('size limit: more than 2^32 bits is refused before allocating', () => {
  assert.throws(() => new DirtyBitmap((MAX_BITMAP_BITS + 1) * 512, 9), (e: unknown) => e instanceof Qcow2Error && /Use larger granularity/.test(e.message));
  assert.throws(() => new DirtyBitmap(-1, 9), Qcow2Error);
  assert.equal(DirtyBitmap.bitsFor(MAX_BITMAP_BITS * 512, 9), MAX_BITMAP_BITS);
});

test('bit indexes beyond 2^31 work (no 32-bit bitwise overflow)', () => {
  const size = 2 ** 31 + 64; // granularity 1: one bit per byte, 256 MiB of bits
  const bm = new DirtyBitmap(size, 0);
  bm.setRange(2 ** 31 - 3, 20);
  bm.setRange(2 ** 31 + 40, 5);
  assert.deepEqual([...bm.ranges()], [{ offset: 2 ** 31 - 3, length: 20 }, { offset: 2 ** 31 + 40, length: 5 }]);
  assert.ok(bm.isDirty(2 ** 31 + 44) && !bm.isDirty(2 ** 31 + 45));
  assert.equal(bm.count(), 25);
});
