import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsCodecs } from '../../codecs/codecs-js.js';
import { Qcow2Error } from '../../errors.js';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { viewOf } from '../../util/bytes.js';
import { decodeBitmapDirectory, decodeBitmapsExtension } from './bitmap-directory.js';
import { BITMAP_CLUSTER_ONES, decodeBitmapTable } from './bitmap-table.js';
import { Qcow2Bitmaps, withBitmapsExtension, INCONSISTENT_BITMAP_HINT } from './bitmaps.js';
import { AUTOCLEAR_BITMAPS, hasBit } from './features.js';
import {
  decodeExtensions, EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_FEATURE_TABLE, encodeFeatureTable, findExtension, QEMU_FEATURE_TABLE,
  stringExtension, type HeaderExtension,
} from './header-extensions.js';
import { decodeBackingName, decodeHeader } from './header.js';
import { buildQcow2, pattern } from './qcow2-builder.test.helper.js';
import { Qcow2Driver } from './qcow2-driver.js';
import { entryOffset } from './table-entries.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Open {
  drv: Qcow2Driver;
  bm: Qcow2Bitmaps;
  storage: MemoryStorage;
}

/** Open writable; uses the driver's own bitmaps once the driver has them. */
async function openRw(bytes: Uint8Array): Promise<Open> {
  const storage = new MemoryStorage(bytes.slice(), 'img.qcow2');
  const drv = await Qcow2Driver.open(storage, { readOnly: false, codecs: jsCodecs });
  const wired = (drv as unknown as { bitmaps?: Qcow2Bitmaps }).bitmaps;
  const bm = wired ?? new Qcow2Bitmaps(drv.state, drv.writer);
  if (wired === undefined) await bm.openForWrite();
  return { drv, bm, storage };
}

async function closeRw(o: Open): Promise<Uint8Array> {
  await o.bm.store();
  await o.drv.writer!.close();
  await o.drv.close();
  return o.storage.bytes().slice();
}

async function openRo(bytes: Uint8Array): Promise<{ drv: Qcow2Driver; bm: Qcow2Bitmaps }> {
  const drv = await Qcow2Driver.open(new MemoryStorage(bytes.slice(), 'img.qcow2', true), { readOnly: true, codecs: jsCodecs });
  const wired = (drv as unknown as { bitmaps?: Qcow2Bitmaps }).bitmaps;
  return { drv, bm: wired ?? new Qcow2Bitmaps(drv.state, undefined) };
}

/** Guest write through the writer, dirtying bitmaps as the wired driver does. */
async function write(o: Open, offset: number, length: number, seed = 1): Promise<void> {
  await o.drv.writer!.writeData(offset, pattern(length, seed), async (dst) => void dst.fill(0));
  o.bm.markDirty(offset, length);
}

function image(opts: { size?: number; clusterBits?: number; version?: 2 | 3; backingName?: string; extensions?: HeaderExtension[] } = {}): Uint8Array {
  return buildQcow2({ size: opts.size ?? 16 * MiB, clusterBits: opts.clusterBits ?? 16, version: opts.version ?? 3, ...(opts.backingName !== undefined ? { backingName: opts.backingName } : {}), extensions: opts.extensions ?? [] });
}

interface DiskBitmaps {
  autoclear: boolean;
  extensions: HeaderExtension[];
  entries: ReturnType<typeof decodeBitmapDirectory>;
}

/** The bitmaps as stored in `bytes`, parsed independently of Qcow2Bitmaps. */
function onDisk(bytes: Uint8Array): DiskBitmaps {
  const h = decodeHeader(bytes);
  const cs = 2 ** h.clusterBits;
  const extensions = decodeExtensions(bytes.subarray(0, cs), h.version === 2 ? 72 : h.headerLength, h.backingFileOffset || cs);
  const ext = findExtension(extensions, EXT_BITMAPS);
  const autoclear = hasBit(h.autoclearFeatures, AUTOCLEAR_BITMAPS);
  if (ext === undefined) return { autoclear, extensions, entries: [] };
  const d = decodeBitmapsExtension(ext.data, cs);
  const dir = bytes.subarray(d.directoryOffset, d.directoryOffset + d.directorySize);
  return { autoclear, extensions, entries: decodeBitmapDirectory(dir, { nbBitmaps: d.nbBitmaps, clusterSize: cs, diskSize: h.size }) };
}

