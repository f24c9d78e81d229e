import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync, inflateRawSync, constants } from 'node:zlib';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { Qcow2Driver } from './qcow2-driver.js';
import { buildQcow2, pattern } from './qcow2-builder.test.helper.js';
import { Qcow2Error } from '../../errors.js';
import type { CodecSet } from '../../codecs/codec.js';
import { openImage } from '../../image/open-image.js';
import { encodeFeatureTable, QEMU_FEATURE_TABLE } from './header-extensions.js';

const zlibOnly: CodecSet = {
  decompressor: () => ({
    async decompress(src, dst) {
      let out: Buffer;
      try {
        out = inflateRawSync(src, { finishFlush: constants.Z_SYNC_FLUSH });
      } catch (e) {
        throw new Qcow2Error('DECOMPRESS', String(e));
      }
      if (out.byteLength < dst.byteLength) throw new Qcow2Error('DECOMPRESS', 'short');
      dst.set(out.subarray(0, dst.byteLength));
    },
  }),
  compressor: () => ({ async compress() { return undefined; } }),
};

const CS = 65536;

async function open(bytes: Uint8Array, extra: Partial<Parameters<typeof Qcow2Driver.open>[1]> = {}): Promise<Qcow2Driver> {
  return Qcow2Driver.open(new MemoryStorage(bytes, 'test.qcow2'), { readOnly: true, codecs: zlibOnly, ...extra });
}

test('maps data, zero, zero-alloc and unallocated runs and merges contiguous data', async () => {
  const img = buildQcow2({ size: 16 * CS, entries: [
    { cluster: 0, kind: 'data', bytes: pattern(CS, 1) },
    { cluster: 1, kind: 'data', bytes: pattern(CS, 2) },
    { cluster: 2, kind: 'zero' },
    { cluster: 3, kind: 'zero-alloc' },
  ] });
  const d = await open(img);
  const m0 = await d.getMapping(0, d.size);
  assert.equal(m0.kind, 'data');
  assert.equal(m0.length, 2 * CS);
  const m1 = await d.getMapping(2 * CS + 100, d.size);
  assert.deepEqual({ kind: m1.kind, length: m1.length }, { kind: 'zero', length: CS - 100 });
  const m2 = await d.getMapping(3 * CS, d.size);
  assert.equal(m2.kind, 'zero');
  assert.ok(m2.kind === 'zero' && m2.hostOffset !== undefined);
  const m3 = await d.getMapping(4 * CS, d.size);
  assert.deepEqual(m3, { kind: 'unallocated', length: 12 * CS });
  assert.equal((await d.getMapping(16 * CS, 1)).kind, 'eof');
});

test('reads compressed clusters whose stream is followed by junk', async () => {
  const data = pattern(CS, 3).map((b, i) => (i % 7 === 0 ? b : 0x41));
  const z = deflateRawSync(data, { windowBits: 12 });
  const withJunk = new Uint8Array(z.byteLength + 300);
  withJunk.set(z);
  withJunk.fill(0xee, z.byteLength);
  const img = buildQcow2({ size: 2 * CS, entries: [{ cluster: 1, kind: 'compressed', bytes: withJunk }] });
  const image = await openImage(new MemoryStorage(img), { format: 'qcow2', codecs: zlibOnly });
  const out = new Uint8Array(2 * CS);
  await image.read(out, 0);
  assert.deepEqual(out.subarray(CS), data);
  assert.ok(out.subarray(0, CS).every((b) => b === 0));
  const part = new Uint8Array(1000);
  await image.read(part, CS + 5000);
  assert.deepEqual(part, data.subarray(5000, 6000));
  const st = await image.blockStatus(CS, CS);
  assert.deepEqual(st, { offset: CS, length: CS, depth: 0, present: true, zero: false, data: true, compressed: true });
});

