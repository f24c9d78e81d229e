/**
 * Behaviour every cluster codec must show, as node:test cases. Each codec's test file
 * calls `codecContract` with its implementation and an independent reference encoder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor } from './codec.js';
import { randomBytes, sampleCluster, sectorRound } from './codec-samples.test.helper.js';

export interface CodecUnderTest {
  readonly name: string;
  readonly decompressor: ClusterDecompressor;
  readonly compressor: ClusterCompressor;
  /** Independent encoder for the same format (node:zlib, the zstd library). */
  encode(data: Uint8Array): Uint8Array;
  /** Independent decoder with QEMU's constraints (e.g. inflate with a 4 KiB window). */
  referenceDecode(stream: Uint8Array, size: number): Uint8Array;
}

export const SIZES = [512, 4096, 65536, 2 * 1024 * 1024];

export async function assertDecompressFails(dec: ClusterDecompressor, src: Uint8Array, size: number): Promise<void> {
  await assert.rejects(dec.decompress(src, new Uint8Array(size)),
    (e: unknown) => e instanceof Qcow2Error && e.code === 'DECOMPRESS');
}

async function decodes(dec: ClusterDecompressor, src: Uint8Array, size: number): Promise<Uint8Array> {
  const dst = new Uint8Array(size);
  await dec.decompress(src, dst);
  return dst;
}

export function codecContract(c: CodecUnderTest): void {
  const { decompressor: dec, compressor: comp } = c;

  test(`${c.name}: round trip at 512 B, 4 KiB, 64 KiB and 2 MiB`, async () => {
    for (const size of SIZES) {
      const data = sampleCluster(size, size);
      const stored = await comp.compress(data);
      assert.ok(stored, `compressible ${size}-byte cluster`);
      assert.ok(stored.byteLength < size);
      assert.deepEqual(c.referenceDecode(stored, size), data, 'reference decoder agrees');
      // As read from an image: sector-rounded, with the next cluster's bytes behind it.
      assert.deepEqual(await decodes(dec, sectorRound(stored, randomBytes(512, size)), size), data);
    }
  });

  test(`${c.name}: zero cluster round trip`, async () => {
    const data = new Uint8Array(65536);
    const stored = await comp.compress(data);
    assert.ok(stored && stored.byteLength < 512);
    assert.deepEqual(await decodes(dec, sectorRound(stored), 65536), data);
  });

  test(`${c.name}: incompressible cluster is left uncompressed`, async () => {
    for (const size of [512, 65536]) assert.equal(await comp.compress(randomBytes(size, 99)), undefined);
  });

  test(`${c.name}: compressor does not modify its input`, async () => {
    const data = sampleCluster(65536, 5);
    const copy = data.slice();
    await comp.compress(data);
    assert.deepEqual(data, copy);
  });

  test(`${c.name}: decodes reference streams followed by trailing bytes`, async () => {
    const data = sampleCluster(65536, 11);
    const stream = c.encode(data);
    const tails = [new Uint8Array(0), new Uint8Array(700), new Uint8Array(511).fill(0xff), randomBytes(1000, 3), stream];
    for (const tail of tails) {
      const src = new Uint8Array(stream.byteLength + tail.byteLength);
      src.set(stream);
      src.set(tail, stream.byteLength);
      assert.deepEqual(await decodes(dec, src, 65536), data);
      assert.deepEqual(await decodes(dec, sectorRound(src), 65536), data);
    }
  });

  test(`${c.name}: decodes from a view into a larger buffer and leaves it intact`, async () => {
    const data = sampleCluster(4096, 12);
    const stream = c.encode(data);
    const big = randomBytes(stream.byteLength + 1000, 8);
    big.set(stream, 300);
    const before = big.slice();
    const dstBuffer = new Uint8Array(4096 + 64);
    const dst = dstBuffer.subarray(32, 32 + 4096);
    await dec.decompress(big.subarray(300, 300 + stream.byteLength + 200), dst);
    assert.deepEqual(dst, data);
    assert.deepEqual(big, before);
    assert.equal(big.buffer.byteLength, before.byteLength, 'input buffer not detached');
    assert.deepEqual(dstBuffer.subarray(0, 32), new Uint8Array(32), 'bytes before dst untouched');
    assert.deepEqual(dstBuffer.subarray(32 + 4096), new Uint8Array(32), 'bytes after dst untouched');
  });

  test(`${c.name}: a stream that ends before the cluster is full fails`, async () => {
    const half = c.encode(sampleCluster(32768, 13));
    await assertDecompressFails(dec, half, 65536);
    await assertDecompressFails(dec, sectorRound(half), 65536);
  });

  test(`${c.name}: truncated streams fail`, async () => {
    const stream = c.encode(sampleCluster(65536, 14));
    for (const cut of [0, 1, 5, stream.byteLength >> 2, stream.byteLength >> 1, stream.byteLength - 64]) {
      await assertDecompressFails(dec, stream.subarray(0, cut), 65536);
    }
  });

  test(`${c.name}: garbage fails`, async () => {
    await assertDecompressFails(dec, new Uint8Array(512).fill(0xff), 65536);
    await assertDecompressFails(dec, new Uint8Array(512).fill(0x07), 65536);
    for (let seed = 1; seed <= 20; seed++) await assertDecompressFails(dec, randomBytes(512, seed), 65536);
  });

  test(`${c.name}: corrupted streams decode or fail with DECOMPRESS, never anything else`, async () => {
    const data = sampleCluster(65536, 15);
    const stream = sectorRound(c.encode(data));
    const rnd = randomBytes(4096, 77);
    let failures = 0;
    for (let i = 0; i < 300; i++) {
      const bad = stream.slice();
      const flips = 1 + ((rnd[i] ?? 0) % 4);
      for (let k = 0; k < flips; k++) {
        const at = (((rnd[(i * 7 + k) % 4096] ?? 0) << 8) | (rnd[(i * 13 + k + 1) % 4096] ?? 0)) % bad.byteLength;
        bad[at] = (bad[at] ?? 0) ^ (1 << ((rnd[(i + k) % 4096] ?? 0) % 8));
      }
      const cut = i % 3 === 0 ? bad.subarray(0, ((rnd[i] ?? 0) * 97) % bad.byteLength) : bad;
      try {
        await dec.decompress(cut, new Uint8Array(65536));
      } catch (e) {
        assert.ok(e instanceof Qcow2Error && e.code === 'DECOMPRESS', `unexpected error ${String(e)}`);
        failures++;
      }
    }
    assert.ok(failures > 100, `most corruptions are detected (${failures}/300)`);
  });

  test(`${c.name}: many decodes in flight at once`, async () => {
    const clusters = Array.from({ length: 48 }, (_, i) => sampleCluster(65536, 100 + i));
    const streams = clusters.map((d) => sectorRound(c.encode(d), randomBytes(512, 5)));
    const outs = await Promise.all(streams.map((s) => decodes(dec, s, 65536)));
    outs.forEach((o, i) => assert.deepEqual(o, clusters[i]));
  });

  test(`${c.name}: many compressions in flight at once`, async () => {
    const clusters = Array.from({ length: 16 }, (_, i) => sampleCluster(65536, 200 + i));
    const streams = await Promise.all(clusters.map((d) => comp.compress(d)));
    streams.forEach((s, i) => {
      assert.ok(s);
      assert.deepEqual(c.referenceDecode(s, 65536), clusters[i]);
    });
  });
}