/**
 * qemu-img check's refcount pass in miniature (16-bit refcounts, standard L2 entries): every
 * cluster's refcount must equal the number of structures referencing it.
 */
function refcountProblems(bytes: Uint8Array): string[] {
  const h = decodeHeader(bytes);
  const cs = 2 ** h.clusterBits;
  const v = viewOf(bytes);
  const refs = new Map<number, number>();
  const ref = (off: number, n = 1): void => {
    for (let c = Math.floor(off / cs); c < Math.floor(off / cs) + n; c++) refs.set(c, (refs.get(c) ?? 0) + 1);
  };
  const u64 = (at: number): number => entryOffset(v.getUint32(at), v.getUint32(at + 4));
  ref(0);
  ref(h.refcountTableOffset, h.refcountTableClusters);
  const reftableEntries = (h.refcountTableClusters * cs) / 8;
  for (let i = 0; i < reftableEntries; i++) if (u64(h.refcountTableOffset + i * 8)) ref(u64(h.refcountTableOffset + i * 8));
  if (h.l1Size > 0) ref(h.l1TableOffset, Math.ceil((h.l1Size * 8) / cs));
  for (let i = 0; i < h.l1Size; i++) {
    const l2 = u64(h.l1TableOffset + i * 8);
    if (l2 === 0) continue;
    ref(l2);
    for (let j = 0; j < cs / 8; j++) if (u64(l2 + j * 8)) ref(u64(l2 + j * 8));
  }
  const ext = findExtension(onDisk(bytes).extensions, EXT_BITMAPS);
  if (ext !== undefined && hasBit(h.autoclearFeatures, AUTOCLEAR_BITMAPS)) {
    const d = decodeBitmapsExtension(ext.data, cs);
    ref(d.directoryOffset, Math.ceil(d.directorySize / cs));
    for (const e of onDisk(bytes).entries) {
      ref(e.tableOffset, Math.ceil((e.tableSize * 8) / cs));
      const table = decodeBitmapTable(bytes.subarray(e.tableOffset, e.tableOffset + e.tableSize * 8), cs);
      for (const t of table) if (t > 1) ref(t);
    }
  }
  const problems: string[] = [];
  const clusters = Math.max(Math.ceil(bytes.byteLength / cs), ...[...refs.keys()].map((c) => c + 1));
  for (let c = 0; c < clusters; c++) {
    const block = u64(h.refcountTableOffset + Math.floor(c / (cs / 2)) * 8);
    const rc = block === 0 ? 0 : v.getUint16(block + (c % (cs / 2)) * 2);
    const want = refs.get(c) ?? 0;
    if (rc !== want) problems.push(`cluster ${c}: refcount ${rc}, referenced ${want} times`);
  }
  return problems;
}

test('add + store: the bitmap is saved, enabled, not in use, with the autoclear bit and a clean refcount picture', async () => {
  const o = await openRw(image());
  const info = await o.bm.add('b1');
  assert.deepEqual(info, { name: 'b1', granularity: 65536, enabled: true, inconsistent: false });
  await o.bm.add('b2', { granularity: 512, disabled: true });
  const bytes = await closeRw(o);
  const disk = onDisk(bytes);
  assert.equal(disk.autoclear, true);
  assert.deepEqual(disk.entries.map((e) => [e.name, e.granularityBits, e.flags.inUse, e.flags.auto, e.tableSize]), [
    ['b1', 16, false, true, 1],
    ['b2', 9, false, false, 1],
  ]);
  assert.deepEqual(refcountProblems(bytes), []);
  const ro = await openRo(bytes);
  assert.deepEqual(ro.bm.list(), [
    { name: 'b1', granularity: 65536, enabled: true, inconsistent: false },
    { name: 'b2', granularity: 512, enabled: false, inconsistent: false },
  ]);
  assert.deepEqual(await ro.bm.dirtyRanges('b1'), []);
});