test('neighbouring compressed clusters are read with one storage read and decode like single ones', async () => {
  const clusters = [0, 1, 2, 3, 4].map((k) => pattern(CS, 10 + k).map((b, i) => (i % (5 + k) === 0 ? b : k)));
  const entries = clusters.map((data, k) => ({ cluster: k, kind: 'compressed' as const, bytes: deflateRawSync(data, { windowBits: 12 }) }));
  // Cluster 5 stays unallocated: a batch ends there, another one covers nothing.
  entries.push({ cluster: 6, kind: 'compressed', bytes: deflateRawSync(clusters[0]!, { windowBits: 12 }) });
  const storage = new MemoryStorage(buildQcow2({ size: 8 * CS, entries }), 'test.qcow2');
  const image = await openImage(storage, { format: 'qcow2', codecs: zlibOnly });
  await image.blockStatus(0, CS); // loads the L2 table
  let reads = 0;
  const read = storage.read.bind(storage);
  storage.read = async (dst, offset) => {
    reads++;
    await read(dst, offset);
  };
  const out = new Uint8Array(8 * CS);
  await image.read(out, 0);
  clusters.forEach((data, k) => assert.deepEqual(out.subarray(k * CS, (k + 1) * CS), data, `cluster ${k}`));
  assert.ok(out.subarray(5 * CS, 6 * CS).every((b) => b === 0));
  assert.deepEqual(out.subarray(6 * CS, 7 * CS), clusters[0]);
  assert.equal(reads, 2, 'one read for clusters 0-4, one for cluster 6');
});

test('a corrupt stream in a batch names its cluster', async () => {
  const good = deflateRawSync(pattern(CS, 1).map((b, i) => (i % 9 === 0 ? b : 0)), { windowBits: 12 });
  const img = buildQcow2({ size: 2 * CS, entries: [
    { cluster: 0, kind: 'compressed', bytes: good },
    { cluster: 1, kind: 'compressed', bytes: new Uint8Array(100).fill(0xff) },
  ] });
  const image = await openImage(new MemoryStorage(img), { format: 'qcow2', codecs: zlibOnly });
  await assert.rejects(image.read(new Uint8Array(2 * CS), 0), (e: unknown) => e instanceof Qcow2Error && /guest offset 65536/.test(e.message));
});

test('extended L2: subcluster allocation, zero and unallocated bits', async () => {
  const sc = CS / 32;
  const bytes = pattern(CS, 4);
  const img = buildQcow2({ size: 4 * CS, extendedL2: true, entries: [
    { cluster: 0, kind: 'data', bytes, bitmap: { alloc: 0b0011, zero: 0b0100 } },
    { cluster: 1, kind: 'zero', bitmap: { alloc: 0, zero: 0xffffffff } },
  ] });
  const d = await open(img);
  assert.ok(d.meta.extendedL2);
  const a = await d.getMapping(0, d.size);
  assert.equal(a.kind, 'data');
  assert.equal(a.length, 2 * sc);
  const b = await d.getMapping(2 * sc, d.size);
  assert.equal(b.kind, 'zero');
  assert.equal(b.length, sc);
  const c = await d.getMapping(3 * sc, d.size);
  // Unallocated subclusters of an allocated cluster keep their host offset (qemu-img map shows it).
  assert.equal(c.kind, 'unallocated');
  assert.equal(c.length, CS - 3 * sc);
  assert.ok(c.kind === 'unallocated' && c.hostOffset !== undefined && a.kind === 'data' && c.hostOffset === a.hostOffset + 3 * sc);
  const z = await d.getMapping(CS, d.size);
  assert.deepEqual(z, { kind: 'zero', length: CS });
});

