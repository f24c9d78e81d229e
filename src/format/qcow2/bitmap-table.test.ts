import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BITMAP_CLUSTER_ONES, BITMAP_CLUSTER_ZERO, bitmapDataClusters, decodeBitmapTable, encodeBitmapTable } from './bitmap-table.js';
import { Qcow2Error } from '../../errors.js';

function entry(hi: number, lo: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, hi);
  new DataView(b.buffer).setUint32(4, lo);
  return b;
}

test('round trip of zero, all-ones and data entries (offsets above 4 GiB too)', () => {
  const entries = [BITMAP_CLUSTER_ZERO, 0x50000, BITMAP_CLUSTER_ONES, 0x1234_0001_0000];
  const bytes = encodeBitmapTable(entries);
  assert.equal(bytes.length, 32);
  assert.deepEqual([...bytes.subarray(16, 24)], [0, 0, 0, 0, 0, 0, 0, 1]);
  assert.deepEqual([...bytes.subarray(24, 32)], [0, 0, 0x12, 0x34, 0, 1, 0, 0]);
  assert.deepEqual(decodeBitmapTable(bytes, 65536), entries);
  assert.deepEqual(bitmapDataClusters(entries), [0x50000, 0x1234_0001_0000]);
});

test('QEMU check_table_entry rules', () => {
  const bad = (hi: number, lo: number, re: RegExp): void =>
    assert.throws(() => decodeBitmapTable(entry(hi, lo), 65536), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_IMAGE' && re.test(e.message));
  bad(0x01000000, 0, /reserved/);
  bad(0, 0x2, /reserved/);
  bad(0, 0x100, /reserved/);
  bad(0, 0x50001, /all-ones/);
  bad(0, 0x10200, /aligned/);
  assert.deepEqual(decodeBitmapTable(entry(0, 0x10200), 512), [0x10200]);
  assert.throws(() => decodeBitmapTable(new Uint8Array(7), 512), Qcow2Error);
  assert.throws(() => encodeBitmapTable([0x10001]), Qcow2Error);
});
