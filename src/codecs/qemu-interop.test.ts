/**
 * Interop with QEMU itself: clusters compressed by qemu-img decode with every codec set,
 * and images whose clusters our compressors wrote pass `qemu-img check` and `compare`.
 * qemu-img must be installed; set QCOW2KIT_SKIP_QEMU=1 to skip on machines without it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CodecSet, CompressionType } from './codec.js';
import { jsCodecs } from './codecs-js.js';
import { createNodeCodecs, nodeCodecs } from './codecs-node.js';
import { randomBytes, sampleCluster } from './codec-samples.test.helper.js';
import { buildCompressedImage, readImageClusters } from './qcow2-compressed.test.helper.js';

const skip = process.env['QCOW2KIT_SKIP_QEMU'] === '1' ? 'QCOW2KIT_SKIP_QEMU=1' : false;
const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-codecs-'));
// nodeCodecs decodes zstd natively (zstd-napi) when the addon is built; this set uses WebAssembly.
const inThreadCodecs = createNodeCodecs({ zstdThreads: 0, zstdNative: false });
test.after(async () => {
  rmSync(dir, { recursive: true, force: true });
  await nodeCodecs.close();
  await inThreadCodecs.close();
});

const codecSets: [string, CodecSet][] = [['jsCodecs', jsCodecs], ['nodeCodecs', nodeCodecs], ['node in-thread, WebAssembly zstd', inThreadCodecs]];

function qemuImg(...args: string[]): { status: number | null; output: string } {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run qemu-img (install qemu-utils or set QCOW2KIT_SKIP_QEMU=1): ${r.error.message}`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** Real binary data: system libraries in a fixed order, or synthetic data where there are none. */
function libraryBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  const libDir = '/usr/lib/x86_64-linux-gnu';
  let names: string[] = [];
  try { names = readdirSync(libDir).sort(); } catch { /* not this platform */ }
  for (const name of names) {
    if (at >= size) break;
    const path = join(libDir, name);
    try {
      if (!statSync(path).isFile()) continue;
      const bytes = readFileSync(path);
      const take = Math.min(bytes.byteLength, size - at);
      out.set(bytes.subarray(0, take), at);
      at += take;
    } catch { /* unreadable: skip */ }
  }
  if (at < size) out.set(sampleCluster(size - at, 5), at);
  return out;
}

/** Library bytes, text-like data, zeros, noise (stored uncompressed) and a partial last cluster. */
function sourceImage(size: number, clusterSize: number): Uint8Array {
  const raw = new Uint8Array(size);
  const parts = [0.3, 0.2, 0.1, 0.1].map((f) => Math.floor((size * f) / 512) * 512);
  parts[3] = Math.max(parts[3]!, 2 * clusterSize + 512); // at least one whole incompressible cluster
  const lib = libraryBytes(size);
  let at = 0;
  raw.set(lib.subarray(0, parts[0]!), at); at += parts[0]!;
  raw.set(sampleCluster(parts[1]!, 3), at); at += parts[1]!;
  at += parts[2]!; // zeros
  raw.set(randomBytes(parts[3]!, 4), at); at += parts[3]!;
  raw.set(lib.subarray(at), at);
  return raw;
}

/** What a guest cluster holds: the raw bytes, zero-padded past the end. */
function expectedCluster(raw: Uint8Array, guestOffset: number, clusterSize: number): Uint8Array {
  const out = new Uint8Array(clusterSize);
  out.set(raw.subarray(guestOffset, guestOffset + clusterSize));
  return out;
}

const cases: { clusterSize: number; size: number }[] = [
  { clusterSize: 512, size: 1024 * 1024 + 3 * 512 },
  { clusterSize: 65536, size: 8 * 1024 * 1024 + 7 * 512 },
  { clusterSize: 2 * 1024 * 1024, size: 12 * 1024 * 1024 + 5 * 512 },
];

test('qemu-img is available', { skip }, () => {
  const r = qemuImg('--version');
  assert.equal(r.status, 0, r.output);
});

for (const type of ['zlib', 'zstd'] as CompressionType[]) {
  for (const { clusterSize, size } of cases) {
    const label = `${type}, ${clusterSize}-byte clusters`;
    const rawPath = join(dir, `src-${clusterSize}.raw`);
    const raw = sourceImage(size, clusterSize);

    test(`qemu-img convert -c (${label}): every compressed cluster decodes with every codec set`, { skip }, async () => {
      writeFileSync(rawPath, raw);
      const imgPath = join(dir, `qemu-${type}-${clusterSize}.qcow2`);
      const options = `cluster_size=${clusterSize}${type === 'zstd' ? ',compression_type=zstd' : ''}`;
      const made = qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', options, rawPath, imgPath);
      assert.equal(made.status, 0, made.output);

      const image = readFileSync(imgPath);
      const layout = readImageClusters(new Uint8Array(image.buffer, image.byteOffset, image.byteLength));
      assert.equal(layout.clusterSize, clusterSize);
      assert.equal(layout.compressionType, type);
      assert.ok(layout.compressed.length > 0, 'qemu-img compressed some clusters');
      assert.ok(layout.plain.length > 0, 'qemu-img stored the noise uncompressed');
      for (const p of layout.plain) {
        assert.deepEqual(image.subarray(p.hostOffset, p.hostOffset + clusterSize),
          Buffer.from(expectedCluster(raw, p.guestOffset, clusterSize)), `plain cluster at ${p.guestOffset}`);
      }
      // Packed clusters: the sector-rounded read must carry bytes of a neighbour sometimes.
      assert.ok(layout.compressed.some((c) => (c.hostOffset & 511) !== 0), 'some clusters start mid-sector');

      for (const [name, codecs] of codecSets) {
        const dec = codecs.decompressor(type);
        const batch = 16;
        for (let i = 0; i < layout.compressed.length; i += batch) {
          await Promise.all(layout.compressed.slice(i, i + batch).map(async (c) => {
            const dst = new Uint8Array(clusterSize);
            await dec.decompress(c.bytes, dst);
            assert.deepEqual(dst, expectedCluster(raw, c.guestOffset, clusterSize), `${name}: cluster at ${c.guestOffset}`);
          }));
        }
      }
    });

    for (const [name, codecs] of codecSets.slice(0, 2)) {
      test(`${name} compressor (${label}): qemu-img check and compare accept the image`, { skip }, async () => {
        writeFileSync(rawPath, raw);
        const comp = codecs.compressor(type);
        const image = await buildCompressedImage(raw, clusterSize, type, (c) => comp.compress(c));
        const layout = readImageClusters(image);
        assert.ok(layout.compressed.length > 0 && layout.plain.length > 0);
        const imgPath = join(dir, `ours-${name.replace(/\W/g, '')}-${type}-${clusterSize}.qcow2`);
        writeFileSync(imgPath, image);
        const check = qemuImg('check', '-f', 'qcow2', imgPath);
        assert.equal(check.status, 0, check.output);
        assert.match(check.output, /No errors were found/);
        const info = qemuImg('info', '--output=json', imgPath);
        assert.equal(JSON.parse(info.output)['format-specific'].data['compression-type'], type);
        const compare = qemuImg('compare', '-f', 'qcow2', '-F', 'raw', imgPath, rawPath);
        assert.equal(compare.status, 0, compare.output);
      });
    }
  }
}
