import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { Qcow2Error } from '../../errors.js';
import { openImage } from '../../image/open-image.js';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { readU64, viewOf } from '../../util/bytes.js';
import { MAX_WRITE, planQcow2Image, writeQcow2Image, type Qcow2ImagePlan } from './create-layout.js';
import { resolveQcow2CreateOptions, type Qcow2CreateRequest } from './create-options.js';
import { decodeExtensions, decodeStringExtension, EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_FEATURE_TABLE, findExtension } from './header-extensions.js';
import { decodeBackingName, decodeHeader } from './header.js';
import { decodeReftableEntry, getRefcount } from './refcount-codec.js';

const MiB = 1 << 20;

function plan(req: Qcow2CreateRequest): Qcow2ImagePlan {
  return planQcow2Image(resolveQcow2CreateOptions(req));
}

async function materialize(p: Qcow2ImagePlan): Promise<{ image: Uint8Array; data: Uint8Array | undefined }> {
  const image = new MemoryStorage();
  const data = p.dataFile === undefined ? undefined : new MemoryStorage();
  await writeQcow2Image(p, image, data);
  return { image: image.bytes(), data: data?.bytes() };
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Images made by `qemu-img create -q -f qcow2 -u -o OPTIONS img.qcow2 SIZE` (7.2.22, in an
 * empty directory, data file "d.raw"): SHA-256 and length of the image and of the data file.
 */
const QEMU_IMAGES: readonly [number, Omit<Qcow2CreateRequest, 'size'>, string, number, [string, number]?][] = [
  [1048576, {}, '0e7db0d4ad0a3b83d343a88d5991fc5024f7a9ec21c1d0e5f15261ebc3fd587e', 196616],
  [0, { preallocation: 'falloc' }, '57f73c77a13766cbe0245b792a766abc8b530392fe4d413fe9a604d0fec07af5', 262144],
  [1000, { preallocation: 'metadata' }, 'cffa2c0bfd5d176f87fe524491baadb6dc0e26c6c708c1382a0894494b64bb85', 393216],
  [1000, { extendedL2: true, preallocation: 'metadata' }, 'e88cb20cb9beb6a192bfd1a7d3184856b9482105e718771ecf006368cea5b655', 329728],
  [10485760, { clusterSize: 1024, refcountBits: 64, preallocation: 'metadata' }, '2e10690b7a8cc21dfd1521e47974a5c6b2d4780b26608d218cf391c5176a7686', 10654720],
  [10485760, { clusterSize: 512, refcountBits: 16, preallocation: 'falloc' }, 'db2470c0d7376b709a2cd2ea48862ee51d633a501bdb9926a5c26966213ac124', 10695680],
  [10485760, { clusterSize: 512, refcountBits: 1, preallocation: 'metadata' }, 'dfa118543f74de6875c119a6fda94b8dc8c70141b25be856b25c7085325f5497', 10656256],
  [104857600, { clusterSize: 4096, refcountBits: 2, preallocation: 'metadata' }, 'c1f4f051805cce2faa75bfba0aef01787dccf25c1974051d26e3a0803441bbc9', 105082880],
  [33554432, { clusterSize: 2 * MiB, preallocation: 'full' }, 'c5693c8197de2eee6e4fc5596ea3aec666f1817b5e4c4bce00d7c69eb54156a3', 44040192],
  [3221225984, { compat: '0.10', backingFile: 'base.qcow2', backingFormat: 'qcow2' }, '501eaf1425088d45b7b23e459a3c79906629f3882941fae05116fe53cd0f8314', 196664],
  [1048576, { compressionType: 'zstd', lazyRefcounts: true, refcountBits: 8 }, '8325693fd837695e11368293e0dd84a045ff67c8868e842f714e6a9cb2b0c35e', 196616],
  [
    1048576,
    { clusterSize: 16384, extendedL2: true, preallocation: 'falloc', backingFile: 'b.img', backingFormat: 'raw' },
    'b70d8b1006704aa0abd6ad2119d9d26fc8d49d659fb90e019f472a9d128c7d28',
    1130496,
  ],
  [
    3000,
    { dataFile: 'd.raw', extendedL2: true, preallocation: 'metadata' },
    'f44b73f29e927465815a940437f97ff6d9b18e1372f1a0d524cb29841eb798db',
    327680,
    ['ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7', 4096],
  ],
  [
    1048576,
    { dataFile: 'd.raw', dataFileRaw: true },
    '23574f1826e2a861f2a4f83b28354e1acfdce16b3f8265f40d7077d454015b02',
    327680,
    ['30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58', 1048576],
  ],
  [137438953472, { clusterSize: 512 }, 'e0510873a13f01f4a3e2e6fe56d9b4b569f8db473969011e5f4c41b7aef50f76', 33691648],
];

/**
 * An independent check of a new image, like `qemu-img check`: every cluster's refcount equals
 * the number of references to it (header, refcount table and blocks, L1, L2 tables, data), L1
 * and L2 entries carry the COPIED flag, and no refcount is set beyond the file.
 */
function checkConsistent(bytes: Uint8Array, hasDataFile: boolean): { allocated: number; mapped: number } {
  const h = decodeHeader(bytes);
  const cs = 2 ** h.clusterBits;
  const v = viewOf(bytes);
  const clusters = Math.ceil(bytes.byteLength / cs);
  const refs = new Uint8Array(clusters + 1);
  const ref = (offset: number, what: string): void => {
    assert.equal(offset % cs, 0, `${what} at ${offset} is not cluster aligned`);
    const c = offset / cs;
    assert.ok(c < clusters, `${what} at ${offset} lies beyond the end of the file`);
    refs[c]!++;
  };
  ref(0, 'header');
  for (let i = 0; i < h.refcountTableClusters; i++) ref(h.refcountTableOffset + i * cs, 'refcount table');
  const reftable = bytes.subarray(h.refcountTableOffset, h.refcountTableOffset + h.refcountTableClusters * cs);
  const blocks: number[] = [];
  for (let i = 0; i < reftable.byteLength / 8; i++) {
    const e = decodeReftableEntry(reftable, i);
    assert.equal(e.reserved, 0);
    blocks.push(e.offset);
    if (e.offset !== 0) ref(e.offset, `refcount block ${i}`);
  }
  for (let i = 0; i < Math.ceil((h.l1Size * 8) / cs); i++) ref(h.l1TableOffset + i * cs, 'L1 table');
  const extL2 = (h.incompatibleFeatures.lo & 0x10) !== 0;
  const entrySize = extL2 ? 16 : 8;
  let mapped = 0;
  for (let i = 0; i < h.l1Size; i++) {
    const hi = v.getUint32(h.l1TableOffset + i * 8);
    const l2 = (hi & 0x00ffffff) * 2 ** 32 + v.getUint32(h.l1TableOffset + i * 8 + 4);
    if (l2 === 0) continue;
    assert.ok(hi & 0x80000000, `L1 entry ${i} without COPIED`);
    ref(l2, `L2 table ${i}`);
    for (let j = 0; j < cs / entrySize; j++) {
      const at = l2 + j * entrySize;
      const ehi = v.getUint32(at);
      const elo = v.getUint32(at + 4);
      if (ehi === 0 && elo === 0) continue;
      assert.ok(ehi & 0x80000000, `L2 ${i} entry ${j} without COPIED`);
      if (extL2) assert.equal(readU64(v, at + 8), 0, 'preallocated subclusters stay unallocated');
      mapped++;
      if (!hasDataFile) ref((ehi & 0x00ffffff) * 2 ** 32 + elo, `data of L2 ${i} entry ${j}`);
      else assert.equal((ehi & 0x00ffffff) * 2 ** 32 + elo, (i * (cs / entrySize) + j) * cs, 'data file clusters map 1:1');
    }
  }
  const perBlock = (cs * 8) >> h.refcountOrder;
  let allocated = 0;
  for (let b = 0; b < blocks.length; b++) {
    if (blocks[b] === 0) {
      for (let c = b * perBlock; c < Math.min(clusters, (b + 1) * perBlock); c++) assert.equal(refs[c], 0, `cluster ${c} is used but has no refcount block`);
      continue;
    }
    const block = bytes.subarray(blocks[b], blocks[b]! + cs);
    for (let k = 0; k < perBlock; k++) {
      const c = b * perBlock + k;
      const rc = getRefcount(block, k, h.refcountOrder);
      const want = c < clusters ? refs[c]! : 0;
      if (rc !== want) assert.fail(`cluster ${c}: refcount ${rc}, referenced ${want} times`);
      if (rc > 0) allocated++;
    }
  }
  for (let c = blocks.length * perBlock; c < clusters; c++) assert.equal(refs[c], 0, `cluster ${c} is used but not covered by a refcount block`);
  return { allocated, mapped };
}

describe('create-layout', () => {
  for (const [size, req, hash, length, data] of QEMU_IMAGES) {
    test(`byte-identical to qemu-img: size ${size} ${JSON.stringify(req)}`, async () => {
      const p = plan({ ...req, size });
      assert.equal(p.image.length, length);
      const out = await materialize(p);
      assert.equal(out.image.byteLength, length);
      assert.equal(sha256(out.image), hash);
      if (data === undefined) assert.equal(out.data, undefined);
      else {
        assert.ok(out.data !== undefined);
        assert.equal(out.data.byteLength, data[1]);
        assert.equal(sha256(out.data), data[0]);
      }
    });
  }

  test('the layout of a 5 GiB metadata-preallocated image matches qemu-img (refcount blocks after the data they cover)', () => {
    const p = plan({ size: 5 * 1024 * MiB, preallocation: 'metadata' });
    assert.equal(p.image.length, 5369757696);
    assert.deepEqual(p.summary.refblockOffsets, [0x20000, 0x80080000, 0x1000d0000]);
    assert.equal(p.summary.l1Offset, 0x30000);
    assert.equal(p.summary.l1Size, 10);
    assert.equal(p.summary.l2Tables, 10);
    assert.equal(p.summary.mappedClusters, 81920);
    assert.equal(p.summary.allocatedClusters, 81936);
    assert.equal(p.image.preallocated, undefined);
  });

  test('falloc puts the data after a new refcount table and L2 tables in the freed old table', () => {
    const p = plan({ size: 5 * 1024 * MiB, preallocation: 'falloc' });
    assert.equal(p.summary.refcountTableOffset, 0x60000);
    assert.deepEqual(p.summary.refblockOffsets, [0x20000, 0x40000, 0x50000]);
    assert.deepEqual(p.image.preallocated, { offset: 0x70000, length: 5 * 1024 * MiB, mode: 'falloc' });
    const writes = [...p.writes()];
    const l2s = writes.filter((w) => w.offset === 0x10000 || w.offset === 0x140070000);
    assert.equal(l2s.length, 3, 'the stale table at 0x10000, then the L2 table over it, then the next L2 table');
    assert.deepEqual([...writes[0]!.bytes.subarray(0, 8)], [0, 0, 0, 0, 0, 2, 0, 0], 'first write: the abandoned refcount table');
  });

  test('a 2 PiB image needs a 32 MiB L1 table, written in pieces', () => {
    const p = plan({ size: 2 ** 51 });
    assert.equal(p.header.l1Size, 4194304);
    assert.equal(p.image.length, 0x30000 + 32 * MiB);
    let l1Bytes = 0;
    for (const w of p.writes()) {
      assert.ok(w.bytes.byteLength <= MAX_WRITE);
      if (w.offset >= 0x30000) l1Bytes += w.bytes.byteLength;
    }
    assert.equal(l1Bytes, 32 * MiB);
  });

  test('sizes up to 2^61 with 2 MiB clusters; beyond, and past the L1 limit, fail like QEMU (EFBIG)', () => {
    assert.equal(plan({ size: 2 ** 60, clusterSize: 2 * MiB }).header.size, 2 ** 60);
    const efbig = (e: unknown): boolean => e instanceof Qcow2Error && e.context['errno'] === 'EFBIG';
    assert.throws(() => plan({ size: 2 ** 61 + 512, clusterSize: 2 * MiB }), efbig);
    assert.throws(() => plan({ size: 2 ** 51 + 512 }), efbig);
    assert.throws(() => plan({ size: 200 * 1024 ** 3, clusterSize: 512 }), efbig);
    assert.throws(() => plan({ size: 2 ** 63 }), (e: unknown) => e instanceof Qcow2Error && /cannot be negative/.test(e.message));
  });

  test('header: extensions in QEMU order, feature table only above 4 KiB clusters, backing name after the end marker', () => {
    const p = plan({ size: MiB, backingFile: 'base.img', backingFormat: 'copy-before-write', dataFile: 'data.raw', compressionType: 'zstd', lazyRefcounts: true });
    const cluster0 = [...p.writes()].find((w) => w.offset === 0)!.bytes;
    const h = decodeHeader(cluster0);
    assert.equal(h.headerLength, 112);
    assert.equal(h.compressionType, 1);
    assert.deepEqual(h.incompatibleFeatures, { hi: 0, lo: 0b1100 });
    assert.deepEqual(h.compatibleFeatures, { hi: 0, lo: 1 });
    const exts = decodeExtensions(cluster0, h.headerLength, h.backingFileOffset);
    assert.deepEqual(exts.map((e) => e.type), [EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_FEATURE_TABLE]);
    assert.equal(decodeStringExtension(findExtension(exts, EXT_BACKING_FORMAT)), 'copy-before-wri', 'QEMU keeps 15 bytes');
    assert.equal(decodeStringExtension(findExtension(exts, EXT_DATA_FILE)), 'data.raw');
    assert.equal(decodeBackingName(cluster0, h), 'base.img');
    const small = plan({ size: MiB, clusterSize: 4096 });
    const c0 = [...small.writes()].find((w) => w.offset === 0)!.bytes;
    assert.deepEqual(decodeExtensions(c0, 112, 4096), []);
    const v2 = plan({ size: MiB, compat: '0.10', backingFile: 'b', backingFormat: 'raw' });
    const h2 = decodeHeader([...v2.writes()].find((w) => w.offset === 0)!.bytes);
    assert.equal(h2.version, 2);
    assert.equal(h2.backingFileOffset, 72 + 16 + 8);
  });

  test('names that do not fit in cluster 0 fail as in QEMU', () => {
    assert.throws(
      () => plan({ size: MiB, clusterSize: 512, dataFile: 'd'.repeat(400) }),
      (e: unknown) => e instanceof Qcow2Error && e.message === 'Could not update qcow2 header: No space left on device',
    );
    assert.throws(
      () => plan({ size: MiB, clusterSize: 512, backingFile: 'a'.repeat(377), backingFormat: 'qcow2' }),
      (e: unknown) => e instanceof Qcow2Error && /^Could not assign backing file 'a+' with format 'qcow2': No space left on device$/.test(e.message),
    );
    // 112 header + 16 backing format extension + 8 end marker + 376 = 512.
    assert.equal(plan({ size: MiB, clusterSize: 512, backingFile: 'a'.repeat(376), backingFormat: 'qcow2' }).header.backingFileSize, 376);
    assert.throws(
      () => plan({ size: MiB, backingFile: 'a'.repeat(1024), backingFormat: 'qcow2' }),
      (e: unknown) => e instanceof Qcow2Error && /: Invalid argument$/.test(e.message),
    );
  });

  const matrix: Qcow2CreateRequest[] = [];
  for (const clusterSize of [512, 4096, 65536]) {
    for (const refcountBits of [1, 4, 16, 64]) {
      for (const preallocation of ['off', 'metadata', 'falloc', 'full']) {
        for (const size of [0, 1000, 3 * MiB + 512, 24 * MiB]) matrix.push({ size, clusterSize, refcountBits, preallocation });
      }
    }
  }
  matrix.push(
    { size: 5 * MiB + 1536, clusterSize: 16384, extendedL2: true, preallocation: 'metadata' },
    { size: 5 * MiB, clusterSize: 2 * MiB, extendedL2: true, preallocation: 'falloc', refcountBits: 2 },
    { size: 9 * MiB, dataFile: 'd.raw', preallocation: 'full', clusterSize: 1024 },
    { size: 9 * MiB, dataFile: 'd.raw', dataFileRaw: true, clusterSize: 512, refcountBits: 8 },
  );
  test(`${matrix.length} option combinations produce consistent images the read path opens`, async () => {
    for (const req of matrix) {
      const p = plan(req);
      const { image, data } = await materialize(p);
      const what = JSON.stringify(req);
      assert.equal(image.byteLength, p.image.length, what);
      const { allocated, mapped } = checkConsistent(image, req.dataFile !== undefined);
      assert.equal(allocated, p.summary.allocatedClusters, what);
      assert.equal(mapped, p.summary.mappedClusters, what);
      const guestClusters = Math.ceil(Math.ceil(req.size / 512) * 512 / (req.clusterSize ?? 65536));
      assert.equal(mapped, (req.preallocation ?? 'off') === 'off' && req.dataFileRaw !== true ? 0 : guestClusters, what);
      if (data !== undefined) assert.ok(data.byteLength >= req.size, what);
      if (req.dataFile === undefined) {
        const img = await openImage(new MemoryStorage(image), { format: 'qcow2' });
        try {
          assert.equal(img.size, Math.ceil(req.size / 512) * 512, what);
          if (img.size > 0) {
            const buf = new Uint8Array(Math.min(img.size, 4096)).fill(1);
            await img.read(buf, img.size - buf.byteLength);
            assert.ok(buf.every((b) => b === 0), what);
          }
        } finally {
          await img.close();
        }
      }
    }
  });

  test('writes() can be iterated again and yields the same bytes', () => {
    const p = plan({ size: 3 * MiB, clusterSize: 512, preallocation: 'metadata' });
    const a = [...p.writes()].map((w) => `${w.offset}:${sha256(w.bytes)}`);
    const b = [...p.writes()].map((w) => `${w.offset}:${sha256(w.bytes)}`);
    assert.deepEqual(a, b);
  });

  test('a data file plan needs a storage for it', async () => {
    const p = plan({ size: MiB, dataFile: 'x' });
    await assert.rejects(writeQcow2Image(p, new MemoryStorage()), TypeError);
  });
});