test('openForWrite marks bitmaps in use on disk; store clears the flag again', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('b1');
  const saved = await closeRw(o1);
  const o = await openRw(saved);
  const whileOpen = o.storage.bytes().slice();
  assert.deepEqual(onDisk(whileOpen).entries.map((e) => e.flags), [{ inUse: true, auto: true }]);
  assert.equal(onDisk(o.storage.bytes()).autoclear, true);
  assert.deepEqual(refcountProblems(o.storage.bytes()), []);
  const bytes = await closeRw(o);
  assert.deepEqual(onDisk(bytes).entries.map((e) => e.flags), [{ inUse: false, auto: true }]);
  assert.deepEqual(refcountProblems(bytes), []);
  // A crash while in use: the next open sees the bitmap as inconsistent.
  assert.deepEqual((await openRo(whileOpen)).bm.list(), [{ name: 'b1', granularity: 65536, enabled: true, inconsistent: true }]);
  assert.deepEqual((await openRo(bytes)).bm.list(), [{ name: 'b1', granularity: 65536, enabled: true, inconsistent: false }]);
});

test('writes dirty enabled bitmaps only; the bits survive a store and reopen', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('on', { granularity: 4096 });
  await o1.bm.add('off', { disabled: true });
  await write(o1, 100, 10);
  await write(o1, 3 * MiB - 1, 2);
  const bytes = await closeRw(o1);
  const o2 = await openRw(bytes);
  assert.deepEqual(await o2.bm.dirtyRanges('on'), [{ offset: 0, length: 4096 }, { offset: 3 * MiB - 4096, length: 8192 }]);
  assert.deepEqual(await o2.bm.dirtyRanges('off'), []);
  await write(o2, 8 * MiB, 1);
  await o2.bm.clear('on');
  await write(o2, 9 * MiB, 1);
  await o2.bm.enable('off');
  await write(o2, 10 * MiB, 1);
  const bytes2 = await closeRw(o2);
  assert.deepEqual(refcountProblems(bytes2), []);
  const ro = await openRo(bytes2);
  assert.deepEqual(await ro.bm.dirtyRanges('on'), [{ offset: 9 * MiB, length: 4096 }, { offset: 10 * MiB, length: 4096 }]);
  assert.deepEqual(await ro.bm.dirtyRanges('off'), [{ offset: 10 * MiB, length: 65536 }]);
  assert.deepEqual(ro.bm.list().map((b) => b.enabled), [true, true]);
});

test('unchanged bitmaps keep their tables; changed ones move and the old clusters are freed', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('keep');
  await o1.bm.add('move');
  await write(o1, 0, 1);
  const bytes1 = await closeRw(o1);
  const before = onDisk(bytes1).entries;
  const o2 = await openRw(bytes1);
  await o2.bm.disable('keep');
  await o2.bm.clear('move');
  const bytes2 = await closeRw(o2);
  const after = onDisk(bytes2).entries;
  assert.equal(after[0]!.tableOffset, before[0]!.tableOffset);
  assert.notEqual(after[1]!.tableOffset, before[1]!.tableOffset);
  assert.deepEqual(refcountProblems(bytes2), []);
});

test('all-zero and all-one bitmap clusters are table flags, mixed ones data clusters', async () => {
  // 1 KiB clusters: one bitmap cluster covers 8192 bits = 4 MiB at 512-byte granularity.
  const o = await openRw(image({ size: 10 * MiB, clusterBits: 10 }));
  await o.bm.add('b', { granularity: 512 });
  o.bm.markDirty(0, 4 * MiB); // cluster 0: all ones
  o.bm.markDirty(8 * MiB, 512); // cluster 2: mixed (and the last, partial one)
  const bytes = await closeRw(o);
  const e = onDisk(bytes).entries[0]!;
  assert.equal(e.tableSize, 3);
  const table = decodeBitmapTable(bytes.subarray(e.tableOffset, e.tableOffset + 24), 1024);
  assert.equal(table[0], BITMAP_CLUSTER_ONES);
  assert.equal(table[1], 0);
  assert.ok(table[2]! > 1);
  assert.deepEqual(refcountProblems(bytes), []);
  const ro = await openRo(bytes);
  assert.deepEqual(await ro.bm.dirtyRanges('b'), [{ offset: 0, length: 4 * MiB }, { offset: 8 * MiB, length: 512 }]);
});