/** zlib-type decoder behaviour beyond the contract: QEMU's "stop when full" semantics. */
export function zlibDecoderContract(name: string, dec: ClusterDecompressor,
  deflateRaw: (data: Uint8Array, options?: Record<string, number>) => Uint8Array): void {
  test(`${name}: a stream longer than the cluster yields its first cluster bytes`, async () => {
    const data = sampleCluster(65536, 21);
    const stream = deflateRaw(data, { windowBits: 12 });
    assert.deepEqual(await decodes(dec, stream, 4096), data.subarray(0, 4096));
    assert.deepEqual(await decodes(dec, stream, 512), data.subarray(0, 512));
  });

  test(`${name}: streams of every zlib strategy and level decode`, async () => {
    const data = sampleCluster(65536, 22);
    const variants: Record<string, number>[] = [
      { windowBits: 12, memLevel: 9 }, { level: 0 }, { level: 1 }, { level: 9 }, { windowBits: 15 },
      { strategy: 2 /* Z_HUFFMAN_ONLY */ }, { strategy: 3 /* Z_RLE */ }, { strategy: 4 /* Z_FIXED */ },
    ];
    for (const options of variants) {
      const stream = sectorRound(deflateRaw(data, options), randomBytes(512, 1));
      assert.deepEqual(await decodes(dec, stream, 65536), data, JSON.stringify(options));
    }
  });
}

/** zstd decoder behaviour beyond the contract: several frames per cluster, as QEMU reads them. */
export function zstdDecoderContract(name: string, dec: ClusterDecompressor,
  compress: (data: Uint8Array) => Uint8Array): void {
  const concat = (...parts: Uint8Array[]): Uint8Array => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.byteLength; }
    return out;
  };
  const skippable = Uint8Array.of(0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3);

  test(`${name}: several frames fill one cluster, skippable frames are skipped`, async () => {
    const data = sampleCluster(65536, 31);
    const parts = [data.subarray(0, 10000), data.subarray(10000, 40000), data.subarray(40000)];
    const src = concat(compress(parts[0]!), skippable, compress(parts[1]!), compress(parts[2]!));
    assert.deepEqual(await decodes(dec, sectorRound(src, randomBytes(100, 2)), 65536), data);
  });

  test(`${name}: a frame without content size (raw blocks, 2 MiB)`, async () => {
    const size = 2 * 1024 * 1024;
    const data = sampleCluster(size, 32);
    // Frame header: no content size, window descriptor 2 MiB (log 21 => exponent 11).
    const parts: Uint8Array[] = [Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0x00, 11 << 3)];
    const blockSize = 128 * 1024;
    for (let at = 0; at < size; at += blockSize) {
      const header = ((at + blockSize >= size ? 1 : 0) | (blockSize << 3)) >>> 0;
      parts.push(Uint8Array.of(header & 0xff, (header >>> 8) & 0xff, (header >>> 16) & 0xff));
      parts.push(data.subarray(at, at + blockSize));
    }
    assert.deepEqual(await decodes(dec, sectorRound(concat(...parts)), size), data);
  });

  test(`${name}: a frame larger than the cluster fails`, async () => {
    const stream = compress(sampleCluster(65536, 33));
    await assertDecompressFails(dec, stream, 4096);
    await assertDecompressFails(dec, stream, 65535);
  });

  test(`${name}: only skippable frames, or junk between frames, fail`, async () => {
    await assertDecompressFails(dec, concat(skippable, skippable), 512);
    const data = sampleCluster(8192, 34);
    const src = concat(compress(data.subarray(0, 4096)), Uint8Array.of(0, 0, 0, 0), compress(data.subarray(4096)));
    await assertDecompressFails(dec, src, 8192);
  });
}
