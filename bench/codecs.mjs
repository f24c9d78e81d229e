#!/usr/bin/env node
// Cluster codec throughput on qemu-img-compressed images of real data.
//
//   npm run build && node bench/codecs.mjs [--size MiB] [--cluster-size bytes] [--dir path] [--rounds n]
//                                          [--types zlib,zstd] [--no-compress]
//
// Builds (once, cached in --dir) a raw image from the system's shared libraries and
// compresses it with `qemu-img convert -c` as zlib and zstd qcow2. Then decodes every
// compressed cluster: single-thread loops (JS, node:zlib sync, WebAssembly zstd) and the
// async codec API with many requests in flight (libuv pool for zlib, worker pool for
// zstd). MiB/s counts decompressed bytes. A small compression run follows.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, openSync, writeSync, closeSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { inflateRawInto } from '../dist/codecs/inflate-raw.js';
import { deflateRawWindow4k } from '../dist/codecs/deflate-raw.js';
import { initZstdWasm, zstdDecompressSync, zstdCompressSync } from '../dist/codecs/zstd-wasm.js';
import { jsCodecs } from '../dist/codecs/codecs-js.js';
import { createNodeCodecs } from '../dist/codecs/codecs-node.js';
import { readImageClusters } from '../dist/codecs/qcow2-compressed.test.helper.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const sizeMiB = Number(opt('size', 256));
const clusterSize = Number(opt('cluster-size', 65536));
const dir = opt('dir', join(os.tmpdir(), 'qcow2kit-bench'));
const rounds = Number(opt('rounds', 3));
const types = opt('types', 'zlib,zstd').split(',');
const depth = 32;

mkdirSync(dir, { recursive: true });
const rawPath = join(dir, `libs-${sizeMiB}m.raw`);
if (!existsSync(rawPath)) {
  // Concatenate shared libraries (a fixed order) until the size is reached.
  const want = sizeMiB * 1024 * 1024;
  const fd = openSync(rawPath, 'w');
  let have = 0;
  const libDir = '/usr/lib/x86_64-linux-gnu';
  for (const name of readdirSync(libDir).sort()) {
    if (have >= want) break;
    const path = join(libDir, name);
    let bytes;
    try { if (!statSync(path).isFile()) continue; bytes = readFileSync(path); } catch { continue; }
    const take = bytes.subarray(0, Math.min(bytes.length, want - have));
    writeSync(fd, take);
    have += take.length;
  }
  closeSync(fd);
  if (have < want) throw new Error(`only ${have} bytes of libraries found`);
}