test('removing the last bitmap drops the extension and the autoclear bit and frees everything', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('a');
  await write(o1, 0, 1);
  const bytes1 = await closeRw(o1);
  const o2 = await openRw(bytes1);
  await o2.bm.remove('a');
  const bytes2 = await closeRw(o2);
  const disk = onDisk(bytes2);
  assert.equal(disk.autoclear, false);
  assert.equal(findExtension(disk.extensions, EXT_BITMAPS), undefined);
  assert.deepEqual(refcountProblems(bytes2), []);
  // add then remove in one session leaves nothing behind either
  const o3 = await openRw(image());
  await o3.bm.add('x');
  await o3.bm.remove('x');
  const bytes3 = await closeRw(o3);
  assert.equal(findExtension(onDisk(bytes3).extensions, EXT_BITMAPS), undefined);
  assert.deepEqual(refcountProblems(bytes3), []);
});

/** Set the in-use flag of directory entry `index` by hand (what a crash leaves). */
function markInUse(bytes: Uint8Array, index: number): Uint8Array {
  const out = bytes.slice();
  const h = decodeHeader(out);
  const cs = 2 ** h.clusterBits;
  const d = decodeBitmapsExtension(findExtension(onDisk(out).extensions, EXT_BITMAPS)!.data, cs);
  let off = d.directoryOffset;
  for (let i = 0; i < index; i++) {
    const nameSize = viewOf(out).getUint16(off + 18);
    off += (24 + nameSize + 7) & ~7;
  }
  const v = viewOf(out);
  v.setUint32(off + 12, v.getUint32(off + 12) | 1);
  return out;
}

test('inconsistent (in-use) bitmaps: only remove works; store keeps them as they are', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('bad');
  await o1.bm.add('good');
  await write(o1, 0, 1);
  const crashed = markInUse(await closeRw(o1), 0);
  const o2 = await openRw(crashed);
  assert.deepEqual(o2.bm.get('bad'), { name: 'bad', granularity: 65536, enabled: true, inconsistent: true });
  const isInconsistent = (e: unknown): boolean =>
    e instanceof Qcow2Error && e.message === "Bitmap 'bad' is inconsistent and cannot be used" && e.context['hint'] === INCONSISTENT_BITMAP_HINT;
  await assert.rejects(o2.bm.clear('bad'), isInconsistent);
  await assert.rejects(o2.bm.enable('bad'), isInconsistent);
  await assert.rejects(o2.bm.disable('bad'), isInconsistent);
  await assert.rejects(o2.bm.merge('good', 'bad'), isInconsistent);
  await assert.rejects(o2.bm.merge('bad', 'good'), isInconsistent);
  await assert.rejects(o2.bm.dirtyRanges('bad'), isInconsistent);
  await write(o2, MiB, 1);
  const bytes2 = await closeRw(o2);
  const before = onDisk(crashed).entries[0]!;
  const after = onDisk(bytes2).entries;
  assert.deepEqual(after.map((e) => [e.name, e.flags.inUse]), [['bad', true], ['good', false]]);
  assert.equal(after[0]!.tableOffset, before.tableOffset);
  assert.deepEqual(refcountProblems(bytes2), []);
  const o3 = await openRw(bytes2);
  await o3.bm.remove('bad');
  const bytes3 = await closeRw(o3);
  assert.deepEqual(onDisk(bytes3).entries.map((e) => e.name), ['good']);
  assert.deepEqual(refcountProblems(bytes3), []);
});

test('merge: within an image, across images, across granularities; size mismatch refused', async () => {
  const src = await openRw(image());
  await src.bm.add('s', { granularity: 512 });
  await write(src, 5 * MiB + 10, 1);
  const srcBytes = await closeRw(src);
  const other = await openRo(srcBytes);

  const o = await openRw(image());
  await o.bm.add('d', { granularity: MiB });
  await o.bm.add('e');
  await write(o, 0, 1);
  await o.bm.merge('d', 's', other.bm);
  await o.bm.merge('d', 'e');
  assert.deepEqual(await o.bm.dirtyRanges('d'), [{ offset: 0, length: MiB }, { offset: 5 * MiB, length: MiB }]);
  await assert.rejects(o.bm.merge('nope', 's', other.bm), /Dirty bitmap 'nope' not found/);
  await assert.rejects(o.bm.merge('d', 'nope', other.bm), /Dirty bitmap 'nope' not found/);
  const small = await openRw(image({ size: 8 * MiB }));
  await small.bm.add('x');
  await assert.rejects(o.bm.merge('d', 'x', small.bm), { message: "Bitmaps are of different sizes (destination size is 16777216, source size is 8388608) and can't be merged" });
  const bytes = await closeRw(o);
  assert.deepEqual(refcountProblems(bytes), []);
});

