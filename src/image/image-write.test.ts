import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync, inflateRawSync, constants } from 'node:zlib';
import { MemoryStorage } from '../storage/memory-storage.js';
import { buildQcow2, pattern } from '../format/qcow2/qcow2-builder.test.helper.js';
import { Qcow2Error } from '../errors.js';
import type { CodecSet } from '../codecs/codec.js';
import { openImage } from './open-image.js';
import type { Image } from './image.js';

const codecs: CodecSet = {
  decompressor: () => ({
    async decompress(src, dst) {
      const out = inflateRawSync(src, { finishFlush: constants.Z_SYNC_FLUSH });
      if (out.byteLength < dst.byteLength) throw new Qcow2Error('DECOMPRESS', 'short');
      dst.set(out.subarray(0, dst.byteLength));
    },
  }),
  compressor: () => ({ async compress() { return undefined; } }),
};

/** xorshift PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

interface Setup {
  image: Image;
  model: Uint8Array;
  reopen(): Promise<Image>;
}

async function setup(opts: { clusterBits: number; size: number; extendedL2?: boolean; backing?: boolean; compressed?: boolean; version?: 2 | 3 }): Promise<Setup> {
  const cs = 2 ** opts.clusterBits;
  const base = opts.backing ? pattern(opts.size, 77) : undefined;

  const model = base ? base.slice() : new Uint8Array(opts.size);
  const entries = [];
  if (opts.compressed) {
    const data = pattern(cs, 5).map((b, i) => (i % 5 ? 0x33 : b));
    entries.push({ cluster: 1, kind: 'compressed' as const, bytes: deflateRawSync(data, { windowBits: 12 }) });
    model.set(data, cs);
  }
  entries.push({ cluster: 2, kind: 'data' as const, bytes: pattern(cs, 6), ...(opts.extendedL2 ? { bitmap: { alloc: 0xffffffff, zero: 0 } } : {}) });
  model.set(pattern(cs, 6), 2 * cs);
  let top = new MemoryStorage(buildQcow2({
    clusterBits: opts.clusterBits, size: opts.size, extendedL2: opts.extendedL2 ?? false, entries, version: opts.version ?? 3,
    ...(opts.backing ? { backingName: 'base.raw' } : {}),
  }), 'top.qcow2');
  // Each open gets a fresh storage over the bytes the previous one left (close() closes it).
  const reopen = () => openImage(top = new MemoryStorage(top.bytes().slice(), 'top.qcow2'), {
    format: 'qcow2', codecs, readOnly: false,
    policy: { mode: 'custom', async open() { return { storage: new MemoryStorage(base!.slice(), 'base.raw', true), format: 'raw' }; } },
  });
  return { image: await reopen(), model, reopen };
}

async function assertContent(image: Image, model: Uint8Array, label: string): Promise<void> {
  const out = new Uint8Array(model.byteLength);
  await image.read(out, 0);
  for (let i = 0; i < model.byteLength; i++) {
    if (out[i] !== model[i]) assert.fail(`${label}: first difference at byte ${i} (got ${out[i]}, want ${model[i]})`);
  }
}

const configs = [
  { name: '64k clusters', clusterBits: 16, size: 4 << 20 },
  { name: '64k clusters over a backing file, compressed cluster', clusterBits: 16, size: 4 << 20, backing: true, compressed: true },
  { name: 'extended L2 over a backing file', clusterBits: 16, size: 4 << 20, extendedL2: true, backing: true },
  { name: '512-byte clusters (refcount table growth)', clusterBits: 9, size: 1 << 20 },
  { name: 'v2 image over a backing file', clusterBits: 12, size: 1 << 20, backing: true, version: 2 as const },
];

for (const cfg of configs) {
  test(`random concurrent writes, zeroes, discards and reads match a model: ${cfg.name}`, async () => {
    const s = await setup(cfg);
    const rand = rng(cfg.clusterBits * 1000 + (cfg.backing ? 1 : 0) + (cfg.extendedL2 ? 2 : 0));
    const size = cfg.size;
    const cs = 2 ** cfg.clusterBits;
    let image = s.image;
    for (let round = 0; round < 40; round++) {
      // A batch of concurrent operations on possibly overlapping ranges, applied to the model
      // in issue order: the engine serialises overlapping writes in that order.
      const ops: Promise<void>[] = [];
      for (let k = 0; k < 12; k++) {
        let off = Math.floor(rand() * size);
        let len = Math.max(1, Math.min(size - off, Math.floor(rand() * (rand() < 0.5 ? 3 * cs : 9000))));
        if (rand() < 0.3) {
          // Whole clusters: fresh ones are allocated without copy-on-write.
          off = Math.floor(off / cs) * cs;
          len = Math.min(size - off, Math.ceil(len / cs) * cs);
        }
        const kind = rand();
        if (kind < 0.55) {
          const data = pattern(len, round * 100 + k);
          s.model.set(data, off);
          ops.push(image.write(data, off));
        } else if (kind < 0.7) {
          s.model.fill(0, off, off + len);
          ops.push(image.writeZeroes(off, len, { unmap: rand() < 0.5 }));
        } else if (kind < 0.8) {
          // Discard: whole clusters only; they read as zeros (v3, or without backing) or as backing.
          const first = Math.ceil(off / cs) * cs;
          const last = Math.floor((off + len) / cs) * cs;
          if (first < last && cfg.version !== 2) s.model.fill(0, first, last);
          if (first < last && cfg.version === 2) continue;
          ops.push(image.discard(off, len));
        } else {
          const snapshot = s.model.slice(off, off + len);
          const buf = new Uint8Array(len);
          // Reads concurrent with writes to the same range may see either version; only check quiet ranges.
          ops.push(image.read(buf, off).then(() => void snapshot));
        }
      }
      await Promise.all(ops);
      if (round % 10 === 9) {
        await image.close();
        image = await s.reopen();
        await assertContent(image, s.model, `${cfg.name} after reopen, round ${round}`);
      }
    }
    await assertContent(image, s.model, cfg.name);
    await image.close();
  });
}

test('writes to a read-only image are refused', async () => {
  const img = buildQcow2({ size: 1 << 20 });
  const image = await openImage(new MemoryStorage(img), { format: 'qcow2', codecs });
  await assert.rejects(image.write(new Uint8Array(10), 0), (e: unknown) => e instanceof Qcow2Error && e.code === 'READ_ONLY');
});

test('a write that would hit metadata marks the image corrupt instead of damaging it', async () => {
  const cs = 65536;
  // Cluster 0's L2 entry claims the L1 table (cluster 3) as its data, COPIED set (iotest 060).
  const bytes = buildQcow2({ size: 1 << 20, entries: [{ cluster: 0, kind: 'raw-entry', hi: 0x80000000, lo: 3 * cs }] });
  const store = new MemoryStorage(bytes, 'bad.qcow2');
  const image = await openImage(store, { format: 'qcow2', codecs, readOnly: false });
  await assert.rejects(image.write(new Uint8Array(512).fill(1), 0),
    (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT' && /overlaps with active L1 table/.test(e.message));
  await assert.rejects(image.write(new Uint8Array(512), cs), (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT');
  const after = store.bytes().slice();
  // The L1 table is intact and the corrupt bit is set on disk.
  assert.deepEqual(after.subarray(3 * cs, 3 * cs + 16), bytes.subarray(3 * cs, 3 * cs + 16));
  assert.equal(after[79]! & 2, 2);
  await assert.rejects(openImage(new MemoryStorage(after.slice()), { format: 'qcow2', codecs, readOnly: false }),
    (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT');
  const ro = await openImage(new MemoryStorage(after.slice()), { format: 'qcow2', codecs });
  await ro.read(new Uint8Array(512), 0);
  // The same for the other tables of the builder's layout: refcount block (2) and L2 table (4).
  for (const [cluster, name] of [[2, 'refcount block'], [4, 'active L2 table']] as const) {
    const img = buildQcow2({ size: 1 << 20, entries: [{ cluster: 0, kind: 'raw-entry', hi: 0x80000000, lo: cluster * cs }] });
    const target = await openImage(new MemoryStorage(img), { format: 'qcow2', codecs, readOnly: false });
    await assert.rejects(target.write(new Uint8Array(4096).fill(1), 8192),
      (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT' && e.message.includes(`overlaps with ${name}`), name);
  }
});
