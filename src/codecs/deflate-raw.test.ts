import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { deflateRawWindow4k } from './deflate-raw.js';
import { randomBytes, sampleCluster } from './codec-samples.test.helper.js';

/** QEMU's view: inflate with a 4 KiB window (node:zlib's default 16 KiB chunks enforce it). */
function qemuInflate(stream: Uint8Array): Uint8Array {
  return new Uint8Array(zlib.inflateRawSync(stream, { windowBits: 12 }));
}

function roundTrip(data: Uint8Array): Uint8Array {
  const out = deflateRawWindow4k(data, data.byteLength + 64);
  assert.ok(out);
  assert.deepEqual(qemuInflate(out), data);
  return out;
}

test('never refers back more than 4 KiB', () => {
  // The same 20 KB of noise twice, 40 KB apart: a 32 KiB-window encoder would reuse it.
  const data = new Uint8Array(65536);
  const noise = randomBytes(20000, 3);
  data.set(noise);
  data.set(noise, 40000);
  const wide = zlib.deflateRawSync(data, { windowBits: 15 });
  assert.throws(() => qemuInflate(wide), /too far back/, 'the oracle rejects 32 KiB windows');
  roundTrip(data);
  // Repeats at exactly 4096 bytes are allowed and used.
  const near = new Uint8Array(65536);
  const block = randomBytes(4096, 5);
  for (let at = 0; at < near.length; at += 4096) near.set(block, at);
  assert.ok(roundTrip(near).byteLength < 8192);
});

test('tiny and degenerate inputs', () => {
  for (const data of [new Uint8Array(0), Uint8Array.of(7), Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3), new Uint8Array(4)]) {
    roundTrip(data);
  }
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  roundTrip(all);
  roundTrip(new Uint8Array(100000).fill(0xab)); // 258-byte matches at distance 1
});

test('skewed statistics need length-limited codes', () => {
  const size = 65536;
  const data = new Uint8Array(size);
  const rnd = randomBytes(size * 2, 4);
  for (let i = 0; i < size; i++) {
    let k = 0;
    const r = ((rnd[2 * i] ?? 0) << 8) | (rnd[2 * i + 1] ?? 0);
    while (k < 16 && (r >>> k) & 1) k++;
    data[i] = k * 13;
  }
  roundTrip(data);
});

test('stops once the output reaches the limit', () => {
  const data = sampleCluster(65536, 8);
  const out = deflateRawWindow4k(data, 65536);
  assert.ok(out);
  assert.equal(deflateRawWindow4k(data, out.byteLength), undefined);
  assert.deepEqual(deflateRawWindow4k(data, out.byteLength + 1), out);
  assert.equal(deflateRawWindow4k(randomBytes(2 * 1024 * 1024, 9), 2 * 1024 * 1024), undefined);
});

test('compresses about as well as zlib with QEMU settings', () => {
  for (const size of [512, 65536, 2 * 1024 * 1024]) {
    const data = sampleCluster(size, 10);
    const ours = roundTrip(data).byteLength;
    const zlibSize = zlib.deflateRawSync(data, { windowBits: 12, memLevel: 9 }).byteLength;
    assert.ok(ours <= zlibSize * 1.05, `${size}: ${ours} vs zlib ${zlibSize}`);
  }
});
