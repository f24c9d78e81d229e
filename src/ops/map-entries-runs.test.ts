import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsCodecs } from '../codecs/codecs-js.js';
import type { FormatDriver } from '../format/driver.js';
import { buildQcow2, pattern, type BuiltEntry } from '../format/qcow2/qcow2-builder.test.helper.js';
import { openImage } from '../image/open-image.js';
import type { ImageReader } from '../image/types.js';
import { MemoryStorage } from '../storage/memory-storage.js';
import { Qcow2Error } from '../errors.js';
import { mapEntries, mapEntryBatches, type MapEntry } from './map-entries.js';

/** xorshift PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

async function collect(image: ImageReader, range: { start?: number; length?: number }): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  for await (const e of mapEntries(image, range)) out.push(e);
  return out;
}

/** The same image seen through a driver without `mapRuns`: every run goes through blockStatus. */
function statusOnly(image: ImageReader): ImageReader {
  return {
    size: image.size,
    backing: image.backing,
    driver: {} as FormatDriver,
    read: (dst, off) => image.read(dst, off),
    blockStatus: (off, len) => image.blockStatus(off, len),
    close: () => image.close(),
  };
}

/** A random L2 layout: every kind of entry, extended L2 bitmaps, runs of neighbouring data. */
function randomEntries(next: () => number, clusters: number, ext: boolean): BuiltEntry[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  const entries: BuiltEntry[] = [];
  const used = new Set<number>();
  const count = Math.floor(next() * clusters * 0.7);
  for (let n = 0; n < count; n++) {
    // Runs of neighbours (whose data lands contiguously) and scattered clusters.
    const first = Math.floor(next() * clusters);
    const len = next() < 0.5 ? 1 : 1 + Math.floor(next() * 6);
    const kind = pick(['data', 'data', 'zero', 'zero-alloc', 'compressed'] as const);
    for (let c = first; c < Math.min(clusters, first + len); c++) {
      if (used.has(c)) continue;
      used.add(c);
      const alloc = next() < 0.5 ? 0xffffffff : Math.floor(next() * 2 ** 32);
      const bitmap = kind === 'data' ? { alloc, zero: next() < 0.3 ? ~alloc & Math.floor(next() * 2 ** 32) : 0 }
        : kind === 'zero' || kind === 'zero-alloc' ? { alloc: 0, zero: next() < 0.5 ? 0xffffffff : Math.floor(next() * 2 ** 32) }
        : { alloc: 0, zero: 0 };
      entries.push({
        cluster: c, kind,
        ...(kind === 'compressed' ? { bytes: pattern(100 + Math.floor(next() * 300), c) } : {}),
        ...(ext ? { bitmap } : {}),
      });
    }
  }
  // Data placed out of guest order, so that neighbours do not always have neighbouring hosts.
  return next() < 0.5 ? entries : entries.sort(() => next() - 0.5);
}

test('map entries from driver runs equal those from block status, with and without a backing file', async () => {
  const next = rng(20261203);
  for (let trial = 0; trial < 150; trial++) {
    const bits = [9, 10, 12, 16][trial % 4]!;
    const cs = 2 ** bits;
    const ext = trial % 3 === 0 && bits >= 14;
    const l2Entries = cs / (ext ? 16 : 8);
    const clusters = 1 + Math.floor(next() * Math.min(3 * l2Entries, 300));
    const size = clusters * cs - (next() < 0.3 ? Math.floor(next() * cs) & ~511 : 0);
    const backingSize = next() < 0.5 ? 0 : Math.max(512, Math.floor(next() * size * 1.5) & ~511);
    const bytes = buildQcow2({
      clusterBits: bits, size, extendedL2: ext, entries: randomEntries(next, clusters, ext),
      ...(backingSize > 0 ? { backingName: 'base.raw' } : {}),
    });
    const image = await openImage(new MemoryStorage(bytes, 'top.qcow2', true), {
      format: 'qcow2', codecs: jsCodecs, readOnly: true,
      policy: { mode: 'custom', async open() { return { storage: new MemoryStorage(new Uint8Array(backingSize), 'base.raw', true), format: 'raw' }; } },
    });
    try {
      const ranges = [{}, { start: Math.floor(next() * size) }, { start: Math.floor(next() * size), length: Math.floor(next() * size) }];
      for (const range of ranges) {
        const fast = await collect(image, range);
        const slow = await collect(statusOnly(image), range);
        assert.deepEqual(fast, slow, `trial ${trial}: ${cs} B clusters, ext ${ext}, backing ${backingSize}, range ${JSON.stringify(range)}`);
      }
    } finally {
      await image.close();
    }
  }
});

test('a corrupt L2 table met while the consumer holds a batch fails the map, with no unhandled rejection', async () => {
  // 1 KiB clusters: 128 entries per L2 table. Table 0 holds data; table 1 an unaligned entry.
  const bytes = buildQcow2({
    clusterBits: 10, size: 2 * 128 * 1024,
    entries: [{ cluster: 0, kind: 'data' }, { cluster: 2, kind: 'data' }, { cluster: 128, kind: 'raw-entry', hi: 0x80000000, lo: 0x200 }],
  });
  const table1 = new DataView(bytes.buffer).getUint32(3 * 1024 + 12); // L1[1], low word (< 4 GiB)
  // Table 1 loads slowly, so the map reaches it while its load is still in flight.
  class SlowTable extends MemoryStorage {
    override async read(dst: Uint8Array, offset: number): Promise<void> {
      if (offset === table1) await new Promise((resolve) => setTimeout(resolve, 20));
      return super.read(dst, offset);
    }
  }
  const image = await openImage(new SlowTable(bytes, 'bad.qcow2', true), { format: 'qcow2', codecs: jsCodecs, readOnly: true });
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const consume = async (): Promise<void> => {
      for await (const batch of mapEntryBatches(image, {})) {
        assert.ok(batch.length > 0);
        await new Promise((resolve) => setTimeout(resolve, 60)); // a slow consumer (a full pipe)
      }
    };
    await assert.rejects(consume(), (e: unknown) => e instanceof Qcow2Error && e.code === 'CORRUPT');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
    await image.close();
  }
});
