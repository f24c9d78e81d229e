import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Qcow2Error } from '../../errors.js';
import {
  decodeReftableEntry,
  encodeReftableEntry,
  fillRefcounts,
  getRefcount,
  refblockEntries,
  refcountMax,
  refcountOrder,
  setRefcount,
} from './refcount-codec.js';

const ORDERS = [0, 1, 2, 3, 4, 5, 6] as const;

/** Independent bit-level model: entry i occupies bits [i*w, (i+1)*w) of the block read as LSB-first bits within bytes (w < 8), or big-endian words (w >= 8). */
function modelGet(block: Uint8Array, index: number, order: number): bigint {
  const w = 1 << order;
  if (w < 8) {
    let v = 0n;
    for (let b = 0; b < w; b++) {
      const bit = index * w + b;
      if (((block[bit >> 3]! >> (bit & 7)) & 1) === 1) v |= 1n << BigInt(b);
    }
    return v;
  }
  let v = 0n;
  const bytes = w / 8;
  for (let k = 0; k < bytes; k++) v = (v << 8n) | BigInt(block[index * bytes + k]!);
  return v;
}

/** Deterministic values that fit width w, including 0, 1 and the maximum. */
function valuesFor(order: number): number[] {
  const max = refcountMax(order);
  const out = [0, 1, max, Math.floor(max / 2)];
  if (max >= 2) out.push(2);
  if (max > 0xffff) out.push(0x12345, 0xfedcba);
  if (order === 6) out.push(2 ** 40 + 7, 2 ** 52 + 3);
  return out;
}

