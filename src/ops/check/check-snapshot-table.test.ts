import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { viewOf } from '../../util/bytes.js';
import { CS, getRefcount, getU64, imageWithData, runCheck, setU32, withSnapshotTable } from './damaged-image.test.helper.js';

/** Known extra data of a v3 entry: vm_state_size_large, disk_size (64 MiB), icount (-1). */
function knownExtra(): Uint8Array {
  const b = new Uint8Array(24);
  const v = viewOf(b);
  v.setUint32(12, 64 << 20);
  b.fill(0xff, 16, 24);
  return b;
}

describe('snapshot table (iotest 261)', () => {
  it('reports v3 entries without the mandatory extra data and rewrites the table with -r all', async () => {
    const { img, offset } = withSnapshotTable(imageWithData(1), [
      { id: '1', name: 'sn0', extra: new Uint8Array(0) },
      { id: '2', name: 'sn1', extra: knownExtra() },
    ]);
    const before = await runCheck(img);
    assert.equal(before.exitCode, 2);
    assert.deepEqual(before.lines, ['ERROR snapshot table entry 0 is incomplete']);

    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.deepEqual(fixed.lines, ['Repairing snapshot table entry 0 is incomplete']);
    assert.deepEqual(fixed.repaired, { leaks: 0, corruptions: 1 });
    const table = getU64(fixed.bytes, 64);
    assert.equal(table, offset + CS, 'new table in the first free cluster, the old one freed after');
    assert.equal(getRefcount(fixed.bytes, offset / CS), 0);
    assert.equal(getRefcount(fixed.bytes, table / CS), 1);
    const v = viewOf(fixed.bytes);
    assert.equal(v.getUint32(table + 36), 24, 'extra data grown to the 24 bytes QEMU 7.2 writes');
    assert.equal(getU64(fixed.bytes, table + 48), 64 << 20, 'disk size defaults to the virtual size');
    assert.equal(v.getUint32(table + 56), 0xffffffff, 'icount defaults to -1');
    assert.equal(new TextDecoder().decode(fixed.bytes.subarray(table + 64, table + 68)), '1sn0');
  });

  it('needs -r all for more than 1 KiB of extra data, and truncates it to 1 KiB then', async () => {
    const extra = new Uint8Array(2000);
    extra.set(knownExtra());
    extra.fill(0x61, 24);
    const { img } = withSnapshotTable(imageWithData(1), [{ id: '1', name: 'big', extra }]);
    const before = await runCheck(img);
    assert.equal(before.exitCode, 1);
    assert.equal(before.failure?.errno, 'EFBIG');
    assert.deepEqual(before.errors, ['ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry 0']);
    assert.deepEqual(before.lines, ['You can force-remove this extra metadata with qemu-img check -r all']);

    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.deepEqual(fixed.lines, ['Discarding too much extra metadata in snapshot table entry 0 (2000 > 1024)']);
    const table = getU64(fixed.bytes, 64);
    assert.equal(viewOf(fixed.bytes).getUint32(table + 36), 1024);
    assert.equal(fixed.bytes[table + 40 + 1023], 0x61, 'unknown extra data kept up to 1 KiB');
  });

  it('refuses more than 65536 snapshots unless repairing', async () => {
    const img = imageWithData(1);
    setU32(img, 60, 65537);
    const r = await runCheck(img);
    assert.equal(r.exitCode, 1);
    assert.equal(r.failure?.errno, 'EFBIG');
    assert.deepEqual(r.errors, ['ERROR snapshot table too large']);
    assert.deepEqual(r.lines, ['You can force-remove all 1 overhanging snapshots with qemu-img check -r all']);
  });

  it('reports snapshot L1 tables that are unaligned or too large', async () => {
    const { img } = withSnapshotTable(imageWithData(1), [
      { id: '1', name: 'a', l1Offset: 3 * CS + 512, l1Size: 1, extra: knownExtra() },
      { id: '2', name: 'b', l1Offset: 3 * CS, l1Size: 0x500000, extra: knownExtra() },
    ]);
    const r = await runCheck(img);
    assert.equal(r.exitCode, 2);
    assert.deepEqual(r.lines, [
      'ERROR snapshot 1 (a) l1_offset=0x30200: L1 table is not cluster aligned; snapshot table entry corrupted',
      'ERROR snapshot 2 (b) l1_size=0x500000: L1 table is too large; snapshot table entry corrupted',
    ]);
  });
});

describe('snapshot table near 2^63 (fuzz findings)', () => {
  const at = (hi: number, lo: number, nb: number): Uint8Array => {
    const img = imageWithData(1);
    setU32(img, 60, nb);
    setU32(img, 64, hi);
    setU32(img, 68, lo);
    return img;
  };

  it('fails with EIO, as QEMU does, when a read would end past 2^63 - 2^30', async () => {
    // 1638 entries of 40 zero bytes end exactly at the limit; one more crosses it.
    const ok = await runCheck(at(0x7fffffff, 0xbfff0000, 1638));
    assert.equal(ok.failure, undefined);
    const bad = await runCheck(at(0x7fffffff, 0xbfff0000, 1639));
    assert.equal(bad.exitCode, 1);
    assert.equal(bad.failure?.errno, 'EIO');
    assert.deepEqual(bad.errors, ['ERROR failed to read the snapshot table: Failed to read snapshot table: Input/output error']);
  });

  it('finds an offset of exactly 2^63 invalid (no rounding to INT64_MAX)', async () => {
    const r = await runCheck(at(0x80000000, 0, 1));
    assert.equal(r.failure?.errno, 'EINVAL');
    assert.deepEqual(r.errors, ['ERROR snapshot table offset invalid']);
  });

  it('zeroes the old table when -r all frees it, as QEMU discards it', async () => {
    const { img, offset } = withSnapshotTable(imageWithData(1), [{ id: '1', name: 'sn0', extra: new Uint8Array(0) }]);
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.ok(fixed.bytes.subarray(offset, offset + CS).every((b) => b === 0));
  });
});