function qemuImage(type) {
  const path = join(dir, `libs-${sizeMiB}m-${clusterSize}-${type}.qcow2`);
  if (!existsSync(path)) {
    const t = performance.now();
    const o = `cluster_size=${clusterSize}${type === 'zstd' ? ',compression_type=zstd' : ''}`;
    const r = spawnSync('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', o, rawPath, path], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('qemu-img convert failed');
    console.log(`qemu-img convert -c (${type}) took ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const bytes = readFileSync(path);
  return readImageClusters(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

const mib = (clusters) => (clusters * clusterSize) / (1024 * 1024);
const fmt = (v) => v.toFixed(0).padStart(6);

function bestOf(fn) {
  let best = 0;
  for (let r = 0; r < rounds; r++) best = Math.max(best, fn());
  return best;
}
async function bestOfAsync(fn) {
  let best = 0;
  for (let r = 0; r < rounds; r++) best = Math.max(best, await fn());
  return best;
}

function syncLoop(clusters, decode) {
  const dst = new Uint8Array(clusterSize);
  const t = performance.now();
  for (const c of clusters) decode(c.bytes, dst);
  return mib(clusters.length) / ((performance.now() - t) / 1000);
}

async function asyncLoop(clusters, dec) {
  const t = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: depth }, async () => {
    const dst = new Uint8Array(clusterSize);
    while (next < clusters.length) await dec.decompress(clusters[next++].bytes, dst);
  }));
  return mib(clusters.length) / ((performance.now() - t) / 1000);
}

async function asyncCompress(clusters, comp) {
  const t = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: depth }, async () => {
    while (next < clusters.length) await comp.compress(clusters[next++]);
  }));
  return mib(clusters.length) / ((performance.now() - t) / 1000);
}

await initZstdWasm();
console.log(`node ${process.version}, ${os.availableParallelism()} CPUs, ${sizeMiB} MiB of libraries, ` +
  `${clusterSize}-byte clusters, best of ${rounds}, ${depth} requests in flight for async rows`);
console.log('decompression, MiB/s of cluster data:');

const results = {};
for (const type of types) {
  const img = qemuImage(type);
  const clusters = img.compressed;
  const stored = clusters.reduce((n, c) => n + c.bytes.length, 0);
  console.log(`  ${type}: ${clusters.length} compressed clusters (${mib(clusters.length).toFixed(0)} MiB -> ` +
    `${(stored / 1048576).toFixed(0)} MiB read), ${img.plain.length} stored plain`);
  const rows = [];
  if (type === 'zlib') {
    rows.push(['JS inflater, one thread (sync loop)', bestOf(() => syncLoop(clusters, inflateRawInto))]);
    rows.push(['node:zlib inflateRawSync, one thread', bestOf(() => syncLoop(clusters, (src, dst) => {
      dst.set(zlib.inflateRawSync(src, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: dst.length }));
    }))]);
    rows.push(['jsCodecs (JS inflater, async API)', await bestOfAsync(() => asyncLoop(clusters, jsCodecs.decompressor('zlib')))]);
    const node = createNodeCodecs();
    rows.push([`nodeCodecs (node:zlib on libuv pool, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4})`,
      await bestOfAsync(() => asyncLoop(clusters, node.decompressor('zlib')))]);
    await node.close();
  } else {
    rows.push(['WebAssembly zstd, one thread (sync loop)', bestOf(() => syncLoop(clusters, zstdDecompressSync))]);
    rows.push(['jsCodecs (WebAssembly, async API)', await bestOfAsync(() => asyncLoop(clusters, jsCodecs.decompressor('zstd')))]);
    for (const threads of [0, 1, 2, 4]) {
      const node = createNodeCodecs({ zstdThreads: threads });
      await asyncLoop(clusters.slice(0, 256), node.decompressor('zstd')); // start and warm the workers
      rows.push([threads === 0 ? 'nodeCodecs, zstdThreads 0 (in-thread)' : `nodeCodecs, zstd worker pool of ${threads}`,
        await bestOfAsync(() => asyncLoop(clusters, node.decompressor('zstd')))]);
      await node.close();
    }
  }
  for (const [name, v] of rows) console.log(`    ${fmt(v)}  ${name}`);
  results[type] = Object.fromEntries(rows);
}

if (args.includes('--no-compress')) process.exit(0);

// Compression on the first 32 MiB of compressible clusters (decoded back from the zstd image).
console.log('compression, MiB/s of cluster data (first 32 MiB):');
const img = qemuImage('zstd');
const sample = [];
for (const c of img.compressed.slice(0, Math.floor((32 * 1048576) / clusterSize))) {
  const dst = new Uint8Array(clusterSize);
  zstdDecompressSync(c.bytes, dst);
  sample.push(dst);
}
const crow = (name, v) => console.log(`    ${fmt(v)}  ${name}`);
crow('zlib: JS deflater (4 KiB window), one thread', bestOf(() => {
  const t = performance.now();
  for (const c of sample) deflateRawWindow4k(c, c.length);
  return mib(sample.length) / ((performance.now() - t) / 1000);
}));
{
  const node = createNodeCodecs();
  crow('zlib: nodeCodecs (node:zlib on libuv pool)', await bestOfAsync(() => asyncCompress(sample, node.compressor('zlib'))));
  crow('zstd: WebAssembly, one thread', bestOf(() => {
    const t = performance.now();
    for (const c of sample) zstdCompressSync(c);
    return mib(sample.length) / ((performance.now() - t) / 1000);
  }));
  await asyncCompress(sample.slice(0, 64), node.compressor('zstd'));
  crow(`zstd: nodeCodecs worker pool (default size)`, await bestOfAsync(() => asyncCompress(sample, node.compressor('zstd'))));
  await node.close();
}
