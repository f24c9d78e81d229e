import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compress, decompress } from '@bokuweb/zstd-wasm';
import { Qcow2Error } from '../errors.js';
import type { ClusterCompressor, ClusterDecompressor } from './codec.js';
import { assertDecompressFails, codecContract, zstdDecoderContract } from './codec-contract.test.helper.js';
import { randomBytes, sampleCluster, sectorRound } from './codec-samples.test.helper.js';
import { initZstdWasm } from './zstd-wasm.js';
import { nativeZstdCompressor, nativeZstdDecompressor, zstdNativeAvailable } from './zstd-native.js';

await initZstdWasm();
const encode = (data: Uint8Array): Uint8Array => compress(data, 3);

// The addon is an optional dependency; scripts/test.sh installs the compiler npm needs to build
// it. QCOW2KIT_NO_NATIVE_ZSTD=1 accepts its absence (only the fallback is tested then).
const optOut = process.env.QCOW2KIT_NO_NATIVE_ZSTD === '1';

/** Fallbacks that fail the test if they are ever used: every call must be native. */
const noFallback: ClusterDecompressor = {
  decompress: () => Promise.reject(new Error('the WebAssembly fallback was used')),
};
const noFallbackCompressor: ClusterCompressor = {
  compress: () => Promise.reject(new Error('the WebAssembly fallback was used')),
};

test('zstd-native: the zstd-napi addon loads', { skip: optOut ? 'QCOW2KIT_NO_NATIVE_ZSTD=1' : false }, () => {
  assert.ok(zstdNativeAvailable(), 'zstd-napi did not load: run `npm rebuild zstd-napi` with g++, make and python3 installed');
});

if (zstdNativeAvailable()) {
  const dec = nativeZstdDecompressor(noFallback);
  zstdDecoderContract('zstd-native', dec, encode);
  // The native encoder against the WebAssembly library as the independent reference.
  codecContract({
    name: 'zstd-native',
    decompressor: dec,
    compressor: nativeZstdCompressor(noFallbackCompressor),
    encode,
    referenceDecode: (stream) => decompress(stream),
  });

  test('zstd-native: clusters of every size, sector-rounded with trailing bytes', async () => {
    for (const size of [512, 4096, 65536, 2 * 1024 * 1024]) {
      const data = sampleCluster(size, size + 1);
      const dst = new Uint8Array(size);
      await dec.decompress(sectorRound(encode(data), randomBytes(512, 4)), dst);
      assert.deepEqual(dst, data);
    }
  });

  test('zstd-native: short, truncated and garbage input fail with DECOMPRESS', async () => {
    const stream = encode(sampleCluster(65536, 14));
    for (const cut of [0, 5, stream.byteLength >> 1]) await assertDecompressFails(dec, stream.subarray(0, cut), 65536);
    await assertDecompressFails(dec, encode(sampleCluster(32768, 13)), 65536);
    for (let seed = 1; seed <= 10; seed++) await assertDecompressFails(dec, randomBytes(512, seed), 65536);
  });

  test('zstd-native: a frame bigger than the cluster fails without writing past it', async () => {
    const dstBuffer = new Uint8Array(4096 + 64);
    const dst = dstBuffer.subarray(0, 4096);
    await assert.rejects(dec.decompress(encode(sampleCluster(8192, 3)), dst), (e: unknown) => e instanceof Qcow2Error && e.code === 'DECOMPRESS');
    assert.deepEqual(dstBuffer.subarray(4096), new Uint8Array(64));
  });
}
