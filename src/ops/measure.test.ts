import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeImage } from './fake-image.test.helper.js';
import {
  formatMeasureHuman,
  formatMeasureJson,
  measureQcow2,
  measureRaw,
  persistentBitmapsSize,
  qcow2PreallocSize,
  qcow2RefcountMetadataSize,
  requiredSourceBytes,
} from './measure.js';

const KiB = 1024n;
const MiB = 1024n * KiB;
const GiB = 1024n * MiB;
const TiB = 1024n * GiB;

// Figures printed by qemu-img 7.2 `measure --size N -O qcow2 -o ...` on this machine.
const QEMU_FIGURES: readonly [string, Parameters<typeof measureQcow2>[0], bigint, bigint][] = [
  ['1G', { size: GiB }, 393216n, 1074135040n],
  ['1G refcount_bits=64', { size: GiB, refcountBits: 64n }, 524288n, 1074266112n],
  ['1G refcount_bits=1', { size: GiB, refcountBits: 1n }, 393216n, 1074135040n],
  ['1G refcount_bits=8,cluster_size=1k', { size: GiB, refcountBits: 8n, clusterSize: 1024n }, 9523200n, 1083265024n],
  ['1G falloc,extended_l2,2M,refcount_bits=2', { size: GiB, preallocation: 'falloc', extendedL2: true, clusterSize: 2n * MiB, refcountBits: 2n }, 1084227584n, 1084227584n],
  ['3G refcount_bits=64', { size: 3n * GiB, refcountBits: 64n }, 1048576n, 3222274048n],
  ['1T refcount_bits=1', { size: TiB, refcountBits: 1n }, 136577024n, 1099648204800n],
  ['256T refcount_bits=64', { size: 256n * TiB, refcountBits: 64n }, 68736450560n, 281543713161216n],
  ['100M refcount_bits=8,cluster_size=1k', { size: 100n * MiB, refcountBits: 8n, clusterSize: 1024n }, 931840n, 105789440n],
  ['65536 refcount_bits=8,cluster_size=1k', { size: 65536n, refcountBits: 8n, clusterSize: 1024n }, 5120n, 70656n],
  ['0 refcount_bits=8,cluster_size=1k', { size: 0n, refcountBits: 8n, clusterSize: 1024n }, 3072n, 3072n],
  ['1G compat=0.10,extended_l2=on', { size: GiB, compat: '0.10', extendedL2: true }, 524288n, 1074266112n],
  ['1G full', { size: GiB, preallocation: 'full' }, 1074135040n, 1074135040n],
  ['1G metadata', { size: GiB, preallocation: 'metadata' }, 393216n, 1074135040n],
];

test('qcow2 figures equal qemu-img 7.2 measure', async () => {
  for (const [what, options, required, fullyAllocated] of QEMU_FIGURES) {
    assert.deepEqual(await measureQcow2(options), { required, fullyAllocated }, what);
  }
});

test('refcount metadata fixed point and prealloc size', () => {
  assert.equal(qcow2RefcountMetadataSize(16388n, 65536n, 4, false), 131072n);
  // The generous increase adds half the table again before the last round.
  assert.ok(qcow2RefcountMetadataSize(1n << 30n, 512n, 4, true) > qcow2RefcountMetadataSize(1n << 30n, 512n, 4, false));
  assert.equal(qcow2PreallocSize(GiB, 65536n, 4, false), 1074135040n);
});