test("add: QEMU's checks and messages", async () => {
  const o = await openRw(image());
  await o.bm.add('b');
  const msg = async (p: Promise<unknown>, text: string, persist = false): Promise<void> => {
    await assert.rejects(p, (e: unknown) => e instanceof Qcow2Error && e.message === text && (e.context['cannotPersist'] === true) === persist);
  };
  await msg(o.bm.add(''), 'Bitmap name cannot be empty');
  await msg(o.bm.add('b'), 'Bitmap already exists: b');
  await msg(o.bm.add('g', { granularity: 1000 }), 'Granularity must be power of 2 and at least 512');
  await msg(o.bm.add('g', { granularity: 256 }), 'Granularity must be power of 2 and at least 512');
  await msg(o.bm.add('g', { granularity: 2 ** 32 }), 'Granularity must be power of 2 and at least 512');
  await msg(o.bm.add('x'.repeat(1024)), 'Name length exceeds maximum (1023 characters)', true);
  await o.bm.add('x'.repeat(1023));
  await o.bm.add('big', { granularity: 2 ** 31 });
  await msg(o.bm.remove('nope'), "Dirty bitmap 'nope' not found");
  await msg(o.bm.clear('nope'), "Dirty bitmap 'nope' not found");
  await msg(o.bm.enable('nope'), "Dirty bitmap 'nope' not found");
  await msg(o.bm.disable('nope'), "Dirty bitmap 'nope' not found");
  const bytes = await closeRw(o);
  assert.deepEqual(onDisk(bytes).entries.map((e) => e.granularityBits), [16, 16, 31]);

  const huge = await openRw(buildQcow2({ size: 2 * 1024 * 1024 * MiB + 512, clusterBits: 16 }));
  await msg(huge.bm.add('h', { granularity: 512 }), 'Too much space will be occupied by the bitmap. Use larger granularity', true);
  await huge.bm.add('h', { granularity: 1024 });

  const v2 = await openRw(image({ version: 2 }));
  await msg(v2.bm.add('b'), 'Cannot store dirty bitmaps in qcow2 v2 files', true);
});

test('default granularity is the cluster size clamped to [4 KiB, 64 KiB]', async () => {
  for (const [bits, want] of [[9, 4096], [14, 16384], [21, 65536]] as const) {
    const o = await openRw(image({ clusterBits: bits, size: 4 * MiB }));
    assert.equal((await o.bm.add('b')).granularity, want);
  }
});

test('a bitmaps extension without the autoclear bit is stale: a writable open drops it', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('b');
  const bytes = await closeRw(o1);
  const stale = bytes.slice();
  // autoclear_features low word is at byte 92
  viewOf(stale).setUint32(92, 0);
  assert.equal(onDisk(stale).autoclear, false);
  assert.equal((await openRo(stale)).bm.list().length, 0);
  const o2 = await openRw(stale);
  assert.deepEqual(o2.bm.list(), []);
  const after = await closeRw(o2);
  assert.equal(findExtension(onDisk(after).extensions, EXT_BITMAPS), undefined);
});

test('cluster 0 keeps the backing file name and other extensions; bitmaps go after the feature table', async () => {
  const exts = [stringExtension(EXT_BACKING_FORMAT, 'raw'), encodeFeatureTable(QEMU_FEATURE_TABLE), { type: 0x12345678, data: new Uint8Array([1, 2, 3]) }];
  const o = await openRw(image({ backingName: 'base.raw', extensions: exts }));
  await o.bm.add('b');
  const bytes = await closeRw(o);
  const disk = onDisk(bytes);
  assert.deepEqual(disk.extensions.map((e) => e.type), [EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, EXT_BITMAPS, 0x12345678]);
  assert.equal(decodeBackingName(bytes, decodeHeader(bytes)), 'base.raw');
  assert.deepEqual(refcountProblems(bytes), []);
});

