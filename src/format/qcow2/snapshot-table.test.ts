import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Qcow2Error } from '../../errors.js';
import {
  decodeSnapshotTable, encodeSnapshotTable, MAX_SNAPSHOT_TABLE_BYTES, snapshotEntryIncomplete, snapshotL1Problem,
  snapshotTableExtent, snapshotTableReadBound, type SnapshotEntry,
} from './snapshot-table.js';

const V3 = { version: 3, clusterSize: 65536 } as const;

function hex(s: string): Uint8Array {
  return Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));
}

/** Snapshot table written by qemu-img 7.2 (`snapshot -c snap1`, then `-c "second snap"`). */
const QEMU_TABLE = hex(
  '000000000004000000000001000100056b023aee15b918a0000000000000000000000000000000180000000000000000' +
  '0000000004000000000000000000000031736e61703100000000000000170000000000010001000b6b023aee1792ce28' +
  '00000000000000000000000000000018000000000000000000000000040000000000000000000000327365636f6e6420' +
  '736e6170',
);

function isInvalid(pattern: RegExp): (e: unknown) => boolean {
  return (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_IMAGE' && pattern.test(e.message);
}

/** One raw entry: fixed header + extra + id + name (no padding). */
function rawEntry(o: { id?: string; name?: string; extra?: Uint8Array; vmState32?: number; l1Hi?: number; extraSize?: number }): Uint8Array {
  const id = new TextEncoder().encode(o.id ?? '1');
  const name = new TextEncoder().encode(o.name ?? 'n');
  const extra = o.extra ?? new Uint8Array(0);
  const out = new Uint8Array(40 + extra.byteLength + id.byteLength + name.byteLength);
  const v = new DataView(out.buffer);
  v.setUint32(0, o.l1Hi ?? 0);
  v.setUint32(4, 0x30000);
  v.setUint32(8, 1);
  v.setUint16(12, id.byteLength);
  v.setUint16(14, name.byteLength);
  v.setUint32(16, 1700000000);
  v.setUint32(20, 123);
  v.setUint32(28, 5_000_000_000 % 2 ** 32);
  v.setUint32(24, Math.floor(5_000_000_000 / 2 ** 32));
  v.setUint32(32, o.vmState32 ?? 0);
  v.setUint32(36, o.extraSize ?? extra.byteLength);
  out.set(extra, 40);
  out.set(id, 40 + extra.byteLength);
  out.set(name, 40 + extra.byteLength + id.byteLength);
  return out;
}

test('decodes a table written by qemu-img and re-encodes it byte for byte', () => {
  const snaps = decodeSnapshotTable(QEMU_TABLE, 2, V3);
  assert.equal(snaps.length, 2);
  const [a, b] = snaps as [SnapshotEntry, SnapshotEntry];
  assert.equal(a.l1TableOffset, 0x40000);
  assert.equal(a.l1Size, 1);
  assert.equal(a.id, '1');
  assert.equal(a.name, 'snap1');
  assert.equal(a.dateSec, 1795308270);
  assert.equal(a.dateNsec, 364452000);
  assert.equal(a.vmClockNsec, 0);
  assert.equal(a.vmStateSize, 0);
  assert.equal(a.diskSize, 64 << 20);
  assert.equal(a.icount, 0);
  assert.equal(a.extraData.byteLength, 24);
  assert.equal(b.l1TableOffset, 0x170000);
  assert.equal(b.name, 'second snap');
  assert.equal(b.dateNsec, 395497000);
  assert.deepEqual(encodeSnapshotTable(snaps), QEMU_TABLE);
});

test('trailing bytes after the table are ignored', () => {
  const padded = new Uint8Array(QEMU_TABLE.byteLength + 100);
  padded.set(QEMU_TABLE);
  assert.deepEqual(decodeSnapshotTable(padded, 2, V3), decodeSnapshotTable(QEMU_TABLE, 2, V3));
});

test('v2 entry without extra data: 32-bit VM state size, no disk size or icount', () => {
  const raw = rawEntry({ vmState32: 4096, id: '7', name: 'old' });
  const [s] = decodeSnapshotTable(raw, 1, { version: 2, clusterSize: 65536 });
  assert.ok(s);
  assert.equal(s.vmStateSize, 4096);
  assert.equal(s.vmClockNsec, 5_000_000_000);
  assert.equal('diskSize' in s, false);
  assert.equal('icount' in s, false);
  assert.equal(s.extraData.byteLength, 0);
  assert.deepEqual(encodeSnapshotTable([s]), raw);
});

test('8 bytes of extra data: the large VM state size overrides the 32-bit field', () => {
  const extra = new Uint8Array(8);
  new DataView(extra.buffer).setUint32(0, 2); // 8 GiB
  const raw = rawEntry({ extra, vmState32: 0 });
  const [s] = decodeSnapshotTable(raw, 1, V3);
  assert.equal(s?.vmStateSize, 8 * 2 ** 30);
  assert.equal(s?.diskSize, undefined);
  assert.deepEqual(encodeSnapshotTable([s!]), raw);
});

test('unknown extra data is kept verbatim and known fields are still read', () => {
  const extra = new Uint8Array(42).fill(0xa5);
  const v = new DataView(extra.buffer);
  v.setUint32(0, 0); v.setUint32(4, 1000);
  v.setUint32(8, 0); v.setUint32(12, 1 << 30);
  v.setUint32(16, 0xffffffff); v.setUint32(20, 0xffffffff);
  const raw = rawEntry({ extra, vmState32: 1000, name: 'ünï 😀' });
  const [s] = decodeSnapshotTable(raw, 1, V3);
  assert.equal(s?.vmStateSize, 1000);
  assert.equal(s?.diskSize, 1 << 30);
  assert.equal(s?.icount, -1);
  assert.equal(s?.name, 'ünï 😀');
  assert.deepEqual(s?.extraData, extra);
  assert.deepEqual(encodeSnapshotTable([s!]), raw);
});

test('entries are 8-byte aligned with zero padding and the table ends after the last name', () => {
  const e1 = rawEntry({ id: '1', name: 'abc' }); // 44 bytes -> padded to 48
  const e2 = rawEntry({ id: '22', name: 'x' });
  const table = new Uint8Array(48 + e2.byteLength);
  table.set(e1);
  table.set(e2, 48);
  const snaps = decodeSnapshotTable(table, 2, V3);
  assert.deepEqual(snaps.map((s) => s.id), ['1', '22']);
  assert.deepEqual(encodeSnapshotTable(snaps), table);
  assert.deepEqual(snapshotTableExtent(table, 2), { complete: true, length: 48 + e2.byteLength });
});

test('encode fills in extra data for new entries as QEMU writes them', () => {
  const base = decodeSnapshotTable(QEMU_TABLE, 1, V3)[0]!;
  const fresh: SnapshotEntry = { ...base, extraData: new Uint8Array(0), vmStateSize: 5 * 2 ** 32, diskSize: 2 ** 40, icount: -1 };
  const bytes = encodeSnapshotTable([fresh]);
  const v = new DataView(bytes.buffer);
  assert.equal(v.getUint32(36), 24, 'extra data size');
  assert.equal(v.getUint32(32), 0, '32-bit VM state size is 0 when it does not fit');
  const [back] = decodeSnapshotTable(bytes, 1, V3);
  assert.equal(back?.vmStateSize, 5 * 2 ** 32);
  assert.equal(back?.diskSize, 2 ** 40);
  assert.equal(back?.icount, -1);

  const bigState: SnapshotEntry = { ...base, extraData: new Uint8Array(0), vmStateSize: 2 ** 33 };
  delete bigState.diskSize;
  delete bigState.icount;
  assert.equal(new DataView(encodeSnapshotTable([bigState]).buffer).getUint32(36), 8);
});

test('64-bit fields beyond 2^53 are refused', () => {
  assert.throws(() => decodeSnapshotTable(rawEntry({ l1Hi: 0x200000 }), 1, V3), isInvalid(/entry 0: l1_table_offset is too large/));
  const extra = new Uint8Array(24);
  new DataView(extra.buffer).setUint32(16, 0x80000000);
  assert.throws(() => decodeSnapshotTable(rawEntry({ extra }), 1, V3), isInvalid(/icount is too large/));
  assert.doesNotThrow(() => decodeSnapshotTable(rawEntry({ l1Hi: 0x1fffff }), 1, V3));
});

test('more than 1 KiB of extra data is refused with QEMU\'s message', () => {
  const ok = rawEntry({ extra: new Uint8Array(1024) });
  assert.equal(decodeSnapshotTable(ok, 1, V3)[0]?.extraData.byteLength, 1024);
  const bad = rawEntry({ extra: new Uint8Array(1025) });
  const second = new Uint8Array(((ok.byteLength + 7) & ~7) + bad.byteLength);
  second.set(ok);
  second.set(bad, (ok.byteLength + 7) & ~7);
  assert.throws(() => decodeSnapshotTable(second, 2, V3), (e: unknown) =>
    e instanceof Qcow2Error && e.message === 'Too much extra metadata in snapshot table entry 1' &&
    e.context['hint'] === 'You can force-remove this extra metadata with qemu-img check -r all');
});

test('a table beyond 64 MiB is refused however many entries remain', () => {
  // Entries of 40 + 1024 + 65535 + 65535 bytes; about 508 of them exceed 64 MiB.
  const entryLen = 40 + 1024 + 65535 + 65535;
  const stride = (entryLen + 7) & ~7;
  const count = 600;
  const bytes = new Uint8Array(MAX_SNAPSHOT_TABLE_BYTES + stride);
  const v = new DataView(bytes.buffer);
  for (let off = 0; off + 40 <= bytes.byteLength; off += stride) {
    v.setUint16(off + 12, 65535);
    v.setUint16(off + 14, 65535);
    v.setUint32(off + 36, 1024);
  }
  const overhanging = count - Math.floor(MAX_SNAPSHOT_TABLE_BYTES / stride);
  assert.throws(() => snapshotTableExtent(bytes, count), (e: unknown) =>
    e instanceof Qcow2Error && e.message === 'Snapshot table is too big' &&
    e.context['hint'] === `You can force-remove all ${overhanging} overhanging snapshots with qemu-img check -r all`);
});

test('read bound: at most 64 MiB, at most 65536 snapshots', () => {
  assert.equal(snapshotTableReadBound(0), 0);
  assert.equal(snapshotTableReadBound(1), 40 + 1024 + 65535 + 65535 + 7);
  assert.equal(snapshotTableReadBound(65536), MAX_SNAPSHOT_TABLE_BYTES);
  assert.throws(() => snapshotTableReadBound(65537), isInvalid(/^Snapshot table too large$/));
  assert.throws(() => decodeSnapshotTable(new Uint8Array(0), 65537, V3), isInvalid(/too large/));
});

test('extent says how many bytes are needed until the table is complete', () => {
  let have = 0;
  let steps = 0;
  for (;;) {
    const ext = snapshotTableExtent(QEMU_TABLE.subarray(0, have), 2);
    if (ext.complete) {
      assert.equal(ext.length, QEMU_TABLE.byteLength);
      break;
    }
    assert.ok(ext.needed > have && ext.needed <= QEMU_TABLE.byteLength);
    have = ext.needed;
    steps++;
  }
  // header 1, entry 1, header 2, entry 2
  assert.equal(steps, 4);
  assert.deepEqual(snapshotTableExtent(new Uint8Array(0), 0), { complete: true, length: 0 });
});

test('a short buffer is reported, not read past', () => {
  assert.throws(() => decodeSnapshotTable(QEMU_TABLE.subarray(0, 100), 2, V3), isInvalid(/Failed to read snapshot table/));
  assert.throws(() => decodeSnapshotTable(QEMU_TABLE, 3, V3), isInvalid(/Failed to read snapshot table/));
});

test('encode refuses values that cannot be stored', () => {
  const base = decodeSnapshotTable(QEMU_TABLE, 1, V3)[0]!;
  const bad = (e: Partial<SnapshotEntry>) => () => encodeSnapshotTable([{ ...base, ...e }]);
  const isArg = (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT';
  assert.throws(bad({ name: 'x'.repeat(65536) }), isArg);
  assert.throws(bad({ extraData: new Uint8Array(1025) }), isArg);
  assert.throws(bad({ vmClockNsec: 2 ** 53 }), isArg);
  assert.throws(bad({ dateSec: 2 ** 32 }), isArg);
  assert.throws(bad({ icount: -2 }), isArg);
});

test('check-time rules use the messages qemu-img 7.2 prints', () => {
  const base = decodeSnapshotTable(QEMU_TABLE, 1, V3)[0]!;
  assert.equal(snapshotEntryIncomplete(base, 0, 3), undefined);
  assert.equal(snapshotEntryIncomplete({ ...base, extraData: new Uint8Array(16) }, 0, 3), undefined);
  assert.equal(snapshotEntryIncomplete({ ...base, extraData: new Uint8Array(8) }, 1, 3), 'snapshot table entry 1 is incomplete');
  assert.equal(snapshotEntryIncomplete({ ...base, extraData: new Uint8Array(0) }, 2, 2), undefined);
  assert.equal(snapshotL1Problem(base, 65536), undefined);
  assert.equal(snapshotL1Problem({ ...base, id: '3', l1TableOffset: 0x40200, l1Size: 4194305 }, 65536),
    'ERROR snapshot 3 (snap1) l1_offset=0x40200: L1 table is not cluster aligned; snapshot table entry corrupted');
  assert.equal(snapshotL1Problem({ ...base, l1Size: 4194305 }, 65536),
    'ERROR snapshot 1 (snap1) l1_size=0x400001: L1 table is too large; snapshot table entry corrupted');
});
