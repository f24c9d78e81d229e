import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeZstdFrames, readZstdFrame } from './zstd-frame.js';
import { Qcow2Error } from '../errors.js';

const MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** 3-byte little-endian block header. */
function block(last: boolean, type: number, size: number): number[] {
  const h = (last ? 1 : 0) | (type << 1) | (size << 3);
  return [h & 0xff, (h >>> 8) & 0xff, (h >>> 16) & 0xff];
}

function bytes(...parts: number[][]): Uint8Array {
  return Uint8Array.from(parts.flat());
}

function assertDecompressError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof Qcow2Error && e.code === 'DECOMPRESS' && pattern.test(e.message));
}

test('single-segment frame with one raw block', () => {
  const frame = bytes(MAGIC, [0x20, 5], block(true, 0, 5), [1, 2, 3, 4, 5]);
  assert.deepEqual(readZstdFrame(frame, 0), { length: 14, skippable: false, contentSize: 5 });
});

test('trailing bytes after the frame are not counted', () => {
  const frame = bytes(MAGIC, [0x20, 5], block(true, 0, 5), [1, 2, 3, 4, 5], [0xde, 0xad, 0xbe, 0xef, 0, 0, 0]);
  assert.equal(readZstdFrame(frame, 0).length, 14);
});

test('content checksum adds four bytes', () => {
  const frame = bytes(MAGIC, [0x24, 5], block(true, 0, 5), [1, 2, 3, 4, 5], [9, 9, 9, 9], [7, 7]);
  assert.equal(readZstdFrame(frame, 0).length, 18);
});

test('RLE blocks store one byte, compressed blocks their size', () => {
  const frame = bytes(MAGIC, [0x20, 200], block(false, 1, 100), [0xaa], block(false, 2, 6), [1, 2, 3, 4, 5, 6],
    block(true, 1, 94), [0xbb], [0xff, 0xff]);
  assert.equal(readZstdFrame(frame, 0).length, 4 + 2 + 3 + 1 + 3 + 6 + 3 + 1);
});

test('window descriptor, 2-byte dictionary id and 2-byte content size', () => {
  // FCS flag 1 (2 bytes, value + 256), not single segment, dictionary id flag 2.
  const frame = bytes(MAGIC, [0x42], [0x50], [0x34, 0x12], [0x00, 0x01], block(true, 0, 2), [1, 2]);
  assert.deepEqual(readZstdFrame(frame, 0), { length: 4 + 1 + 1 + 2 + 2 + 3 + 2, skippable: false, contentSize: 512 });
});

test('4-byte dictionary id and 8-byte content size', () => {
  const frame = bytes(MAGIC, [0xe3], [1, 2, 3, 4], [0, 0, 0, 0, 2, 0, 0, 0], block(true, 0, 0));
  assert.deepEqual(readZstdFrame(frame, 0), { length: 4 + 1 + 4 + 8 + 3, skippable: false, contentSize: 2 * 2 ** 32 });
});

test('4-byte content size', () => {
  const frame = bytes(MAGIC, [0xa0], [0x00, 0x00, 0x01, 0x00], block(true, 0, 0));
  assert.equal(readZstdFrame(frame, 0).contentSize, 65536);
});

test('frame without content size reports undefined', () => {
  const frame = bytes(MAGIC, [0x00], [0x48], block(true, 0, 3), [1, 2, 3]);
  assert.deepEqual(readZstdFrame(frame, 0), { length: 4 + 1 + 1 + 3 + 3, skippable: false, contentSize: undefined });
});

test('skippable frames are measured by their size field', () => {
  const frame = bytes([0x53, 0x2a, 0x4d, 0x18], [6, 0, 0, 0], [1, 2, 3, 4, 5, 6], [0x28]);
  assert.deepEqual(readZstdFrame(frame, 0), { length: 14, skippable: true, contentSize: undefined });
});

test('frames at a non-zero offset', () => {
  const first = bytes(MAGIC, [0x20, 1], block(true, 1, 1), [0x11]);
  const second = bytes(MAGIC, [0x24, 2], block(true, 0, 2), [1, 2], [0, 0, 0, 0]);
  const both = bytes(Array.from(first), Array.from(second), [0, 0, 0]);
  assert.equal(readZstdFrame(both, 0).length, first.length);
  assert.equal(readZstdFrame(both, first.length).length, second.length);
});

test('rejects bad magic, reserved bits and reserved block types', () => {
  assertDecompressError(() => readZstdFrame(bytes([0x28, 0xb5, 0x2f, 0xfe], [0x20, 0], block(true, 0, 0)), 0), /magic/);
  assertDecompressError(() => readZstdFrame(bytes(MAGIC, [0x28, 0], block(true, 0, 0)), 0), /reserved bit/);
  assertDecompressError(() => readZstdFrame(bytes(MAGIC, [0x20, 0], block(true, 3, 0)), 0), /reserved block type/);
});

test('rejects blocks larger than 128 KiB', () => {
  assertDecompressError(() => readZstdFrame(bytes(MAGIC, [0x20, 0], block(true, 2, 128 * 1024 + 1)), 0), /exceeds/);
});

test('rejects frames that run past the input', () => {
  const whole = bytes(MAGIC, [0x24, 5], block(false, 0, 2), [1, 2], block(true, 0, 3), [3, 4, 5], [9, 9, 9, 9]);
  assert.equal(readZstdFrame(whole, 0).length, whole.length);
  // Every proper prefix is truncated somewhere: magic, header, block header, block, checksum.
  for (let cut = 0; cut < whole.length; cut++) {
    assertDecompressError(() => readZstdFrame(whole.subarray(0, cut), 0), /truncated|past the input/);
  }
  assertDecompressError(() => readZstdFrame(bytes([0x50, 0x2a, 0x4d, 0x18], [9, 0, 0, 0], [1]), 0), /past the input/);
  assertDecompressError(() => readZstdFrame(bytes([0x50, 0x2a, 0x4d, 0x18], [9, 0]), 0), /truncated/);
});

test('rejects an offset outside the input', () => {
  const frame = bytes(MAGIC, [0x20, 0], block(true, 0, 0));
  assertDecompressError(() => readZstdFrame(frame, frame.length), /truncated/);
  assertDecompressError(() => readZstdFrame(frame, -1), /truncated/);
  assertDecompressError(() => readZstdFrame(frame, 0.5), /truncated/);
});

test('decodeZstdFrames: a decoder error becomes DECOMPRESS, a frame too big is refused before decoding', () => {
  // Single-segment frame, content size 3, one raw block of 3 bytes.
  const frame = bytes(MAGIC, [0x20, 3], block(true, 0, 3), [7, 8, 9]);
  const out = new Uint8Array(3);
  decodeZstdFrames(frame, out, (f, room) => {
    room.set(f.subarray(9, 12));
    return 3;
  });
  assert.deepEqual(out, Uint8Array.of(7, 8, 9));
  assertDecompressError(() => decodeZstdFrames(frame, new Uint8Array(3), () => { throw new Error('bad'); }), /invalid frame/);
  let called = false;
  assertDecompressError(() => decodeZstdFrames(frame, new Uint8Array(2), () => { called = true; return 2; }), /larger than the cluster/);
  assert.equal(called, false);
  assertDecompressError(() => decodeZstdFrames(frame, new Uint8Array(6), (f, room) => { room.set(f.subarray(9, 12)); return 3; }), /input ended/);
});