test('withBitmapsExtension replaces in place, removes, or inserts after the known extensions', () => {
  const a: HeaderExtension = { type: EXT_FEATURE_TABLE, data: new Uint8Array(0) };
  const u: HeaderExtension = { type: 0x1, data: new Uint8Array(0) };
  const old: HeaderExtension = { type: EXT_BITMAPS, data: new Uint8Array(24) };
  const neu: HeaderExtension = { type: EXT_BITMAPS, data: new Uint8Array(24).fill(1) };
  assert.deepEqual(withBitmapsExtension([u, old, a], neu), [u, neu, a]);
  assert.deepEqual(withBitmapsExtension([u, old, a], undefined), [u, a]);
  assert.deepEqual(withBitmapsExtension([u, a], neu), [u, a, neu]);
  assert.deepEqual(withBitmapsExtension([u], neu), [neu, u]);
});

test('a zero-size disk cannot hold a bitmap: store reports it lost, as QEMU loses it', async () => {
  const o = await openRw(buildQcow2({ size: 0 }));
  await o.bm.add('z');
  assert.deepEqual(await o.bm.store(), { lost: ['z'] });
  const bytes = await closeRw(o);
  assert.equal(findExtension(onDisk(bytes).extensions, EXT_BITMAPS), undefined);
  assert.deepEqual(refcountProblems(bytes), []);
});

test('resize: refused while a bitmap is inconsistent; bitmaps follow the new size', async () => {
  const o1 = await openRw(image({ size: 4 * MiB }));
  await o1.bm.add('b', { granularity: 512 });
  await write(o1, 4 * MiB - 512, 512);
  const bytes = await closeRw(o1);
  const o2 = await openRw(bytes);
  await o2.bm.beforeResize();
  await o2.drv.writer!.resize(8 * MiB, async (dst) => void dst.fill(0), undefined);
  o2.bm.afterResize(8 * MiB);
  o2.bm.markDirty(8 * MiB - 1, 1);
  const bytes2 = await closeRw(o2);
  assert.equal(onDisk(bytes2).entries[0]!.tableSize, 1);
  const ro = await openRo(bytes2);
  assert.deepEqual(await ro.bm.dirtyRanges('b'), [{ offset: 4 * MiB - 512, length: 512 }, { offset: 8 * MiB - 512, length: 512 }]);
  assert.deepEqual(refcountProblems(bytes2), []);
  const o3 = await openRw(markInUse(bytes2, 0));
  await assert.rejects(o3.bm.beforeResize(), /Bitmap 'b' is inconsistent/);
});

test('read-only: list and dirty ranges work, changes are refused', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('b');
  await write(o1, 0, 1);
  const ro = await openRo(await closeRw(o1));
  assert.deepEqual(await ro.bm.dirtyRanges('b'), [{ offset: 0, length: 65536 }]);
  assert.equal((await ro.bm.contents('b')).count(), 1);
  await assert.rejects(ro.bm.add('c'), (e: unknown) => e instanceof Qcow2Error && e.code === 'READ_ONLY');
  await assert.rejects(ro.bm.clear('b'), (e: unknown) => e instanceof Qcow2Error && e.code === 'READ_ONLY');
  ro.bm.markDirty(0, MiB); // no effect, no error
  assert.deepEqual(await ro.bm.dirtyRanges('b'), [{ offset: 0, length: 65536 }]);
  assert.deepEqual(await ro.bm.store(), { lost: [] });
});

test('broken bitmap tables are reported when read', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('b');
  const bytes = await closeRw(o1);
  const e = onDisk(bytes).entries[0]!;
  const broken = bytes.slice();
  viewOf(broken).setUint32(e.tableOffset + 4, 0x2); // reserved bit
  await assert.rejects(openRw(broken), /Could not read bitmap_table table from image for bitmap 'b'/);
  const ro = await openRo(broken);
  await assert.rejects(ro.bm.dirtyRanges('b'), (err: unknown) => err instanceof Qcow2Error && err.code === 'INVALID_IMAGE');
});

test('openForWrite sets the autoclear bit again if something cleared it (only inconsistent bitmaps left)', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('bad');
  const crashed = markInUse(await closeRw(o1), 0);
  const storage = new MemoryStorage(crashed.slice(), 'img.qcow2');
  const drv = await Qcow2Driver.open(storage, { readOnly: false, codecs: jsCodecs });
  const h = drv.state.meta.header;
  h.autoclearFeatures = { hi: h.autoclearFeatures.hi, lo: h.autoclearFeatures.lo & ~1 };
  const bm = new Qcow2Bitmaps(drv.state, drv.writer);
  await bm.openForWrite();
  await bm.store();
  await drv.writer!.close();
  const bytes = storage.bytes().slice();
  assert.equal(onDisk(bytes).autoclear, true);
  assert.deepEqual(onDisk(bytes).entries.map((e) => [e.name, e.flags.inUse]), [['bad', true]]);
  assert.deepEqual(refcountProblems(bytes), []);
});

