import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Qcow2Error } from '../errors.js';
import { MemoryStorage } from '../storage/memory-storage.js';
import { convertImage, type ConvertOptions } from './convert.js';
import { createRawTarget, type ConvertTarget } from './convert-target.js';
import { FakeImage, type FakeRun } from './fake-image.test.helper.js';
import { jsCodecs } from '../codecs/codecs-js.js';
import { planQcow2Image, writeQcow2Image } from '../format/qcow2/create-layout.js';
import { resolveQcow2CreateOptions } from '../format/qcow2/create-options.js';
import { openImage } from '../image/open-image.js';
import { createImageTarget } from './image-target.js';

const K = 1024;
const M = 1024 * 1024;

interface Recorded {
  target: ConvertTarget;
  storage: MemoryStorage;
  writes: { offset: number; length: number }[];
  zeroes: { offset: number; length: number }[];
}

/** A raw target on memory that records every write and zero request. */
function recordingTarget(size: number, opts: { zeroInitialized?: boolean; initial?: number; inOrder?: boolean; writeDelayMs?: number } = {}): Recorded {
  const initial = new Uint8Array(size);
  if (opts.initial !== undefined) initial.fill(opts.initial);
  const storage = new MemoryStorage(initial);
  const raw = createRawTarget(storage, { size, zeroInitialized: opts.zeroInitialized ?? true });
  const writes: Recorded['writes'] = [];
  const zeroes: Recorded['zeroes'] = [];
  let r = 7;
  const delay = async (): Promise<void> => {
    if (!opts.writeDelayMs) return;
    r = (r * 1103515245 + 12345) & 0x7fffffff;
    await new Promise((res) => setTimeout(res, r % (opts.writeDelayMs! + 1)));
  };
  const target: ConvertTarget = {
    size,
    zeroInitialized: raw.zeroInitialized,
    prefersInOrderWrites: opts.inOrder ?? false,
    async write(src, offset) {
      writes.push({ offset, length: src.length });
      const copy = src.slice(); // the buffer is reused after the promise settles, not before
      await delay();
      await raw.write(copy, offset);
    },
    async writeZeroes(offset, length) {
      zeroes.push({ offset, length });
      await delay();
      await raw.writeZeroes(offset, length);
    },
    flush: () => raw.flush(),
  };
  return { target, storage, writes, zeroes };
}

function covered(list: { offset: number; length: number }[]): number {
  return list.reduce((n, w) => n + w.length, 0);
}

async function convertOne(runs: FakeRun[], options: ConvertOptions = {}, imageOpts = {}) {
  const img = new FakeImage(runs, imageOpts);
  const rec = recordingTarget(img.size);
  const result = await convertImage([img], rec.target, options);
  return { img, rec, result };
}

test('convertImage() copies data, never reads or writes zero and unallocated runs', async () => {
  const { img, rec, result } = await convertOne([
    { length: 1 * M, kind: 'data' },
    { length: 3 * M, kind: 'unallocated' },
    { length: 64 * K, kind: 'zero' },
    { length: 5 * M + 512, kind: 'data' },
    { length: 512, kind: 'zero' },
    { length: 2 * M, kind: 'unallocated' },
  ]);
  assert.deepEqual(rec.storage.bytes(), img.content);
  assert.deepEqual(img.badReads, []);
  assert.equal(covered(img.reads), 6 * M + 512);
  assert.equal(covered(rec.writes), 6 * M + 512);
  assert.deepEqual(rec.zeroes, []);
  assert.equal(result.bytesRead, 6 * M + 512);
  assert.equal(result.bytesWritten, 6 * M + 512);
  // No request is bigger than the 2 MiB buffer.
  assert.ok(img.reads.every((r) => r.length <= 2 * M));
});

test('convertImage() cuts data at 2 MiB from each block-status run start, like qemu-img', async () => {
  const { img } = await convertOne([
    { length: 3 * 512, kind: 'zero' },
    { length: 5 * M, kind: 'data' },
  ]);
  const starts = img.reads.map((r) => r.offset).sort((a, b) => a - b);
  assert.deepEqual(starts, [1536, 1536 + 2 * M, 1536 + 4 * M]);
});

