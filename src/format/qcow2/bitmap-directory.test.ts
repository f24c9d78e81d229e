import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Qcow2Error } from '../../errors.js';
import {
  bitmapDirectorySize, decodeBitmapDirectory, decodeBitmapsExtension, encodeBitmapDirectory, encodeBitmapsExtension,
  MAX_BITMAP_DIRECTORY_SIZE, type BitmapDirectoryEntry,
} from './bitmap-directory.js';

function hex(s: string): Uint8Array {
  return Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));
}

/**
 * Written by qemu-img 7.2 on a 64 MiB image: `bitmap --add bm0`, `--add -g 1M bm1`,
 * `--add --disable bm2`.
 */
const QEMU_EXTENSION = hex('0000000300000000000000000000006000000000001e0000');
const QEMU_DIRECTORY = hex(
  '000000000005000000000001000000020110000300000000626d300000000000' +
  '000000000019000000000001000000020114000300000000626d310000000000' +
  '00000000001d000000000001000000000110000300000000626d320000000000',
);
const OPTS = { nbBitmaps: 3, clusterSize: 65536, diskSize: 64 << 20 };

function isInvalid(message: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_IMAGE' && e.message === message;
}

function entry(o: Partial<BitmapDirectoryEntry> = {}): BitmapDirectoryEntry {
  return {
    name: 'b', granularityBits: 16, flags: { inUse: false, auto: true }, type: 1, tableOffset: 0x50000, tableSize: 1,
    extraData: new Uint8Array(0), ...o,
  };
}

/** Patch one field of the first directory entry of a copy of `dir`. */
function patched(dir: Uint8Array, at: number, set: (v: DataView) => void): Uint8Array {
  const copy = dir.slice();
  set(new DataView(copy.buffer, at));
  return copy;
}

test('decodes the extension and directory qemu-img wrote, and re-encodes them byte for byte', () => {
  const ext = decodeBitmapsExtension(QEMU_EXTENSION, 65536);
  assert.deepEqual(ext, { nbBitmaps: 3, directorySize: 96, directoryOffset: 0x1e0000 });
  assert.deepEqual(encodeBitmapsExtension(ext), QEMU_EXTENSION);
  const bitmaps = decodeBitmapDirectory(QEMU_DIRECTORY, OPTS);
  assert.deepEqual(bitmaps.map((b) => [b.name, b.granularityBits, b.flags.auto, b.flags.inUse, b.tableOffset, b.tableSize, b.type]), [
    ['bm0', 16, true, false, 0x50000, 1, 1],
    ['bm1', 20, true, false, 0x190000, 1, 1],
    ['bm2', 16, false, false, 0x1d0000, 1, 1],
  ]);
  assert.equal(bitmapDirectorySize(bitmaps), 96);
  assert.deepEqual(encodeBitmapDirectory(bitmaps), QEMU_DIRECTORY);
});

test('extension rules and messages follow QEMU', () => {
  const ext = (f: (v: DataView) => void): Uint8Array => patched(QEMU_EXTENSION, 0, f);
  assert.throws(() => decodeBitmapsExtension(new Uint8Array(16), 65536), isInvalid('bitmaps_ext: Invalid extension length'));
  assert.throws(() => decodeBitmapsExtension(ext((v) => v.setUint32(4, 1)), 65536), isInvalid('bitmaps_ext: Reserved field is not zero'));
  assert.throws(() => decodeBitmapsExtension(ext((v) => v.setUint32(0, 65536)), 65536),
    isInvalid('bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535'));
  assert.throws(() => decodeBitmapsExtension(ext((v) => v.setUint32(0, 0)), 65536), isInvalid('found bitmaps extension with zero bitmaps'));
  assert.throws(() => decodeBitmapsExtension(ext((v) => v.setUint32(20, 0x1e0200)), 65536), isInvalid('bitmaps_ext: invalid bitmap directory offset'));
  assert.doesNotThrow(() => decodeBitmapsExtension(ext((v) => v.setUint32(20, 0x1e0200)), 512));
  assert.throws(() => decodeBitmapsExtension(ext((v) => v.setUint32(12, MAX_BITMAP_DIRECTORY_SIZE + 1)), 65536),
    isInvalid('bitmaps_ext: bitmap directory size (67107841) exceeds the maximum supported size (67107840)'));
  assert.throws(() => decodeBitmapsExtension(ext((v) => v.setUint32(8, 1)), 65536),
    isInvalid('bitmaps_ext: bitmap directory size (4294967392) exceeds the maximum supported size (67107840)'));
});

