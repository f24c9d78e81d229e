import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CompressionType } from './codec.js';
import { jsCodecs } from './codecs-js.js';
import { createNodeCodecs, nodeCodecs } from './codecs-node.js';
import { deflateNodeCompressor, deflateNodeDecompressor } from './deflate-node.js';
import { sampleCluster, sectorRound } from './codec-samples.test.helper.js';

test.after(() => nodeCodecs.close());

test('nodeCodecs zlib (worker threads) reads what node:zlib writes and the reverse', async () => {
  const cluster = new Uint8Array(65536).map((_, i) => (i % 97 < 50 ? 7 : i & 0xff));
  const viaPool = await nodeCodecs.compressor('zlib').compress(cluster);
  const viaZlib = await deflateNodeCompressor.compress(cluster);
  assert.ok(viaPool && viaZlib);
  const a = new Uint8Array(65536);
  const b = new Uint8Array(65536);
  await deflateNodeDecompressor.decompress(viaPool, a);
  await nodeCodecs.decompressor('zlib').decompress(viaZlib, b);
  assert.deepEqual(a, cluster);
  assert.deepEqual(b, cluster);
});

test('nodeCodecs refuses unknown compression types', () => {
  for (const type of ['lz4', 2] as unknown as CompressionType[]) {
    assert.throws(() => nodeCodecs.decompressor(type), { code: 'UNSUPPORTED' });
    assert.throws(() => nodeCodecs.compressor(type), { code: 'UNSUPPORTED' });
  }
});

test('node and JS codecs read each other\'s clusters', async () => {
  const data = sampleCluster(65536, 2);
  const threads0 = createNodeCodecs({ zstdThreads: 0 });
  const sets = [nodeCodecs, threads0, jsCodecs];
  for (const type of ['zlib', 'zstd'] as const) {
    for (const from of sets) {
      const stored = await from.compressor(type).compress(data);
      assert.ok(stored);
      for (const to of sets) {
        const dst = new Uint8Array(65536);
        await to.decompressor(type).decompress(sectorRound(stored, Uint8Array.of(0x5a)), dst);
        assert.deepEqual(dst, data);
      }
    }
  }
  await threads0.close();
});

test('createNodeCodecs validates the thread count', () => {
  assert.throws(() => createNodeCodecs({ zstdThreads: -2 }), { code: 'INVALID_ARGUMENT' });
});