test('convertImage() handles engines that answer block status in short pieces', async () => {
  const runs: FakeRun[] = [];
  for (let i = 0; i < 40; i++) runs.push({ length: (i % 7 + 1) * 4 * K + 512, kind: i % 3 === 0 ? 'zero' : i % 3 === 1 ? 'data' : 'unallocated' });
  const { img, rec } = await convertOne(runs, {}, { statusGranularity: 3 * K });
  assert.deepEqual(rec.storage.bytes(), img.content);
  assert.deepEqual(img.badReads, []);
});

test('convertImage() with -S 4k leaves aligned zero blocks inside data unwritten', async () => {
  const zeroFill = (ranges: [number, number][]) => (o: number) => (ranges.some(([s, e]) => o >= s && o < e) ? 0 : 0x5a);
  const { img, rec } = await convertOne([
    // 64 KiB of data: 8 KiB zero at 16k (aligned, >= 4k: hole), 2 KiB zero at 40k (short: written).
    { length: 64 * K, kind: 'data', fill: zeroFill([[16 * K, 24 * K], [40 * K, 42 * K]]) },
  ]);
  assert.deepEqual(rec.storage.bytes(), img.content);
  assert.deepEqual(rec.writes.sort((a, b) => a.offset - b.offset), [
    { offset: 0, length: 16 * K },
    { offset: 24 * K, length: 40 * K },
  ]);
});

test('convertImage() with an all-zero data run writes nothing to a fresh target', async () => {
  const { rec, result } = await convertOne([{ length: 4 * M, kind: 'data', fill: 0 }]);
  assert.deepEqual(rec.writes, []);
  assert.equal(result.bytesRead, 4 * M);
});

test('convertImage() with -S 0 writes every byte, zeros included', async () => {
  const { img, rec, result } = await convertOne(
    [
      { length: 1 * M, kind: 'data', fill: 0 },
      { length: 5 * M, kind: 'unallocated' },
      { length: 1 * M, kind: 'data' },
    ],
    { minSparse: 0 },
  );
  assert.deepEqual(rec.storage.bytes(), img.content);
  assert.equal(covered(rec.writes), 7 * M);
  assert.equal(result.bytesWritten, 7 * M);
  assert.ok(rec.writes.every((w) => w.length <= 2 * M));
  assert.deepEqual(rec.zeroes, []);
  assert.equal(covered(img.reads), 2 * M); // zeros are not read, only written
});

test('convertImage() into a non-zero-initialized target (-n) zeroes holes explicitly', async () => {
  const img = new FakeImage([
    { length: 1 * M, kind: 'data' },
    { length: 3 * M, kind: 'unallocated' },
    { length: 64 * K, kind: 'data', fill: (o) => (o % (16 * K) < 8 * K ? 0 : 1) },
  ]);
  const rec = recordingTarget(img.size + M, { zeroInitialized: false, initial: 0xee });
  await convertImage([img], rec.target);
  assert.deepEqual(rec.storage.bytes().subarray(0, img.size), img.content);
  assert.ok(rec.storage.bytes().subarray(img.size).every((b) => b === 0xee), 'bytes past the source are untouched');
  assert.ok(covered(rec.zeroes) >= 3 * M + 32 * K);
});

test('convertImage() without writeZeroes on the storage writes zero buffers', async () => {
  const img = new FakeImage([{ length: 5 * M, kind: 'unallocated' }, { length: 512, kind: 'data' }]);
  const storage = new MemoryStorage(new Uint8Array(img.size).fill(0xff));
  await convertImage([img], createRawTarget(storage, { size: img.size, zeroInitialized: false }));
  assert.deepEqual(storage.bytes(), img.content);
});