test('a size change without afterResize: store covers the new size and counts the new area as dirty', async () => {
  const o = await openRw(image({ size: 4 * MiB }));
  await o.bm.add('b', { granularity: 65536 });
  // Grow the disk behind the bitmaps' back (no beforeResize/afterResize).
  const w = o.drv.writer!;
  const wired = (w as unknown as { bitmaps?: unknown }).bitmaps;
  (w as unknown as { bitmaps?: unknown }).bitmaps = undefined;
  await w.resize(6 * MiB, async (dst) => void dst.fill(0), undefined);
  (w as unknown as { bitmaps?: unknown }).bitmaps = wired;
  const bytes = await closeRw(o);
  const ro = await openRo(bytes);
  assert.deepEqual(await ro.bm.dirtyRanges('b'), [{ offset: 4 * MiB, length: 2 * MiB }]);
  assert.deepEqual(refcountProblems(bytes), []);
});

test('a memory budget bounds what all bitmaps together may hold', async () => {
  const o1 = await openRw(image({ size: 16 * MiB }));
  await o1.bm.add('a', { granularity: 512 }); // 4 KiB of bits
  await o1.bm.add('b', { granularity: 512 });
  const bytes = await closeRw(o1);
  const storage = new MemoryStorage(bytes.slice(), 'img.qcow2', true);
  const drv = await Qcow2Driver.open(storage, { readOnly: true, codecs: jsCodecs });
  const bm = new Qcow2Bitmaps(drv.state, undefined, { memoryBudget: 6 * KiB });
  assert.deepEqual(await bm.dirtyRanges('a'), []);
  await assert.rejects(bm.dirtyRanges('b'), (e: unknown) => e instanceof Qcow2Error && e.code === 'UNSUPPORTED' && /more than 6144 bytes/.test(e.message));
  // An image without bitmaps, so that no other instance holds any.
  const drv2 = await Qcow2Driver.open(new MemoryStorage(image({ size: 16 * MiB }), 'img.qcow2'), { readOnly: false, codecs: jsCodecs });
  const bm2 = new Qcow2Bitmaps(drv2.state, drv2.writer, { memoryBudget: 9 * KiB });
  await bm2.add('a', { granularity: 512 });
  await bm2.add('b', { granularity: 512 });
  await assert.rejects(bm2.add('c', { granularity: 512 }), /more than 9216 bytes/);
  await bm2.add('c');
});

test('a write landing while store() runs is not lost: the next store() saves it', async () => {
  const o1 = await openRw(image());
  await o1.bm.add('b');
  const bytes = await closeRw(o1);
  class HookedStorage extends MemoryStorage {
    onWrite: (() => void) | undefined;
    override async write(src: Uint8Array, offset: number): Promise<void> {
      const hook = this.onWrite;
      this.onWrite = undefined;
      hook?.();
      await super.write(src, offset);
    }
  }
  const storage = new HookedStorage(bytes.slice(), 'img.qcow2');
  const drv = await Qcow2Driver.open(storage, { readOnly: false, codecs: jsCodecs });
  const wired = (drv as unknown as { bitmaps?: Qcow2Bitmaps }).bitmaps;
  const bm = wired ?? new Qcow2Bitmaps(drv.state, drv.writer);
  if (wired === undefined) await bm.openForWrite();
  bm.markDirty(0, 1);
  // The first storage write of store() is the bitmap's data cluster: the write lands after the
  // bits were copied out.
  storage.onWrite = () => bm.markDirty(8 * MiB, 1);
  await bm.store();
  assert.equal(storage.onWrite, undefined, 'the hook ran');
  await bm.store();
  await drv.writer!.close();
  const ro = await openRo(storage.bytes().slice());
  assert.deepEqual(await ro.bm.dirtyRanges('b'), [{ offset: 0, length: 65536 }, { offset: 8 * MiB, length: 65536 }]);
  assert.deepEqual(refcountProblems(storage.bytes().slice()), []);
});