describe('refcount-codec', () => {
  test('widths and entry counts', () => {
    assert.deepEqual([1, 2, 4, 8, 16, 32, 64].map(refcountOrder), [0, 1, 2, 3, 4, 5, 6]);
    assert.throws(() => refcountOrder(3), RangeError);
    assert.throws(() => refcountOrder(128), RangeError);
    assert.throws(() => refcountOrder(0), RangeError);
    assert.equal(refblockEntries(65536, 4), 32768);
    assert.equal(refblockEntries(512, 0), 4096);
    assert.equal(refblockEntries(512, 6), 64);
    assert.equal(refblockEntries(2 * 1024 * 1024, 6), 262144);
    assert.deepEqual(ORDERS.map(refcountMax), [1, 3, 15, 255, 65535, 4294967295, Number.MAX_SAFE_INTEGER]);
  });

  for (const order of ORDERS) {
    test(`every entry of a 512-byte block round-trips at ${1 << order} bits, neighbours untouched`, () => {
      const entries = refblockEntries(512, order);
      const values = valuesFor(order);
      const block = new Uint8Array(512);
      const expected: number[] = [];
      for (let i = 0; i < entries; i++) {
        const value = values[(i * 7 + (i >> 3)) % values.length]!;
        setRefcount(block, i, order, value);
        expected.push(value);
      }
      for (let i = 0; i < entries; i++) {
        assert.equal(getRefcount(block, i, order), expected[i], `entry ${i}`);
        assert.equal(modelGet(block, i, order), BigInt(expected[i]!), `model entry ${i}`);
      }
      // Overwrite each entry with every value; only that entry may change.
      for (let i = 0; i < entries; i += Math.max(1, entries >> 6)) {
        for (const value of values) {
          const before = block.slice();
          setRefcount(block, i, order, value);
          assert.equal(getRefcount(block, i, order), value);
          for (let j = Math.max(0, i - 3); j < Math.min(entries, i + 4); j++) {
            if (j !== i) assert.equal(getRefcount(block, j, order), getRefcount(before, j, order), `neighbour ${j} of ${i}`);
          }
        }
      }
    });

    test(`fillRefcounts matches setRefcount at ${1 << order} bits for every sub-range`, () => {
      const entries = refblockEntries(64, order);
      const value = refcountMax(order) === 1 ? 1 : 3;
      for (let from = 0; from < Math.min(entries, 20); from++) {
        for (let to = from; to <= Math.min(entries, from + 19); to++) {
          const a = new Uint8Array(64).fill(0xa5);
          const b = a.slice();
          fillRefcounts(a, order, from, to, value);
          for (let i = from; i < to; i++) setRefcount(b, i, order, value);
          assert.deepEqual(a, b, `[${from}, ${to})`);
        }
      }
      const a = new Uint8Array(64);
      fillRefcounts(a, order, 0, entries, 1);
      for (let i = 0; i < entries; i++) assert.equal(getRefcount(a, i, order), 1);
    });

    test(`values outside ${1 << order} bits and bad indexes are refused`, () => {
      const block = new Uint8Array(512);
      const entries = refblockEntries(512, order);
      assert.throws(() => setRefcount(block, 0, order, refcountMax(order) + (order === 6 ? 2 : 1)), RangeError);
      assert.throws(() => setRefcount(block, 0, order, -1), RangeError);
      assert.throws(() => setRefcount(block, 0, order, 0.5), RangeError);
      assert.throws(() => setRefcount(block, entries, order, 1), RangeError);
      assert.throws(() => getRefcount(block, -1, order), RangeError);
      assert.throws(() => getRefcount(block, entries, order), RangeError);
      assert.ok(block.every((b) => b === 0));
    });
  }

  test('bad orders are refused', () => {
    assert.throws(() => getRefcount(new Uint8Array(8), 0, 7), RangeError);
    assert.throws(() => setRefcount(new Uint8Array(8), 0, -1, 0), RangeError);
  });

  test('64-bit refcounts above 2^53 - 1 are reported, not rounded', () => {
    const block = new Uint8Array(16);
    block.set([0x00, 0x20, 0, 0, 0, 0, 0, 0], 0); // 2^53
    block.set([0x80, 0, 0, 0, 0, 0, 0, 1], 8); // MSb set (iotest 112)
    assert.throws(() => getRefcount(block, 0, 6), (e: unknown) => e instanceof Qcow2Error && e.code === 'UNSUPPORTED');
    assert.throws(() => getRefcount(block, 1, 6), (e: unknown) => e instanceof Qcow2Error && e.code === 'UNSUPPORTED');
    setRefcount(block, 0, 6, Number.MAX_SAFE_INTEGER);
    assert.deepEqual([...block.subarray(0, 8)], [0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert.equal(getRefcount(block, 0, 6), Number.MAX_SAFE_INTEGER);
  });

  test('byte layout equals qemu-img 7.2 refblocks (30 clusters in use, 4 KiB clusters)', () => {
    // `qemu-img create -f qcow2 -o refcount_bits=B,cluster_size=4k,preallocation=metadata x 100k`,
    // first 48 bytes of the refblock at 0x2000.
    const seen: Record<number, string> = {
      1: 'ffffff3f',
      2: '55555555555555' + '05',
      4: '11'.repeat(15),
      8: '01'.repeat(30),
      16: '0001'.repeat(24),
      32: '00000001'.repeat(12),
      64: '0000000000000001'.repeat(6),
    };
    for (const [bits, hex] of Object.entries(seen)) {
      const order = refcountOrder(Number(bits));
      const block = new Uint8Array(4096);
      fillRefcounts(block, order, 0, 30, 1);
      const got = Buffer.from(block.subarray(0, 48)).toString('hex');
      assert.equal(got, hex.padEnd(96, '0'), `${bits} bits`);
    }
  });

  test('refcount table entries: offset bits 9-63, reserved bits 0-8', () => {
    const table = new Uint8Array(32);
    encodeReftableEntry(table, 1, 0x20000);
    encodeReftableEntry(table, 2, 2 ** 52 + 512);
    assert.deepEqual(decodeReftableEntry(table, 0), { offset: 0, reserved: 0 });
    assert.deepEqual(decodeReftableEntry(table, 1), { offset: 0x20000, reserved: 0 });
    assert.deepEqual([...table.subarray(8, 16)], [0, 0, 0, 0, 0, 2, 0, 0]);
    assert.deepEqual(decodeReftableEntry(table, 2), { offset: 2 ** 52 + 512, reserved: 0 });
    table.set([0, 0, 0, 0, 0, 3, 0x01, 0xff], 24);
    assert.deepEqual(decodeReftableEntry(table, 3), { offset: 0x30000, reserved: 0x1ff });
    table.set([0x00, 0x20, 0, 0, 0, 0, 0, 0], 24);
    assert.throws(() => decodeReftableEntry(table, 3), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_IMAGE');
    assert.throws(() => decodeReftableEntry(table, 4), RangeError);
    assert.throws(() => encodeReftableEntry(table, 0, 100), RangeError);
    assert.throws(() => encodeReftableEntry(table, 4, 512), RangeError);
  });
});
