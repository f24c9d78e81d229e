import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Qcow2Error } from '../errors.js';
import type { FormatDriver } from '../format/driver.js';
import type { BlockStatus, ImageReader } from '../image/types.js';
import { mapEntries, mapEntryBatches, type MapEntry } from './map-entries.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

type Run = Omit<BlockStatus, 'offset'>;

/** An ImageReader whose block status follows `runs`, answering at most `granularity` bytes per call. */
class ScriptedImage implements ImageReader {
  readonly size: number;
  /** No mapRuns: block status answers every run. */
  readonly driver = {} as FormatDriver;
  readonly backing = undefined;
  readonly calls: Array<[number, number]> = [];
  readonly #runs: Array<{ start: number; run: Run }> = [];
  readonly #granularity: number;

  constructor(runs: Run[], granularity = Infinity) {
    let pos = 0;
    for (const run of runs) {
      this.#runs.push({ start: pos, run });
      pos += run.length;
    }
    this.size = pos;
    this.#granularity = granularity;
  }

  async read(): Promise<void> {
    throw new Error('not used');
  }

  async blockStatus(offset: number, maxLength: number): Promise<BlockStatus> {
    return this.statusAt(offset, maxLength);
  }

  statusAt(offset: number, maxLength: number): BlockStatus {
    this.calls.push([offset, maxLength]);
    const hit = this.#runs.find((r) => offset >= r.start && offset < r.start + r.run.length);
    if (hit === undefined) throw new Error(`no run at ${offset}`);
    const skip = offset - hit.start;
    const length = Math.min(hit.run.length - skip, maxLength, this.#granularity);
    const st: BlockStatus = { ...hit.run, offset, length };
    if (hit.run.hostOffset !== undefined) st.hostOffset = hit.run.hostOffset + skip;
    return st;
  }

  async close(): Promise<void> {}
}

const data = (length: number, hostOffset: number, depth = 0, filename = 'top.qcow2'): Run =>
  ({ length, depth, present: true, zero: false, data: true, compressed: false, hostOffset, filename });
const unallocated = (length: number, depth = 1): Run => ({ length, depth, present: false, zero: true, data: false, compressed: false });
const zero = (length: number): Run => ({ length, depth: 0, present: true, zero: true, data: false, compressed: false });
const compressed = (length: number): Run => ({ length, depth: 0, present: true, zero: false, data: true, compressed: true });

async function collect(image: ImageReader, range?: { start?: number; length?: number }): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  for await (const e of mapEntries(image, range)) out.push(e);
  return out;
}

test('the overlay of qemu-img map: backing data, own data, unallocated tail', async () => {
  // ov.qcow2 from the qemu-img session: 1 MiB in base, 1 MiB in the overlay, the rest nowhere.
  const image = new ScriptedImage([data(MiB, 0x50000, 1, 'base.qcow2'), data(MiB, 0x70000), unallocated(62 * MiB)], 64 * 1024);
  assert.deepEqual(await collect(image), [
    { start: 0, length: MiB, depth: 1, present: true, zero: false, data: true, compressed: false, offset: 0x50000, filename: 'base.qcow2' },
    { start: MiB, length: MiB, depth: 0, present: true, zero: false, data: true, compressed: false, offset: 0x70000, filename: 'top.qcow2' },
    { start: 2 * MiB, length: 62 * MiB, depth: 1, present: false, zero: true, data: false, compressed: false },
  ]);
});

test('host offsets must be contiguous to merge', async () => {
  const image = new ScriptedImage([data(65536, 0x60000), data(65536, 0x70000), data(65536, 0x90000), data(65536, 0xa0000, 0, 'other')]);
  assert.deepEqual((await collect(image)).map((e) => [e.start, e.length, e.offset, e.filename]), [
    [0, 131072, 0x60000, 'top.qcow2'],
    [131072, 65536, 0x90000, 'top.qcow2'],
    [196608, 65536, 0xa0000, 'other'],
  ]);
});

test('zero clusters with and without host offsets and compressed clusters stay apart', async () => {
  const allocZero: Run = { ...zero(65536), hostOffset: 0x70000, filename: 'top.qcow2' };
  const image = new ScriptedImage([compressed(65536), compressed(65536), data(65536, 0x60000), zero(65536), allocZero, unallocated(65536, 0)]);
  assert.deepEqual((await collect(image)).map((e) => [e.start, e.length, e.data, e.zero, e.compressed, e.offset]), [
    [0, 131072, true, false, true, undefined],
    [131072, 65536, true, false, false, 0x60000],
    [196608, 65536, false, true, false, undefined],
    [262144, 65536, false, true, false, 0x70000],
    [327680, 65536, false, true, false, undefined],
  ]);
});