test('extended L2 entry with both bits set is reported as corruption', async () => {
  const img = buildQcow2({ size: CS, extendedL2: true, entries: [{ cluster: 0, kind: 'data', bitmap: { alloc: 1, zero: 1 } }] });
  const d = await open(img);
  await assert.rejects(async () => d.getMapping(0, CS), (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT');
});

test('unaligned data offsets are corruption, not a crash', async () => {
  const img = buildQcow2({ size: 2 * CS, entries: [{ cluster: 0, kind: 'raw-entry', hi: 0x80000000, lo: 0x50200 }] });
  const d = await open(img);
  await assert.rejects(async () => d.getMapping(0, CS), /unaligned/);
});

test('unknown incompatible bits are named from the feature table', async () => {
  const table = encodeFeatureTable([...QEMU_FEATURE_TABLE, { kind: 'incompatible', bit: 62, name: 'shiny feature' }]);
  const img = buildQcow2({ size: CS, incompat: { hi: 0xc0000000, lo: 0 }, extensions: [table] });
  await assert.rejects(open(img), (e: unknown) => e instanceof Qcow2Error && e.code === 'UNSUPPORTED'
    && e.message === 'Unsupported qcow2 feature(s): shiny feature, Unknown incompatible feature: 8000000000000000');
});

test('corrupt bit allows read-only opens only', async () => {
  const img = buildQcow2({ size: CS, incompat: { hi: 0, lo: 2 } });
  await open(img);
  await assert.rejects(open(img, { readOnly: false }), (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT');
});

test('hostile header values are refused before they size anything', async () => {
  const cases: [Partial<import('./header.js').Qcow2Header>, RegExp][] = [
    [{ l1Size: 0x10000000 }, /Active L1 table too large/],
    [{ l1TableOffset: 0x30001 }, /Active L1 table offset invalid/],
    [{ refcountTableClusters: 0x1000000 }, /Reference count table too large/],
    [{ refcountTableClusters: 0 }, /does not contain a reference count table/],
    [{ nbSnapshots: 0x20000, snapshotsOffset: 0x10000 }, /Snapshot table too large/],
    [{ clusterBits: 30 }, /Unsupported cluster size/],
    [{ headerLength: 0x100000 }, /exceeds cluster size|header too short/],
    [{ refcountOrder: 7 }, /Reference count entry width too large/],
    [{ l1Size: 0 }, /L1 table is too small/],
    [{ compressionType: 5 }, /unknown compression type/],
    [{ backingFileOffset: 0x20000 }, /Invalid backing file offset/],
  ];
  for (const [patch, re] of cases) {
    const img = buildQcow2({ size: 64 * 2 ** 30, headerPatch: patch });
    await assert.rejects(open(img), (e: unknown) => e instanceof Qcow2Error && re.test(e.message), `${JSON.stringify(patch)} -> ${re}`);
  }
});

test('zstd compression type requires its incompatible bit', async () => {
  const img = buildQcow2({ size: CS, headerPatch: { compressionType: 1 } });
  await assert.rejects(open(img), /must be set/);
});

test('backing chain: unallocated reads fall through, zeros past the backing end', async () => {
  const base = buildQcow2({ size: 2 * CS, entries: [{ cluster: 0, kind: 'data', bytes: pattern(CS, 9) }, { cluster: 1, kind: 'data', bytes: pattern(CS, 10) }] });
  const top = buildQcow2({ size: 4 * CS, backingName: 'base', entries: [{ cluster: 1, kind: 'zero' }] });
  const stores = new Map([['base', new MemoryStorage(base, 'base')]]);
  const image = await openImage(new MemoryStorage(top, 'top'), {
    format: 'qcow2', codecs: zlibOnly,
    policy: { mode: 'custom', async open(req) { const s = stores.get(req.name); return s && { storage: s, format: 'qcow2' }; } },
  });
  const out = new Uint8Array(4 * CS);
  await image.read(out, 0);
  assert.deepEqual(out.subarray(0, CS), pattern(CS, 9));
  assert.ok(out.subarray(CS).every((b) => b === 0));
  assert.deepEqual(await image.blockStatus(0, 4 * CS), { offset: 0, length: CS, depth: 1, present: true, zero: false, data: true, compressed: false, hostOffset: 5 * CS, filename: 'base' });
  assert.equal((await image.blockStatus(CS, 3 * CS)).depth, 0);
  assert.deepEqual(await image.blockStatus(2 * CS, 2 * CS), { offset: 2 * CS, length: 2 * CS, depth: 0, present: false, zero: true, data: false, compressed: false });
});

test('a backing chain loop is refused', async () => {
  const a = buildQcow2({ size: CS, backingName: 'b' });
  const b = buildQcow2({ size: CS, backingName: 'a' });
  const stores = new Map([['a', new MemoryStorage(a, 'a')], ['b', new MemoryStorage(b, 'b')]]);
  await assert.rejects(openImage(stores.get('a')!, {
    format: 'qcow2', codecs: zlibOnly,
    policy: { mode: 'custom', async open(req) { const s = stores.get(req.name); return s && { storage: s, format: 'qcow2' }; } },
  }), (e: unknown) => e instanceof Qcow2Error && e.code === 'CHAIN_LOOP');
});

test('the default policy denies backing files', async () => {
  const top = buildQcow2({ size: CS, backingName: '/etc/passwd' });
  await assert.rejects(openImage(new MemoryStorage(top), { format: 'qcow2', codecs: zlibOnly }), (e: unknown) => e instanceof Qcow2Error && e.code === 'DEPENDENCY_DENIED');
});

test('concurrent mappings over more L2 tables than the cache holds all resolve to their own run', { timeout: 20_000 }, async () => {
  // 512 B clusters: 64 entries per L2 table; 48 tables, a two-table cache. Every lookup misses
  // and each load evicts a table another lookup is waiting for.
  const tables = 48;
  const entries = Array.from({ length: tables }, (_, t) => ({ cluster: t * 64 + (t % 64), kind: 'data' as const }));
  const drv = await open(buildQcow2({ clusterBits: 9, size: tables * 64 * 512, entries }), { l2CacheBytes: 1024 });
  const maps = await Promise.all(entries.map((e) => drv.getMapping(e.cluster * 512, 512)));
  const hosts = new Set<number>();
  for (const [i, m] of maps.entries()) {
    assert.equal(m.kind, 'data', `table ${i}`);
    assert.equal(m.length, 512);
    if (m.kind === 'data') hosts.add(m.hostOffset);
  }
  assert.equal(hosts.size, tables, 'each lookup got the run of its own table');
});

test('a mapping is answered from a table loaded into a cache full of dirty tables', { timeout: 10_000 }, async () => {
  // Two-table cache: writes leave tables 0 and 1 dirty, so a loaded table 2 is the only one
  // that can be evicted, at once. The lookup must use the table it loaded, not ask again.
  const entries = [0, 1, 2].map((t) => ({ cluster: t * 64, kind: 'data' as const, bytes: pattern(512, t) }));
  // Reads finish on a later turn of the event loop, so that a lookup asking again forever
  // fails by the test's timeout instead of starving it.
  class LaterStorage extends MemoryStorage {
    override async read(dst: Uint8Array, offset: number): Promise<void> {
      await new Promise((resolve) => setImmediate(resolve));
      return super.read(dst, offset);
    }
  }
  const storage = new LaterStorage(buildQcow2({ clusterBits: 9, size: 3 * 64 * 512, entries }), 'test.qcow2');
  const drv = await Qcow2Driver.open(storage, { readOnly: false, codecs: zlibOnly, l2CacheBytes: 1024 });
  const below = async (dst: Uint8Array): Promise<void> => void dst.fill(0);
  await drv.writer!.writeData(1 * 512, pattern(512, 7), below);
  await drv.writer!.writeData(64 * 512 + 512, pattern(512, 8), below);
  const m = await drv.getMapping(128 * 512, 512);
  assert.equal(m.kind, 'data');
});
