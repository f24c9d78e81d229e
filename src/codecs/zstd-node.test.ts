import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { compress, decompress } from '@bokuweb/zstd-wasm';
import { Qcow2Error } from '../errors.js';
import { codecContract, zstdDecoderContract } from './codec-contract.test.helper.js';
import { sampleCluster, sectorRound } from './codec-samples.test.helper.js';
import { initZstdWasm } from './zstd-wasm.js';
import { ZstdWorkerPool, defaultZstdThreads, zstdInThreadCompressor, zstdInThreadDecompressor } from './zstd-node.js';

await initZstdWasm(); // never the package's init() as well: see initZstdWasm
const encode = (data: Uint8Array): Uint8Array => compress(data, 3);
const pool = new ZstdWorkerPool({ threads: 2 });
test.after(() => pool.close());

codecContract({
  name: 'zstd-node pool',
  decompressor: pool.decompressor,
  compressor: pool.compressor,
  encode,
  referenceDecode: (stream) => decompress(stream),
});
zstdDecoderContract('zstd-node pool', pool.decompressor, encode);

codecContract({
  name: 'zstd-node in-thread',
  decompressor: zstdInThreadDecompressor,
  compressor: zstdInThreadCompressor,
  encode,
  referenceDecode: (stream) => decompress(stream),
});

test('zstd-node: the pool starts at most its thread count, lazily', async () => {
  const p = new ZstdWorkerPool({ threads: 2 });
  assert.equal(p.running, 0);
  const data = sampleCluster(65536, 1);
  const stream = sectorRound(encode(data));
  await Promise.all(Array.from({ length: 8 }, () => p.decompressor.decompress(stream, new Uint8Array(65536))));
  assert.equal(p.running, 2);
  await p.close();
  assert.equal(p.running, 0);
});

test('zstd-node: close() with work in flight finishes that work, and the pool stays usable', async () => {
  const p = new ZstdWorkerPool({ threads: 2 });
  const clusters = Array.from({ length: 16 }, (_, i) => sampleCluster(65536, 40 + i));
  const outs = clusters.map(() => new Uint8Array(65536));
  const pending = clusters.map((d, i) => p.decompressor.decompress(sectorRound(encode(d)), outs[i]!));
  await p.close();
  await Promise.all(pending);
  outs.forEach((o, i) => assert.deepEqual(o, clusters[i]));
  const again = new Uint8Array(65536);
  await p.decompressor.decompress(encode(clusters[0]!), again);
  assert.deepEqual(again, clusters[0]);
  await p.close();
});

test('zstd-node: workers that die or never start fall back to the calling thread', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-zstd-'));
  const dying = join(dir, 'dying-worker.mjs');
  writeFileSync(dying, 'process.exit(3);\n');
  for (const workerUrl of [pathToFileURL(dying), pathToFileURL(join(dir, 'missing-worker.mjs'))]) {
    const p = new ZstdWorkerPool({ threads: 2, workerUrl });
    const clusters = Array.from({ length: 6 }, (_, i) => sampleCluster(4096, 60 + i));
    const outs = await Promise.all(clusters.map(async (d) => {
      const out = new Uint8Array(4096);
      await p.decompressor.decompress(encode(d), out);
      return out;
    }));
    outs.forEach((o, i) => assert.deepEqual(o, clusters[i]));
    assert.ok(await p.compressor.compress(clusters[0]!));
    await assert.rejects(p.decompressor.decompress(new Uint8Array(512), new Uint8Array(512)), { code: 'DECOMPRESS' });
    await p.close();
  }
});

test('zstd-node: invalid thread counts are rejected', () => {
  for (const threads of [-1, 1.5, 65, Number.NaN]) {
    assert.throws(() => new ZstdWorkerPool({ threads }), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT');
  }
  assert.ok(defaultZstdThreads() >= 1 && defaultZstdThreads() <= 4);
});

test('zstd-node: threads: 0 decodes in the calling thread', async () => {
  const p = new ZstdWorkerPool({ threads: 0 });
  const data = sampleCluster(65536, 70);
  const out = new Uint8Array(65536);
  await p.decompressor.decompress(encode(data), out);
  assert.deepEqual(out, data);
  assert.equal(p.running, 0);
});

function runChild(code: string): Promise<{ code: number | null; stdout: string; ms: number }> {
  const start = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', code], { timeout: 20000, cwd: process.cwd() },
      (err, stdout) => resolve({ code: err ? (err.code as number | null) ?? -1 : 0, stdout, ms: Date.now() - start }));
  });
}

const moduleUrl = new URL('./zstd-node.js', import.meta.url).href;

test('zstd-node: an idle pool does not keep the process alive', async () => {
  const r = await runChild(`
    import { ZstdWorkerPool } from ${JSON.stringify(moduleUrl)};
    const pool = new ZstdWorkerPool({ threads: 2 });
    const out = await pool.compressor.compress(new Uint8Array(65536));
    console.log('compressed', out.length > 0);
  `);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /compressed true/);
  assert.ok(r.ms < 15000);
});

test('zstd-node: a busy pool keeps the process alive until the work is done', async () => {
  const r = await runChild(`
    import { ZstdWorkerPool } from ${JSON.stringify(moduleUrl)};
    const pool = new ZstdWorkerPool({ threads: 1 });
    // Not awaited: only the worker holds the event loop open.
    pool.compressor.compress(new Uint8Array(2 * 1024 * 1024)).then((out) => console.log('done', out.length));
  `);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /done \d+/);
});
