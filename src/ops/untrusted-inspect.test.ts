import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Qcow2Error } from '../errors.js';
import { encodeFeatureTable, EXT_DATA_FILE, stringExtension } from '../format/qcow2/header-extensions.js';
import { buildQcow2, pattern } from '../format/qcow2/qcow2-builder.test.helper.js';
import { MemoryStorage } from '../storage/memory-storage.js';
import type { Storage } from '../storage/storage.js';
import { viewOf, writeU64 } from '../util/bytes.js';
import { FuzzStorage } from '../fuzz/fuzz-storage.js';
import { borrowStorage, formatSignature, inspectUntrusted, openUntrusted, untrustedPolicy } from './untrusted-inspect.js';

const CS = 4096;
const image = (o: Partial<Parameters<typeof buildQcow2>[0]> = {}): Uint8Array =>
  buildQcow2({ clusterBits: 12, size: 1 << 20, entries: [{ cluster: 0, kind: 'data', bytes: pattern(CS, 1) }], ...o });

/** A storage that records the largest single read, to show allocations stay bounded. */
class Watched extends MemoryStorage {
  largestRead = 0;
  override async read(dst: Uint8Array, offset: number): Promise<void> {
    this.largestRead = Math.max(this.largestRead, dst.byteLength);
    await super.read(dst, offset);
  }
}

test('a clean qcow2 image is safe', async () => {
  const r = await inspectUntrusted(new MemoryStorage(image()), { format: 'qcow2' });
  assert.equal(r.safe, true);
  assert.deepEqual(r.reasons, []);
  assert.equal(r['virtual-size'], 1 << 20);
  assert.equal(r['cluster-size'], CS);
  assert.equal(r['format-signature'], 'qcow2');
  assert.equal(r['open-error'], undefined);
});

test('backing file: reported; an open that needs it is refused, one that does not works', async () => {
  const bytes = image({ backingName: '/etc/passwd' });
  const r = await inspectUntrusted(new MemoryStorage(bytes), { format: 'qcow2' });
  assert.equal(r['backing-filename'], '/etc/passwd');
  assert.deepEqual(r.reasons, ['backing-file']);
  await assert.rejects(openUntrusted(new MemoryStorage(bytes), { format: 'qcow2' }), (e) => e instanceof Qcow2Error && e.code === 'DEPENDENCY_DENIED');
  const top = await openUntrusted(new MemoryStorage(bytes), { format: 'qcow2', openBacking: false });
  assert.equal(top.backing, undefined);
  await top.close();
});

test('data file: reported; the image opens but any access to the data file is refused', async () => {
  const bytes = image({ extensions: [stringExtension(EXT_DATA_FILE, '/dev/sda')], incompat: { hi: 0, lo: 1 << 2 } });
  const r = await inspectUntrusted(new MemoryStorage(bytes), { format: 'qcow2' });
  assert.equal(r['data-file'], '/dev/sda');
  assert.equal(r['external-data-file'], true);
  assert.deepEqual(r.reasons, ['data-file']);
  const img = await openUntrusted(new MemoryStorage(bytes), { format: 'qcow2' });
  const st = await img.blockStatus(0, CS);
  assert.equal(st.filename, '/dev/sda');
  await assert.rejects(img.read(new Uint8Array(512), 0), (e) => e instanceof Qcow2Error && e.code === 'DEPENDENCY_DENIED');
  await img.close();
});

test('the policy has nothing to open files with', async () => {
  const policy = untrustedPolicy();
  assert.equal(policy.mode, 'custom');
  if (policy.mode !== 'custom') return;
  const from = new MemoryStorage();
  assert.equal(await policy.open({ role: 'backing', name: 'base.qcow2', format: 'qcow2' }, from, true), undefined);
  const data = await policy.open({ role: 'data-file', name: 'disk.raw' }, from, true);
  await assert.rejects(data!.storage.read(new Uint8Array(1), 0), (e) => e instanceof Qcow2Error && e.code === 'DEPENDENCY_DENIED');
  await assert.rejects(data!.storage.write(new Uint8Array(1), 0), (e) => e instanceof Qcow2Error && e.code === 'DEPENDENCY_DENIED');
});

test('unknown features, named from the image feature table; dirty, corrupt, encryption', async () => {
  const table = encodeFeatureTable([{ kind: 'incompatible', bit: 7, name: 'future thing' }]);
  const r = await inspectUntrusted(new MemoryStorage(image({ extensions: [table], incompat: { hi: 0x80000000, lo: (1 << 7) | 0b11 } })), { format: 'qcow2' });
  assert.deepEqual(r['unknown-incompatible-features'], ['future thing', 'bit 63']);
  assert.equal(r.dirty, true);
  assert.equal(r.corrupt, true);
  assert.deepEqual([...r.reasons].sort(), ['corrupt', 'dirty', 'unknown-incompatible-features']);
  assert.match(r['open-error'] ?? '', /Unsupported qcow2 feature/);
  const enc = await inspectUntrusted(new MemoryStorage(image({ headerPatch: { cryptMethod: 2 } })), { format: 'qcow2' });
  assert.equal(enc.encrypted, true);
  assert.equal(enc['encryption-format'], 'luks');
  assert.ok(enc.reasons.includes('encrypted'));
});

