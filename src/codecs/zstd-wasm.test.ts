import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { compress, decompress } from '@bokuweb/zstd-wasm';
import { codecContract, zstdDecoderContract } from './codec-contract.test.helper.js';
import { sampleCluster, sectorRound } from './codec-samples.test.helper.js';
import { initZstdWasm, zstdWasmCompressor, zstdWasmDecompressor } from './zstd-wasm.js';
import { readZstdFrame } from './zstd-frame.js';

await initZstdWasm(); // never the package's init() as well: see initZstdWasm
const encode = (data: Uint8Array): Uint8Array => compress(data, 3);

codecContract({
  name: 'zstd-wasm',
  decompressor: zstdWasmDecompressor,
  compressor: zstdWasmCompressor,
  encode,
  referenceDecode: (stream) => decompress(stream),
});

zstdDecoderContract('zstd-wasm', zstdWasmDecompressor, encode);

test('zstd-wasm: initialisation is shared and idempotent', async () => {
  await Promise.all([initZstdWasm(), initZstdWasm()]);
  assert.equal(initZstdWasm(), initZstdWasm());
});

test('zstd-wasm: the frame walker measures real frames exactly', () => {
  for (const size of [512, 65536, 2 * 1024 * 1024]) {
    const frame = encode(sampleCluster(size, 3));
    assert.deepEqual(readZstdFrame(sectorRound(frame), 0), { length: frame.byteLength, skippable: false, contentSize: size });
  }
});

let zstdCli = true;
try { execFileSync('zstd', ['--version']); } catch { zstdCli = false; }

test('zstd-wasm: frames with content checksums from the zstd CLI', { skip: zstdCli ? false : 'zstd CLI not installed' }, async () => {
  const data = sampleCluster(65536, 4);
  const stream = new Uint8Array(execFileSync('zstd', ['-c', '-q', '--check', '-19'], { input: data }));
  assert.equal((stream[4] ?? 0) & 4, 4, 'checksum flag set');
  const dst = new Uint8Array(65536);
  await zstdWasmDecompressor.decompress(sectorRound(stream, Uint8Array.of(0xaa)), dst);
  assert.deepEqual(dst, data);
  // A damaged checksum is caught.
  const bad = stream.slice();
  bad[bad.byteLength - 1] = (bad[bad.byteLength - 1] ?? 0) ^ 1;
  await assert.rejects(zstdWasmDecompressor.decompress(bad, new Uint8Array(65536)), { code: 'DECOMPRESS' });
});

test('zstd-wasm: an application that initialised the package itself keeps working', async () => {
  const { execFile } = await import('node:child_process');
  const moduleUrl = new URL('./zstd-wasm.js', import.meta.url).href;
  const code = `
    import { init, compress, decompress } from '@bokuweb/zstd-wasm';
    import { zstdWasmDecompressor } from ${JSON.stringify(moduleUrl)};
    await init();
    const data = new Uint8Array(65536).map((_, i) => (i * 7) >> 5);
    const dst = new Uint8Array(65536);
    await zstdWasmDecompressor.decompress(compress(data, 3), dst);
    await new Promise((r) => setTimeout(r, 200)); // let any second instantiation finish
    const again = decompress(compress(data, 3));
    console.log(dst.every((b, i) => b === data[i]) && again.every((b, i) => b === data[i]) ? 'same' : 'different');
  `;
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', code], { cwd: new URL('../..', import.meta.url).pathname },
      (err, out) => (err ? reject(err) : resolve(out)));
  });
  assert.equal(stdout.trim(), 'same');
});
