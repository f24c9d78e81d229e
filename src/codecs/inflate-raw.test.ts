import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { Qcow2Error } from '../errors.js';
import { inflateRawInto } from './inflate-raw.js';
import { randomBytes, sampleCluster } from './codec-samples.test.helper.js';

/** LSB-first bit writer for hand-built DEFLATE streams. */
class Bits {
  private bytes: number[] = [];
  private acc = 0;
  private n = 0;
  write(value: number, length: number): this {
    for (let i = 0; i < length; i++) {
      this.acc |= ((value >>> i) & 1) << this.n;
      if (++this.n === 8) { this.bytes.push(this.acc); this.acc = 0; this.n = 0; }
    }
    return this;
  }
  /** Huffman codes are sent most-significant bit first. */
  code(code: number, length: number): this {
    for (let i = length - 1; i >= 0; i--) this.write((code >>> i) & 1, 1);
    return this;
  }
  done(): Uint8Array {
    return Uint8Array.from(this.n ? [...this.bytes, this.acc] : this.bytes);
  }
}

/** Fixed-Huffman literal/length code (RFC 1951 3.2.6). */
function fixedLit(b: Bits, sym: number): Bits {
  if (sym < 144) return b.code(0x30 + sym, 8);
  if (sym < 256) return b.code(0x190 + sym - 144, 9);
  if (sym < 280) return b.code(sym - 256, 7);
  return b.code(0xc0 + sym - 280, 8);
}

function inflate(src: Uint8Array, size: number): Uint8Array {
  const dst = new Uint8Array(size);
  inflateRawInto(src, dst);
  return dst;
}

function assertFails(src: Uint8Array, size: number, pattern: RegExp): void {
  assert.throws(() => inflate(src, size),
    (e: unknown) => e instanceof Qcow2Error && e.code === 'DECOMPRESS' && pattern.test(e.message));
}

function stored(data: number[], final: boolean, nlenXor = 0): number[] {
  const len = data.length;
  return [final ? 1 : 0, len & 0xff, len >>> 8, (~len & 0xff) ^ nlenXor, (~len >>> 8) & 0xff, ...data];
}

test('stored blocks', () => {
  const src = Uint8Array.from([...stored([1, 2, 3], false), ...stored([4, 5], true), 0xee, 0xee]);
  assert.deepEqual(inflate(src, 5), Uint8Array.of(1, 2, 3, 4, 5));
  assertFails(Uint8Array.from(stored([1, 2, 3], true, 1)), 3, /length check/);
  assertFails(Uint8Array.from(stored([1, 2, 3], true)), 4, /ended before/);
});

test('a stored block cut short succeeds only when the cluster is already full', () => {
  const src = Uint8Array.from(stored(Array.from({ length: 100 }, (_, i) => i), true)).subarray(0, 5 + 50);
  assert.deepEqual(inflate(src, 50), Uint8Array.from({ length: 50 }, (_, i) => i));
  assertFails(src, 100, /ended in a stored block/);
  assertFails(src.subarray(0, 3), 1, /stored block header/);
});

test('fixed Huffman literals and an overlapping match', () => {
  const b = new Bits().write(1, 1).write(1, 2);
  fixedLit(b, 0x61);
  fixedLit(b, 0x62);
  fixedLit(b, 257 + 4); // length 7
  b.code(1, 5); // distance 2
  fixedLit(b, 256);
  assert.deepEqual(inflate(b.done(), 9), new TextEncoder().encode('ababababa'));
});

test('decoding stops inside a match when the cluster is full', () => {
  const b = new Bits().write(1, 1).write(1, 2);
  fixedLit(b, 0x41);
  fixedLit(b, 285); // length 258
  b.code(0, 5); // distance 1
  fixedLit(b, 256);
  const src = b.done();
  assert.deepEqual(inflate(src, 100), new Uint8Array(100).fill(0x41));
  assert.deepEqual(inflate(src, 259), new Uint8Array(259).fill(0x41));
  assertFails(src, 260, /stream ended/);
});

