import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeCompressed, encodeCompressed, entryOffset, isCompressed, isCopied, isZeroFlag, l1ReservedBits, l2ReservedBits } from './table-entries.js';

test('entry offset takes bits 9..55 and ignores flags', () => {
  assert.equal(entryOffset(0x80000000, 0x50000), 0x50000);
  assert.equal(entryOffset(0x00ffffff, 0xfffffe01), 0xffffff * 2 ** 32 + 0xfffffe00);
  assert.equal(entryOffset(0xff000000, 0x1ff), 0);
  assert.ok(isCopied(0x80000000));
  assert.ok(!isCopied(0x40000000));
  assert.ok(isCompressed(0x40000000));
  assert.ok(isZeroFlag(1));
});

test('reserved bit masks', () => {
  assert.ok(l1ReservedBits(0x01000000, 0));
  assert.ok(l1ReservedBits(0, 0x100));
  assert.ok(!l1ReservedBits(0x80ffffff, 0xfffffe00));
  assert.ok(l2ReservedBits(0x20000000, 0));
  assert.ok(l2ReservedBits(0, 2));
  assert.ok(!l2ReservedBits(0xc0ffffff, 0xfffffe01));
});

test('compressed descriptors round-trip at every cluster size', () => {
  for (let bits = 9; bits <= 21; bits++) {
    const cs = 2 ** bits;
    for (const host of [512, 0x12345, 2 ** 40 + 77, 2 ** 48 - 1000]) {
      for (const len of [1, 100, 511, 512, cs - 1]) {
        const [hi, lo] = encodeCompressed(host, len, bits);
        assert.ok(isCompressed(hi));
        const d = decodeCompressed(hi, lo, bits);
        assert.equal(d.hostOffset, host, `bits ${bits} host ${host}`);
        // Sector-rounded: covers the data, ends on a sector boundary.
        assert.ok(d.length >= len);
        assert.equal((d.hostOffset + d.length) % 512, 0);
        assert.ok(d.length - len < 512);
      }
    }
  }
});

test('compressed descriptor matches QEMU layout for 64 KiB clusters', () => {
  // x = 54: offset in bits 0..53, additional sectors in bits 54..61.
  const hi = (0x40000000 | (3 << (54 - 32))) >>> 0;
  const d = decodeCompressed(hi, 0x10200, 16);
  assert.equal(d.hostOffset, 0x10200);
  assert.equal(d.length, 4 * 512);
});