test('QEMU\'s errors, in its order', async () => {
  const fails = async (o: Parameters<typeof measureQcow2>[0], message: string): Promise<void> => {
    await assert.rejects(measureQcow2(o), (e: unknown) => (e as Error).message === message);
  };
  await fails({ size: 1n << 50n, clusterSize: 512n }, 'The image size is too large (try using a larger cluster size)');
  await fails({ clusterSize: 1000n }, 'Cluster size must be a power of two between 512 and 2048k');
  await fails({ clusterSize: (1n << 32n) + 65536n }, 'Cluster size must be a power of two between 512 and 2048k');
  await fails({ clusterSize: 4096n, extendedL2: true }, 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  await fails({ compat: 'v3' }, "Invalid compatibility level: 'v3'");
  await fails({ refcountBits: 3n }, 'Refcount width must be a power of two and may not exceed 64 bits');
  await fails({ refcountBits: 0n }, 'Refcount width must be a power of two and may not exceed 64 bits');
  await fails({ compat: '0.10', refcountBits: 8n }, 'Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  await fails({ preallocation: 'foo' }, 'invalid parameter value: foo');
  await fails({ encryptFormat: 'luks' }, "Parameter 'encrypt.key-secret' is required for cipher");
  // Cluster size is checked before the size.
  await fails({ size: 1n << 62n, clusterSize: 3n }, 'Cluster size must be a power of two between 512 and 2048k');
});

test('raw: sector-rounded size, or the source size', () => {
  assert.deepEqual(measureRaw(1000n), { required: 1024n, fullyAllocated: 1024n });
  assert.deepEqual(measureRaw(undefined), { required: 0n, fullyAllocated: 0n });
  const src = new FakeImage([{ length: 4096, kind: 'data' }]);
  assert.deepEqual(measureRaw(5n, src), { required: 4096n, fullyAllocated: 4096n });
});

test('required bytes of a source: data clusters only, each run extended to its cluster end', async () => {
  const src = new FakeImage([
    { length: 1000, kind: 'data' }, // cluster 0
    { length: 64 * 1024 - 1000, kind: 'zero' },
    { length: 70 * 1024, kind: 'unallocated' }, // to 134 KiB
    { length: 10 * 1024, kind: 'data' }, // 134..144 KiB: counts from the start of cluster 2
    { length: 200 * 1024, kind: 'zero' },
    { length: 512, kind: 'data' },
  ]);
  // Cluster 0: 64 KiB; from 134 KiB: 134 % 64 = 6 KiB + (192 - 134) KiB = 64 KiB; the last run: its cluster.
  assert.equal(await requiredSourceBytes({ image: src, bitmaps: undefined }, 65536n), 3n * 65536n);
  assert.equal(await requiredSourceBytes({ image: src, bitmaps: undefined, isHostHole: async () => true }, 65536n), 0n);
  const r = await measureQcow2({ clusterSize: 65536n, hasBackingFile: true }, { image: src, bitmaps: undefined });
  const empty = await measureQcow2({ size: BigInt(src.size), clusterSize: 65536n });
  assert.equal(r.required, empty.required + ((BigInt(src.size) + 65535n) / 65536n) * 65536n, 'with a backing file every cluster counts');
});

test('bitmaps size: as qemu-img reports for two bitmaps of a 100 MiB image', async () => {
  const bitmaps = [
    { name: 'bm1', granularityBits: 16 },
    { name: 'bitmap-two', granularityBits: 12 },
  ];
  assert.equal(persistentBitmapsSize(bitmaps, 100n * MiB, 65536n), 327680n);
  assert.equal(persistentBitmapsSize(bitmaps, 100n * MiB, 512n), 5632n);
  const src = new FakeImage([{ length: 1 << 20, kind: 'zero' }]);
  assert.equal((await measureQcow2({}, { image: src, bitmaps: [] })).bitmaps, 0n);
  assert.equal((await measureQcow2({ compat: '0.10' }, { image: src, bitmaps: [] })).bitmaps, undefined);
  assert.equal((await measureQcow2({}, { image: src, bitmaps: undefined })).bitmaps, undefined);
});

test('output: qemu-img\'s JSON (4 spaces, its key order, signed) and human lines', () => {
  assert.equal(formatMeasureJson({ required: 1n, fullyAllocated: 2n }), '{\n    "required": 1,\n    "fully-allocated": 2\n}\n');
  assert.equal(
    formatMeasureJson({ required: 1n, fullyAllocated: 2n, bitmaps: 0n }),
    '{\n    "bitmaps": 0,\n    "required": 1,\n    "fully-allocated": 2\n}\n',
  );
  assert.equal(formatMeasureJson({ required: 1n << 63n, fullyAllocated: 1n << 63n }), '{\n    "required": -9223372036854775808,\n    "fully-allocated": -9223372036854775808\n}\n');
  assert.equal(formatMeasureHuman({ required: 1n << 63n, fullyAllocated: 2n, bitmaps: 3n }), 'required size: 9223372036854775808\nfully allocated size: 2\nbitmaps size: 3\n');
});