test('convertImage() concatenates sources, padding each to whole sectors like qemu-img', async () => {
  const a = new FakeImage([{ length: 1000, kind: 'data', fill: 0x11 }]);
  const b = new FakeImage([{ length: 3 * M, kind: 'unallocated' }, { length: 4096, kind: 'data', fill: 0x22 }]);
  const c = new FakeImage([{ length: 2 * M + 700, kind: 'data', fill: 0x33 }]);
  const total = 1024 + 3 * M + 4096 + 2 * M + 1024;
  const rec = recordingTarget(total);
  const result = await convertImage([a, b, c], rec.target);
  assert.equal(result.size, total);
  const expected = new Uint8Array(total);
  expected.set(a.content, 0);
  expected.set(b.content, 1024);
  expected.set(c.content, 1024 + b.size);
  assert.deepEqual(rec.storage.bytes(), expected);
  assert.deepEqual([...a.badReads, ...b.badReads, ...c.badReads], []);
});

test('convertImage() keeps many requests in flight and survives out-of-order completion', async () => {
  const runs: FakeRun[] = [];
  for (let i = 0; i < 24; i++) runs.push({ length: 3 * M + 512 * (i + 1), kind: i % 4 === 3 ? 'unallocated' : 'data' });
  const img = new FakeImage(runs, { maxDelayMs: 4, delayStatus: false });
  const rec = recordingTarget(img.size);
  await convertImage([img], rec.target, { parallel: 8 });
  assert.deepEqual(rec.storage.bytes(), img.content);
  assert.equal(img.maxInFlight, 8);
  const offsets = rec.writes.map((w) => w.offset);
  assert.notDeepEqual(offsets, [...offsets].sort((x, y) => x - y), 'writes completed out of order (raw allows it)');
});

test('convertImage() issues writes in ascending order when asked (qemu-img default without -W)', async () => {
  const runs: FakeRun[] = [];
  for (let i = 0; i < 20; i++) runs.push({ length: 2 * M + 4096 * i, kind: i % 5 === 4 ? 'zero' : 'data' });
  const img = new FakeImage(runs, { maxDelayMs: 4 });
  const rec = recordingTarget(img.size, { writeDelayMs: 2, zeroInitialized: false });
  await convertImage([img], rec.target, { parallel: 8, inOrder: true });
  assert.deepEqual(rec.storage.bytes(), img.content);
  assert.deepEqual(rec.zeroes.map((w) => w.offset), rec.zeroes.map((w) => w.offset).sort((x, y) => x - y));
  assert.deepEqual(rec.writes.map((w) => w.offset), rec.writes.map((w) => w.offset).sort((x, y) => x - y));
  assert.ok(img.maxInFlight > 1, 'reads still overlap');
});

test('convertImage() with parallel 1 keeps one request in flight', async () => {
  const img = new FakeImage([{ length: 9 * M, kind: 'data' }], { maxDelayMs: 1 });
  const rec = recordingTarget(img.size);
  await convertImage([img], rec.target, { parallel: 1 });
  assert.equal(img.maxInFlight, 1);
  assert.deepEqual(rec.storage.bytes(), img.content);
});

test('convertImage() reports progress like qemu-img: data share, monotonic, ending at 100', async () => {
  const seen: number[] = [];
  await convertOne(
    [
      { length: 1 * M, kind: 'data' },
      { length: 3 * M, kind: 'unallocated' },
      { length: 1 * M, kind: 'data' },
      { length: 3 * M, kind: 'zero' },
      { length: 3 * M, kind: 'data' },
    ],
    { progress: (p) => seen.push(p), parallel: 1 },
  );
  // Same steps qemu-img printed for this layout: 20, 40, 80, 100, then the final 100.
  assert.deepEqual(seen, [20, 40, 80, 100, 100]);
});

test('convertImage() with no data reports only the final 100', async () => {
  const seen: number[] = [];
  await convertOne([{ length: 8 * M, kind: 'unallocated' }], { progress: (p) => seen.push(p) });
  assert.deepEqual(seen, [100]);
});