test('directory size and entry count must agree with the extension', () => {
  assert.throws(() => decodeBitmapDirectory(new Uint8Array(0), OPTS), isInvalid('Requested bitmap directory size is zero'));
  assert.throws(() => decodeBitmapDirectory(QEMU_DIRECTORY, { ...OPTS, nbBitmaps: 2 }), isInvalid('More bitmaps found than specified in header extension'));
  assert.throws(() => decodeBitmapDirectory(QEMU_DIRECTORY, { ...OPTS, nbBitmaps: 4 }), isInvalid('Less bitmaps found than specified in header extension'));
  assert.throws(() => decodeBitmapDirectory(QEMU_DIRECTORY.subarray(0, 90), OPTS), isInvalid('Broken bitmap directory'));
  assert.throws(() => decodeBitmapDirectory(QEMU_DIRECTORY.subarray(0, 70), OPTS), isInvalid('Broken bitmap directory'));
  // A name running past the end of the directory.
  assert.throws(() => decodeBitmapDirectory(patched(QEMU_DIRECTORY, 64, (v) => v.setUint16(18, 9)), OPTS), isInvalid('Broken bitmap directory'));
});

test('extra data is refused as unsupported, before the other entry checks', () => {
  const withExtra = patched(QEMU_DIRECTORY, 0, (v) => { v.setUint32(20, 5); v.setUint16(18, 3); v.setUint8(17, 3); });
  assert.throws(() => decodeBitmapDirectory(withExtra, OPTS), (e: unknown) =>
    e instanceof Qcow2Error && e.code === 'UNSUPPORTED' && e.message === 'Bitmap extra data is not supported');
});

test('check_dir_entry rules', () => {
  const bad = (at: number, f: (v: DataView) => void, name: string): void => {
    assert.throws(() => decodeBitmapDirectory(patched(QEMU_DIRECTORY, at, f), OPTS), isInvalid(`Bitmap '${name}' doesn't satisfy the constraints`));
  };
  bad(0, (v) => v.setUint8(17, 8), 'bm0'); // granularity below 512 bytes
  bad(0, (v) => v.setUint8(17, 32), 'bm0');
  bad(32, (v) => v.setUint32(12, 7), 'bm1'); // reserved flag bit 2
  bad(32, (v) => v.setUint8(16, 2), 'bm1'); // type
  bad(0, (v) => v.setUint32(8, 0), 'bm0'); // empty table
  bad(0, (v) => v.setUint32(4, 0), 'bm0'); // table offset 0
  bad(0, (v) => v.setUint32(4, 0x50200), 'bm0'); // unaligned table
  bad(0, (v) => v.setUint32(0, 0x200000), 'bm0'); // offset beyond 2^53
  bad(0, (v) => v.setUint32(8, 0x8000001), 'bm0'); // table too long
  bad(0, (v) => v.setUint32(8, 0x2001), 'bm0'); // more than 512 MiB of bitmap data
  assert.doesNotThrow(() => decodeBitmapDirectory(patched(QEMU_DIRECTORY, 0, (v) => v.setUint32(8, 0x2000)), OPTS));
  assert.doesNotThrow(() => decodeBitmapDirectory(patched(QEMU_DIRECTORY, 0, (v) => v.setUint8(17, 9)), OPTS));
  assert.doesNotThrow(() => decodeBitmapDirectory(patched(QEMU_DIRECTORY, 0, (v) => v.setUint8(17, 31)), OPTS));
});

test('a bitmap must cover the disk unless it is in use', () => {
  // One cluster of table at granularity 2^9 covers 64 KiB * 8 * 512 bytes = 256 MiB.
  const small = patched(QEMU_DIRECTORY, 0, (v) => v.setUint8(17, 9));
  assert.doesNotThrow(() => decodeBitmapDirectory(small, { ...OPTS, diskSize: 256 << 20 }));
  assert.throws(() => decodeBitmapDirectory(small, { ...OPTS, diskSize: (256 << 20) + 512 }), isInvalid("Bitmap 'bm0' doesn't satisfy the constraints"));
  const inUse = patched(small, 0, (v) => v.setUint32(12, 3));
  const [first] = decodeBitmapDirectory(inUse, { ...OPTS, diskSize: (256 << 20) + 512 });
  assert.deepEqual(first?.flags, { inUse: true, auto: true });
});

test('encode pads names to 8 bytes and keeps flags, extra data and UTF-8 names', () => {
  const entries = [
    entry({ name: 'ä-bitmap', flags: { inUse: true, auto: false } }),
    entry({ name: 'x'.repeat(1023), granularityBits: 31, tableOffset: 2 ** 40, tableSize: 7, extraData: Uint8Array.of(1, 2, 3) }),
  ];
  const dir = encodeBitmapDirectory(entries);
  assert.equal(dir.byteLength, 40 + ((24 + 3 + 1023 + 7) & ~7)); // 24 + 9-byte name -> 40
  assert.equal(bitmapDirectorySize(entries), dir.byteLength);
  const v = new DataView(dir.buffer);
  assert.equal(v.getUint32(12), 1);
  assert.equal(v.getUint16(18), 9);
  assert.deepEqual([...dir.subarray(24 + 9, 40)], [0, 0, 0, 0, 0, 0, 0]);
  const [a] = decodeBitmapDirectory(dir.subarray(0, 40), { nbBitmaps: 1, clusterSize: 65536, diskSize: 1 << 20 });
  assert.deepEqual(a, entries[0]);
  assert.throws(() => encodeBitmapDirectory([entry({ name: '' })]), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT');
  assert.throws(() => encodeBitmapDirectory([entry({ name: 'y'.repeat(1024) })]), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT');
});