test('an oversized L1 table is refused before it is read', async () => {
  // 2M entries (16 MiB) describe 2M * 512 * 4 KiB of disk.
  const bytes = image({ size: 2 ** 21 * 512 * CS, headerPatch: { l1Size: 2 ** 21 } });
  const st = new Watched(bytes);
  const r = await inspectUntrusted(st, { format: 'qcow2' });
  assert.deepEqual(r.reasons, ['metadata-limit']);
  assert.match(r['open-error'] ?? '', /L1 table needs 16777216 bytes, more than the untrusted-image limit of 8388608 bytes/);
  assert.ok(st.largestRead <= CS, `read ${st.largestRead} bytes at once`);
  // The limit is the caller's to set.
  const img = await openUntrusted(new MemoryStorage(bytes), { format: 'qcow2', limits: { maxL1Bytes: 32 << 20, maxMetadataBytes: 32 << 20 } });
  await img.close();
});

test('a snapshot table that keeps growing is cut off at the limit', async () => {
  const bytes = image();
  // 64 entries whose id and name are 64 KiB each: 8 MiB of table, more than the 4 MiB limit.
  const table = new Uint8Array(64 * 131_120);
  const tv = viewOf(table);
  let off = 0;
  for (let i = 0; i < 64; i++) {
    tv.setUint16(off + 12, 0xffff);
    tv.setUint16(off + 14, 0xffff);
    off = Math.ceil((off + 40 + 0x1fffe) / 8) * 8;
  }
  const all = new Uint8Array(bytes.byteLength + table.byteLength);
  all.set(bytes);
  all.set(table, bytes.byteLength);
  const v = viewOf(all);
  v.setUint32(60, 64);
  writeU64(v, 64, bytes.byteLength);
  const st = new Watched(all);
  const r = await inspectUntrusted(st, { format: 'qcow2' });
  assert.deepEqual(r.reasons, ['metadata-limit']);
  assert.match(r['open-error'] ?? '', /^Snapshot table needs \d+ bytes, more than the untrusted-image limit of 4194304 bytes$/);
  assert.ok(st.largestRead <= 4 << 20, `read ${st.largestRead} bytes at once`);
});

test('raw: the declared format wins; a foreign signature is reported', async () => {
  const disk = image();
  const r = await inspectUntrusted(new MemoryStorage(disk), { format: 'raw' });
  assert.equal(r.format, 'raw');
  assert.equal(r['virtual-size'], disk.byteLength);
  assert.equal(r['format-signature'], 'qcow2');
  assert.deepEqual(r.reasons, ['format-mismatch']);
  const plain = await inspectUntrusted(new MemoryStorage(new Uint8Array(4096)), { format: 'raw' });
  assert.equal(plain.safe, true);
  const notQcow2 = await inspectUntrusted(new MemoryStorage(new Uint8Array(4096)), { format: 'qcow2' });
  assert.deepEqual(notQcow2.reasons, ['invalid-image']);
  await assert.rejects(inspectUntrusted(new MemoryStorage(disk), { format: 'vmdk' }), (e) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT');
});

test('format signatures', () => {
  const head = (s: string, at = 0): Uint8Array => {
    const b = new Uint8Array(512);
    for (let i = 0; i < s.length; i++) b[at + i] = s.charCodeAt(i);
    return b;
  };
  assert.equal(formatSignature(head('QFI\xfb\0\0\0\x03')), 'qcow2');
  assert.equal(formatSignature(head('QFI\xfb\0\0\0\x01')), 'qcow');
  assert.equal(formatSignature(head('KDMV')), 'vmdk');
  assert.equal(formatSignature(head('vhdxfile')), 'vhdx');
  assert.equal(formatSignature(head('conectix')), 'vpc');
  assert.equal(formatSignature(head('LUKS\xba\xbe')), 'luks');
  assert.equal(formatSignature(head('\x7f\x10\xda\xbe', 0x40)), 'vdi');
  assert.equal(formatSignature(head('hello')), 'raw');
});

test('borrowStorage leaves closing to the owner', async () => {
  let closed = false;
  const st: Storage = Object.assign(new MemoryStorage(image()), { close: async () => { closed = true; } });
  const img = await openUntrusted(borrowStorage(st), { format: 'qcow2' });
  await img.close();
  assert.equal(closed, false);
});

test('table offsets are validated before anything is read there (fuzz seed 131120)', async () => {
  const bytes = image();
  const v = viewOf(bytes);
  v.setUint32(60, 65535);
  writeU64(v, 64, Number.MAX_SAFE_INTEGER);
  // FuzzStorage rejects reads at unsafe offsets with a HarnessViolation (a bug), not a Qcow2Error.
  const st = new FuzzStorage(bytes, 'img', true, { deadline: Date.now() + 60_000, maxSize: 1 << 30 });
  const r = await inspectUntrusted(st, { format: 'qcow2' });
  assert.deepEqual(r.reasons, ['invalid-image']);
  assert.match(r['open-error'] ?? '', /Snapshot table offset invalid/);
});