test('convertImage() fails with the offset of a read error and stops', async () => {
  const img = new FakeImage([{ length: 20 * M, kind: 'data' }], { failReadAt: 6 * M + 5, maxDelayMs: 1 });
  const rec = recordingTarget(img.size);
  await assert.rejects(convertImage([img], rec.target, { parallel: 4 }), (e: unknown) => {
    assert.ok(e instanceof Qcow2Error);
    assert.equal(e.message, `error while reading at byte ${6 * M}: Input/output error`);
    return true;
  });
  assert.ok(covered(img.reads) < 20 * M);
});

test('convertImage() fails on a block status error with qemu-img wording', async () => {
  const img = new FakeImage([{ length: 1 * M, kind: 'data' }, { length: 1 * M, kind: 'zero' }], { failStatusAt: M });
  const rec = recordingTarget(img.size);
  await assert.rejects(convertImage([img], rec.target), /^Qcow2Error: error while reading block status at offset 1048576: status failed$/);
});

test('convertImage() fails on a write error', async () => {
  const img = new FakeImage([{ length: 5 * M, kind: 'data' }]);
  const rec = recordingTarget(img.size, { inOrder: true });
  rec.target.write = async () => {
    throw new Qcow2Error('IO', 'No space left on device');
  };
  await assert.rejects(convertImage([img], rec.target), (e: unknown) => e instanceof Qcow2Error && e.code === 'IO' && e.message === 'error while writing at byte 0: No space left on device');
});

test('convertImage() validates options and target size', async () => {
  const img = new FakeImage([{ length: 4096, kind: 'data' }]);
  const t = recordingTarget(4096).target;
  await assert.rejects(convertImage([img], t, { minSparse: 100 }), Qcow2Error);
  await assert.rejects(convertImage([img], t, { minSparse: 17 * M }), Qcow2Error);
  await assert.rejects(convertImage([img], t, { parallel: 0 }), Qcow2Error);
  await assert.rejects(convertImage([img], t, { parallel: 17 }), Qcow2Error);
  await assert.rejects(convertImage([img], recordingTarget(2048).target), /output file is smaller than input file/);
  await assert.rejects(convertImage([], t), Qcow2Error);
});

test('convertImage() into a compressing target writes whole clusters and skips only all-zero ones', async () => {
  const C = 64 * K;
  const img = new FakeImage([
    { length: 100 * K, kind: 'data', fill: (o) => (o >= 70 * K && o < 80 * K ? 0 : 1) }, // clusters 0 and 1 (partly)
    { length: 28 * K, kind: 'unallocated' }, // rest of cluster 1
    { length: 2 * C, kind: 'zero' }, // clusters 2-3: skipped
    { length: C, kind: 'data', fill: 0 }, // cluster 4: data, but all zero: skipped
    { length: 3 * M, kind: 'data' }, // clusters 5..: several jobs
    { length: 4 * K, kind: 'zero' },
    { length: 7 * K, kind: 'data' }, // short tail cluster at the end of the disk
  ]);
  for (const zeroInitialized of [true, false]) {
    const rec = recordingTarget(img.size, { zeroInitialized, initial: zeroInitialized ? 0 : 0xee });
    const target = { ...rec.target, compressedClusterSize: C };
    await convertImage([img], target, { parallel: 4 });
    assert.deepEqual(rec.storage.bytes(), img.content);
    for (const w of [...rec.writes, ...rec.zeroes]) {
      assert.equal(w.offset % C, 0, `write at ${w.offset} is cluster aligned`);
      assert.ok(w.length % C === 0 || w.offset + w.length === img.size, `write of ${w.length} covers whole clusters`);
    }
    const written = rec.writes.map((w) => [w.offset / C, (w.offset + w.length) / C]);
    assert.ok(written.every(([s, e]) => e! <= 2 || s! >= 5), `clusters 2-4 never written: ${JSON.stringify(written)}`);
    if (!zeroInitialized) assert.ok(rec.zeroes.some((z) => z.offset === 2 * C));
  }
});

