import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CompressionType } from './codec.js';
import { jsCodecs } from './codecs-js.js';
import { deflateJsCompressor, deflateJsDecompressor } from './deflate-js.js';
import { zstdWasmCompressor, zstdWasmDecompressor } from './zstd-wasm.js';
import { sampleCluster } from './codec-samples.test.helper.js';

test('jsCodecs picks the JavaScript deflate and WebAssembly zstd codecs', () => {
  assert.equal(jsCodecs.decompressor('zlib'), deflateJsDecompressor);
  assert.equal(jsCodecs.compressor('zlib'), deflateJsCompressor);
  assert.equal(jsCodecs.decompressor('zstd'), zstdWasmDecompressor);
  assert.equal(jsCodecs.compressor('zstd'), zstdWasmCompressor);
});

test('jsCodecs refuses unknown compression types', () => {
  for (const type of ['lz4', '', undefined] as unknown as CompressionType[]) {
    assert.throws(() => jsCodecs.decompressor(type), { code: 'UNSUPPORTED' });
    assert.throws(() => jsCodecs.compressor(type), { code: 'UNSUPPORTED' });
  }
});

test('jsCodecs round trip for both types', async () => {
  const data = sampleCluster(65536, 1);
  for (const type of ['zlib', 'zstd'] as const) {
    const stored = await jsCodecs.compressor(type).compress(data);
    assert.ok(stored);
    const dst = new Uint8Array(65536);
    await jsCodecs.decompressor(type).decompress(stored, dst);
    assert.deepEqual(dst, data);
  }
});