test('invalid fixed-Huffman content', () => {
  const tooFar = new Bits().write(1, 1).write(1, 2);
  fixedLit(tooFar, 257).code(0, 5);
  assertFails(tooFar.done(), 10, /too far back/);

  const badLength = new Bits().write(1, 1).write(1, 2);
  fixedLit(badLength, 286);
  assertFails(badLength.done(), 10, /invalid length symbol/);

  const badDistance = new Bits().write(1, 1).write(1, 2);
  fixedLit(badDistance, 0x41);
  fixedLit(badDistance, 257).code(30, 5);
  assertFails(badDistance.done(), 10, /invalid distance symbol/);

  assertFails(new Bits().write(1, 1).write(3, 2).write(0, 13).done(), 10, /reserved block type/);
});

/** Dynamic block header with the given code-length code lengths (in CL_ORDER). */
function dynamicHeader(hlit: number, hdist: number, clLengthsInOrder: number[]): Bits {
  const b = new Bits().write(1, 1).write(2, 2).write(hlit - 257, 5).write(hdist - 1, 5).write(clLengthsInOrder.length - 4, 4);
  for (const l of clLengthsInOrder) b.write(l, 3);
  return b;
}

test('invalid dynamic headers', () => {
  assertFails(dynamicHeader(287, 1, [1, 1, 1, 1]).done(), 10, /too many/);
  assertFails(dynamicHeader(257, 31, [1, 1, 1, 1]).done(), 10, /too many/);
  assertFails(dynamicHeader(257, 1, new Array(19).fill(1)).done(), 10, /over-subscribed/);

  // Code-length code {8: '0', 16: '1'}; starting with a repeat has nothing to repeat.
  assertFails(dynamicHeader(257, 1, [1, 0, 0, 0, 1]).code(1, 1).write(0, 2).done(), 10, /no previous length/);

  // Code-length code {0: '0', 8: '1'}: 256 literals of length 8, then 0 for end-of-block.
  const noEob = dynamicHeader(257, 1, [0, 0, 0, 1, 1]);
  for (let i = 0; i < 256; i++) noEob.code(1, 1);
  noEob.code(0, 1).code(0, 1);
  assertFails(noEob.done(), 10, /end-of-block/);

  // Code-length code {8: '0', 18: '1'}: a zero run past the end of the lengths.
  const overflow = dynamicHeader(257, 1, [0, 0, 1, 0, 1]);
  for (let i = 0; i < 256; i++) overflow.code(0, 1);
  overflow.code(1, 1).write(0, 7);
  assertFails(overflow.done(), 10, /overflow/);
});

test('long Huffman codes use second-level tables', () => {
  // Byte k appears about 2^-k as often: Huffman-only coding then needs codes of up to 15 bits.
  const size = 65536;
  const data = new Uint8Array(size);
  const rnd = randomBytes(size * 2, 4);
  for (let i = 0; i < size; i++) {
    let k = 0;
    const r = ((rnd[2 * i] ?? 0) << 8) | (rnd[2 * i + 1] ?? 0);
    while (k < 16 && (r >>> k) & 1) k++;
    data[i] = k * 13;
  }
  for (const strategy of [zlib.constants.Z_HUFFMAN_ONLY, zlib.constants.Z_DEFAULT_STRATEGY]) {
    assert.deepEqual(inflate(zlib.deflateRawSync(data, { strategy }), size), data);
  }
});

test('distances beyond 4 KiB are accepted (the cluster is the window)', () => {
  const data = sampleCluster(65536, 3);
  data.set(data.subarray(100, 20000), 40000);
  assert.deepEqual(inflate(zlib.deflateRawSync(data, { windowBits: 15 }), 65536), data);
});

test('input ending inside a Huffman block fails', () => {
  const stream = zlib.deflateRawSync(sampleCluster(65536, 9), { windowBits: 12 });
  assertFails(stream.subarray(0, stream.byteLength - 20), 65536, /ended before/);
});