test('convertImage() into a target that takes whole clusters writes clusters holding data whole', async () => {
  const C = 16 * K;
  const img = new FakeImage([
    { length: 3 * 512, kind: 'zero' }, // the data job starts mid-cluster: its head goes sector-wise
    // Cluster 0 (rest): data. Cluster 1: 6 KiB of data then zeros. Cluster 2: all zero.
    // Clusters 3-4: data with an 8 KiB zero gap inside, which -S 4k alone would leave out.
    { length: 5 * C - 1536, kind: 'data', fill: (o) => ((o >= C + 6 * K && o < 3 * C) || (o >= 3 * C + 4 * K && o < 3 * C + 12 * K) ? 0 : 3) },
  ]);
  for (const minSparse of [4 * K, 32 * K]) {
    const rec = recordingTarget(img.size);
    await convertImage([img], { ...rec.target, wholeClusterSize: C }, { minSparse });
    assert.deepEqual(rec.storage.bytes(), img.content);
    const writes = rec.writes.sort((a, b) => a.offset - b.offset);
    if (minSparse <= C) {
      assert.deepEqual(writes, [
        { offset: 1536, length: C - 1536 }, // head of the job, sector-wise
        { offset: C, length: C }, // cluster 1 whole, its zero tail included
        { offset: 3 * C, length: 2 * C }, // clusters 3-4 whole, gap included; cluster 2 skipped
      ]);
    } else {
      // -S above the cluster size: zero runs shorter than -S are data anyway, sector rules apply.
      assert.ok(writes.every((w) => w.offset % 512 === 0));
      assert.ok(writes.some((w) => w.offset < 2 * C && w.offset + w.length > 2 * C), 'the short zero cluster is written as data');
    }
  }
});

test('convertImage() in order into qcow2 overlaps data writes once clusters are placed, and lays out the file as one at a time does', async () => {
  // Data with zero clusters inside jobs (64 KiB clusters, 2 MiB jobs), so that some jobs make
  // several writes and only the last one may pass the turn.
  const runs: FakeRun[] = [];
  for (let i = 0; i < 24; i++) runs.push({ length: (i % 3 === 1 ? 3 : 17) * 64 * K, kind: i % 4 === 3 ? 'zero' : 'data' });
  const size = runs.reduce((n, r) => n + r.length, 0);
  class SlowWrites extends MemoryStorage {
    inFlight = 0;
    maxInFlight = 0;
    override async write(src: Uint8Array, offset: number): Promise<void> {
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      await new Promise((resolve) => setTimeout(resolve, src.byteLength > 64 * K ? 3 : 0));
      try {
        await super.write(src, offset);
      } finally {
        this.inFlight--;
      }
    }
  }
  const convertTo = async (parallel: number, clusterSize: number): Promise<SlowWrites> => {
    const created = new MemoryStorage(new Uint8Array(0), 'out.qcow2');
    await writeQcow2Image(planQcow2Image(resolveQcow2CreateOptions({ size, clusterSize })), created);
    const storage = new SlowWrites(created.bytes().slice(), 'out.qcow2');
    const image = await openImage(storage, { format: 'qcow2', codecs: jsCodecs, readOnly: false });
    const target = { ...createImageTarget(image, { zeroInitialized: true }), wholeClusterSize: clusterSize };
    await convertImage([new FakeImage(runs, { maxDelayMs: 2 })], target, { parallel, inOrder: true });
    await image.close();
    return storage;
  };
  // 4 KiB clusters: an L2 table covers 2 MiB, so jobs span two tables and write in two steps.
  for (const clusterSize of [64 * K, 4 * K]) {
    const one = await convertTo(1, clusterSize);
    const eight = await convertTo(8, clusterSize);
    assert.equal(one.maxInFlight, 1);
    assert.ok(eight.maxInFlight > 1, `data writes overlap (max in flight ${eight.maxInFlight})`);
    // (A diff of two files this size would not fit in the test's memory.)
    assert.equal(Buffer.compare(eight.bytes(), one.bytes()), 0, `same file, byte for byte (${clusterSize} B clusters)`);
  }
});