test('depth and present split otherwise equal ranges', async () => {
  const image = new ScriptedImage([unallocated(4096, 1), unallocated(4096, 2), { ...unallocated(4096, 2), present: true }]);
  assert.deepEqual((await collect(image)).map((e) => [e.start, e.depth, e.present]), [[0, 1, false], [4096, 2, false], [8192, 2, true]]);
});

test('probes at most 1 GiB at a time and merges across probes', async () => {
  const image = new ScriptedImage([unallocated(3 * GiB + 512, 0)]);
  const entries = await collect(image);
  assert.deepEqual(entries, [{ start: 0, length: 3 * GiB + 512, depth: 0, present: false, zero: true, data: false, compressed: false }]);
  assert.deepEqual(image.calls, [[0, GiB], [GiB, GiB], [2 * GiB, GiB], [3 * GiB, 512]]);
});

test('start and length select a window, cut at the end of the image', async () => {
  const image = new ScriptedImage([data(MiB, 0x50000, 1, 'base.qcow2'), data(MiB, 0x70000), unallocated(62 * MiB)]);
  // qemu-img map --start-offset=1M --max-length=3M
  assert.deepEqual((await collect(image, { start: MiB, length: 3 * MiB })).map((e) => [e.start, e.length, e.offset]), [
    [MiB, MiB, 0x70000],
    [2 * MiB, 2 * MiB, undefined],
  ]);
  // Host offset of a window starting inside a run is the offset of its first byte.
  assert.deepEqual((await collect(image, { start: 65536, length: 65536 })).map((e) => [e.start, e.length, e.offset]), [[65536, 65536, 0x60000]]);
  assert.deepEqual((await collect(image, { start: 60 * MiB, length: 100 * MiB })).map((e) => [e.start, e.length]), [[60 * MiB, 4 * MiB]]);
  assert.deepEqual(await collect(image, { start: 64 * MiB }), []);
  assert.deepEqual(await collect(image, { start: 2 * GiB }), []);
  assert.deepEqual(await collect(image, { length: 0 }), []);
});

test('a filename without a host offset is dropped, as qemu-img does', async () => {
  const image = new ScriptedImage([{ ...compressed(512), filename: 'x' }]);
  assert.equal('filename' in (await collect(image))[0]!, false);
});

test('entries stream: the first is yielded before the last probe', async () => {
  const image = new ScriptedImage([data(512, 0x10000), zero(512), zero(512), zero(512)]);
  const it = mapEntries(image);
  const first = await it.next();
  assert.equal(first.value?.length, 512);
  assert.equal(image.calls.length, 2, 'only the probe that ended the first entry has run');
  await it.return(undefined);
});

test('bad arguments and broken block status are errors, not loops', async () => {
  const image = new ScriptedImage([zero(4096)]);
  await assert.rejects(collect(image, { start: -1 }), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT');
  await assert.rejects(collect(image, { length: 1.5 }), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT');
  const stuck = new ScriptedImage([zero(4096)]);
  stuck.blockStatus = async (offset) => ({ offset, length: 0, depth: 0, present: true, zero: true, data: false, compressed: false });
  await assert.rejects(collect(stuck), (e: unknown) => e instanceof Qcow2Error && e.code === 'IO');
});

/** A ScriptedImage whose status below `cachedEnd` is known without I/O. */
class CachedScriptedImage extends ScriptedImage {
  constructor(runs: Run[], readonly cachedEnd: number) {
    super(runs);
  }

  blockStatusNow(offset: number, maxLength: number): BlockStatus | undefined {
    return offset < this.cachedEnd ? this.statusAt(offset, maxLength) : undefined;
  }
}

test('batches: cached answers are gathered; one needing I/O hands out what is complete first', async () => {
  const runs = [data(512, 0x10000), zero(512), data(512, 0x90000), zero(512), data(512, 0xa0000)];
  const batches: MapEntry[][] = [];
  for await (const b of mapEntryBatches(new CachedScriptedImage(runs, 1536))) batches.push(b);
  assert.deepEqual(batches.flat(), await collect(new ScriptedImage(runs)), 'same entries as mapEntries');
  // Entries 0 and 1 were complete when the probe at 1536 needed I/O: handed out together.
  assert.deepEqual(batches.map((b) => b.length), [2, 1, 2]);
  const all: MapEntry[][] = [];
  for await (const b of mapEntryBatches(new CachedScriptedImage(runs, Infinity))) all.push(b);
  assert.deepEqual(all.map((b) => b.length), [5]);
});
