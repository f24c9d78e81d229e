import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Qcow2Driver } from '../../format/qcow2/qcow2-driver.js';
import { buildQcow2, pattern } from '../../format/qcow2/qcow2-builder.test.helper.js';
import { jsCodecs } from '../../codecs/codecs-js.js';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { FuzzStorage } from '../../fuzz/fuzz-storage.js';
import { checkQcow2 } from './check-qcow2.js';
import { viewOf } from '../../util/bytes.js';
import {
  CS, dataCluster, getRefcount, getU64, grow, imageWithData, L1, L2, REFBLOCK, REFTABLE, runCheck, setRefcount, setU32, setU64,
  setU64Parts,
} from './damaged-image.test.helper.js';

/** Guest bytes of `length` at `offset`, read through the library's own driver. */
async function readGuest(bytes: Uint8Array, offset: number, length: number): Promise<Uint8Array> {
  const drv = await Qcow2Driver.open(new MemoryStorage(bytes.slice()), { readOnly: true, codecs: jsCodecs });
  const m = await drv.getMapping(offset, length);
  assert.equal(m.kind, 'data');
  const out = new Uint8Array(length);
  if (m.kind === 'data') await m.storage.read(out, m.hostOffset);
  return out;
}

describe('check of consistent images', () => {
  it('finds nothing wrong and reports the allocation statistics', async () => {
    const r = await runCheck(imageWithData(3));
    assert.equal(r.exitCode, 0);
    assert.deepEqual(r.lines, []);
    assert.equal(r.result?.totalClusters, 1024);
    assert.equal(r.result?.allocatedClusters, 3);
    assert.equal(r.result?.fragmentedClusters, 0);
    assert.equal(r.result?.imageEndOffset, dataCluster(3));
    assert.equal(r.repaired, undefined);
  });

  it('counts a cluster stored out of order as fragmented', async () => {
    const img = imageWithData(3);
    // Swap the hosts of guest clusters 1 and 2.
    setU64Parts(img, L2 + 8, 0x80000000, dataCluster(2));
    setU64Parts(img, L2 + 16, 0x80000000, dataCluster(1));
    const r = await runCheck(img);
    assert.equal(r.exitCode, 0);
    assert.equal(r.result?.fragmentedClusters, 2);
  });
});

describe('leaks', () => {
  it('reports a leaked cluster (exit 3) and frees it with -r leaks', async () => {
    const img = grow(imageWithData(1), dataCluster(2));
    setRefcount(img, 6, 1); // nothing references cluster 6
    const before = await runCheck(img);
    assert.equal(before.exitCode, 3);
    assert.deepEqual(before.lines, ['Leaked cluster 6 refcount=1 reference=0']);
    assert.equal(before.result?.leaks, 1);

    const fixed = await runCheck(img, 'leaks');
    assert.equal(fixed.exitCode, 0);
    assert.deepEqual(fixed.repaired, { leaks: 1, corruptions: 0 });
    assert.equal(fixed.result?.leaksFixed, 1);
    assert.deepEqual(fixed.lines, ['Leaked cluster 6 refcount=1 reference=0', 'Repairing cluster 6 refcount=1 reference=0']);
    assert.equal(getRefcount(fixed.bytes, 6), 0);
  });
});

describe('corruptions', () => {
  it('reports a refcount below its references and fixes it in place with -r all', async () => {
    const img = imageWithData(1);
    setU64Parts(img, L2 + 8, 0x80000000, dataCluster(0)); // two guest clusters share one host cluster
    const before = await runCheck(img);
    assert.equal(before.exitCode, 2);
    // Both entries carry COPIED, which matches the on-disk refcount of 1: only the count is wrong.
    assert.deepEqual(before.lines, ['ERROR cluster 5 refcount=1 reference=2']);
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.equal(getRefcount(fixed.bytes, 5), 2);
    // COPIED is cleared on both entries: the cluster is shared.
    assert.equal(getU64(fixed.bytes, L2), dataCluster(0));
    assert.equal(getU64(fixed.bytes, L2 + 8), dataCluster(0));
    assert.deepEqual(fixed.repaired, { leaks: 0, corruptions: 3 });
  });

  it('leaves corruptions alone with -r leaks', async () => {
    const img = imageWithData(1);
    setU64Parts(img, L2 + 8, 0x80000000, dataCluster(0));
    const r = await runCheck(img, 'leaks');
    assert.equal(r.exitCode, 2);
    assert.equal(getRefcount(r.bytes, 5), 1);
  });

  it('rebuilds the refcount structure when a used cluster has refcount 0, without touching data (iotest 039)', async () => {
    const img = imageWithData(2);
    setRefcount(img, 6, 0);
    const before = await runCheck(img);
    assert.equal(before.exitCode, 2);
    assert.deepEqual(before.lines, ['ERROR cluster 6 refcount=0 reference=1', 'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000060000 refcount=0']);

    const r = await runCheck(img, 'leaks');
    assert.equal(r.exitCode, 1, 'a rebuild needs -r all');
    assert.equal(r.failure?.errno, 'EIO');
    assert.deepEqual(r.lines, ['ERROR cluster 6 refcount=0 reference=1', 'ERROR need to rebuild refcount structures']);

    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.deepEqual(fixed.lines, [
      'ERROR cluster 6 refcount=0 reference=1',
      'Rebuilding refcount structure',
      'Repairing cluster 1 refcount=1 reference=0',
      'Repairing cluster 2 refcount=1 reference=0',
    ]);
    // The new refcount block and table went to the first free clusters, past the data.
    const reftable = getU64(fixed.bytes, 48);
    assert.equal(reftable, 8 * CS);
    assert.equal(getU64(fixed.bytes, reftable), 7 * CS);
    assert.deepEqual(await readGuest(fixed.bytes, CS, CS), pattern(CS, 2));
    assert.equal((await runCheck(fixed.bytes)).exitCode, 0);
  });

  it('rebuilds an image without a refcount table (iotest 108)', async () => {
    const img = imageWithData(1);
    setU64(img, 48, 0);
    setU32(img, 56, 0);
    const before = await runCheck(img);
    assert.equal(before.exitCode, 2);
    assert.deepEqual(before.lines, [0, 3, 4, 5].map((c) => `ERROR cluster ${c} refcount=0 reference=1`)
      .concat(['ERROR OFLAG_COPIED L2 cluster: l1_index=0 l1_entry=8000000000040000 refcount=0',
        'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0']));
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.equal(fixed.result?.corruptionsFixed, 4);
    assert.deepEqual(await readGuest(fixed.bytes, 0, CS), pattern(CS, 1));
  });

  it('grows the file over a refcount block past its end (iotest 108, otherwise clean)', async () => {
    const img = imageWithData(0);
    setU64(img, REFTABLE + 8, 16 * CS);
    setRefcount(img, 16, 1);
    const before = await runCheck(img);
    assert.equal(before.exitCode, 2);
    assert.deepEqual(before.lines, ['ERROR refcount block 1 is outside image']);
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.deepEqual(fixed.lines, ['Repairing refcount block 1 is outside image']);
    assert.equal(fixed.bytes.byteLength, 17 * CS);
  });

  it('rebuilds instead of growing the file to an absurd offset (iotest 108, overflow)', async () => {
    const img = imageWithData(0);
    setU64Parts(img, REFTABLE + 8, 0x7fffffff, 0xffff0000);
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.deepEqual(fixed.lines, [
      'Repairing refcount block 1 is outside image',
      'ERROR could not resize image: Invalid argument',
      'Rebuilding refcount structure',
      'Repairing cluster 1 refcount=1 reference=0',
      'Repairing cluster 2 refcount=1 reference=0',
    ]);
  });

  it('turns an unaligned preallocated zero cluster into a plain zero cluster', async () => {
    const img = imageWithData(1);
    setU64Parts(img, L2, 0x80000000, dataCluster(0) + 0x201);
    const before = await runCheck(img);
    assert.equal(before.exitCode, 2);
    assert.equal(before.lines[0], 'ERROR offset=50200: Preallocated cluster is not properly aligned; L2 entry corrupted.');
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.equal(fixed.lines[0], 'Repairing offset=50200: Preallocated cluster is not properly aligned; L2 entry corrupted.');
    assert.equal(getU64(fixed.bytes, L2), 1);
  });

  it('reports reserved bits, unaligned tables and unaligned data clusters', async () => {
    const img = imageWithData(2);
    setU64Parts(img, L1, 0x81000000, L2); // reserved bit 56 in the L1 entry
    setU64Parts(img, L2 + 8, 0x80000000, dataCluster(1) + 0x202); // reserved bit 1, unaligned data cluster
    const r = await runCheck(img);
    assert.equal(r.exitCode, 2);
    assert.deepEqual(r.lines.slice(0, 3), [
      'ERROR found L1 entry with reserved bits set: 8100000000040000',
      'ERROR found l2 entry with reserved bits set: 8000000000060202',
      'ERROR offset=60200: Data cluster is not properly aligned; L2 entry corrupted.',
    ]);
  });

  it('reports COPIED on a compressed cluster', async () => {
    const img = imageWithData(1);
    // A compressed descriptor (one sector) at data cluster 0, with COPIED.
    setU64Parts(img, L2 + 8, 0xc0000000, dataCluster(0) + 512);
    const r = await runCheck(img);
    assert.equal(r.lines[0], 'ERROR: coffset=0x50200: copied flag must never be set for compressed clusters');
    assert.equal(r.result?.compressedClusters, 1);
  });

  it('refuses a repair write onto other metadata and marks the image corrupt (iotest 060)', async () => {
    const img = imageWithData(0);
    setU64Parts(img, L1, 0x80000000, L1); // the L1 table is its own L2 table
    const r = await runCheck(img, 'all');
    assert.equal(r.exitCode, 1);
    assert.equal(r.failure?.errno, 'EIO');
    assert.equal(r.lines.at(-1), 'qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with active L2 table); further corruption events will be suppressed');
    assert.equal(viewOf(r.bytes).getUint32(76) & 2, 2, 'corrupt bit set');
  });
});

describe('refcount table problems', () => {
  it('reports an unaligned refcount block like qemu-img and repairs it where qemu-img 7.2 cannot', async () => {
    const img = imageWithData(1);
    setU64(img, REFTABLE, REFBLOCK + 0x200);
    const r = await runCheck(img);
    assert.equal(r.exitCode, 1);
    assert.deepEqual(r.lines.slice(0, 3), [
      'ERROR refcount block 0 is not cluster aligned; refcount table entry corrupted',
      'qcow2: Image is corrupt: Refblock offset 0x20200 unaligned (reftable index: 0); further non-fatal corruption events will be suppressed',
      "Can't get refcount for cluster 0: Input/output error",
    ]);
    assert.equal(r.result?.checkErrors, 6);
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
    assert.equal((await runCheck(fixed.bytes)).exitCode, 0);
  });

  it('prints 64-bit refcounts above 2^53 exactly', async () => {
    const img = imageWithData(1, { headerPatch: { refcountOrder: 6 } });
    // Rewrite the refcount block with 64-bit entries: clusters 0-5 in use, cluster 5 at 2^64 - 1.
    img.fill(0, REFBLOCK, REFBLOCK + CS);
    for (let c = 0; c < 5; c++) setU64(img, REFBLOCK + c * 8, 1);
    setU64Parts(img, REFBLOCK + 40, 0xffffffff, 0xffffffff);
    const r = await runCheck(img);
    assert.equal(r.exitCode, 2);
    assert.deepEqual(r.lines, [
      'Leaked cluster 5 refcount=18446744073709551615 reference=1',
      'ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=18446744073709551615',
    ]);
    const fixed = await runCheck(img, 'all');
    assert.equal(fixed.exitCode, 0);
  });
});

describe('bounded memory on hostile images (iotest 138)', () => {
  it('does not size anything by a data cluster at 32 PB', async () => {
    const img = imageWithData(1);
    setU64Parts(img, L2, 0x80800000, 0);
    const r = await runCheck(img, 'none', 1 << 20);
    assert.equal(r.exitCode, 2);
    assert.equal(r.lines[0], 'ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x80000000000000 size 0x10000');
  });

  it('fails cleanly when the refcount array would exceed its memory cap', async () => {
    const r = await runCheck(imageWithData(1), 'none', 16);
    assert.equal(r.exitCode, 1);
    assert.equal(r.failure?.errno, 'ENOMEM');
  });
});

describe('feature bits', () => {
  it('clears the dirty and corrupt bits after a clean repair, keeps them otherwise', async () => {
    const img = imageWithData(1, { incompat: { hi: 0, lo: 3 } });
    const ro = await runCheck(img);
    assert.equal(ro.exitCode, 0);
    assert.equal(viewOf(ro.bytes).getUint32(76), 3, 'a read-only check changes nothing');
    const fixed = await runCheck(img, 'leaks');
    assert.equal(viewOf(fixed.bytes).getUint32(76), 0);

    const broken = imageWithData(1, { incompat: { hi: 0, lo: 1 } });
    setU64Parts(broken, L2 + 8, 0x80000000, dataCluster(0));
    const partial = await runCheck(broken, 'leaks');
    assert.equal(partial.exitCode, 2);
    // qemu-img 7.2 clears the dirty bit here anyway; refcounts are still wrong, so we keep it.
    assert.equal(viewOf(partial.bytes).getUint32(76), 1);
  });

  it('clears unknown autoclear bits when repairing', async () => {
    const img = imageWithData(1, { headerPatch: { autoclearFeatures: { hi: 0x80000000, lo: 0 } } });
    const r = await runCheck(img, 'leaks');
    assert.equal(r.exitCode, 0);
    assert.equal(getU64(r.bytes, 88), 0);
    const ro = await runCheck(img);
    assert.equal(viewOf(ro.bytes).getUint32(88), 0x80000000);
  });
});

describe('extended L2 entries', () => {
  it('reports a subcluster that is both allocated and zero', async () => {
    const img = imageWithData(0, { extendedL2: true, entries: [{ cluster: 0, kind: 'data', bitmap: { alloc: 1, zero: 1 } }] });
    const r = await runCheck(img);
    assert.equal(r.exitCode, 2);
    assert.deepEqual(r.lines, ['ERROR offset=50000: Allocated cluster has corrupted subcluster allocation bitmap']);
  });
});

describe('image that cannot be opened', () => {
  it('throws a Qcow2Error (qemu-img: Could not open)', async () => {
    const img = imageWithData(0);
    setU32(img, 20, 30);
    await assert.rejects(runCheck(img), /Unsupported cluster size: 2\^30/);
  });
});

describe('offsets at the edge of exact integers', () => {
  it('a refblock whose end would pass 2^53 reads as zeros and is never read inexactly', async () => {
    // Found by the fuzzer: reftable entry 0x1fffffffff0000 (the storage flags the read).
    for (const repair of ['none', 'all'] as const) {
      // 512-byte clusters: a file past 256 clusters makes the check look at refblock 1.
      const small = buildQcow2({ size: 1 << 20, clusterBits: 9, entries: [{ cluster: 0, kind: 'data', bytes: pattern(512, 1) }] });
      const img = grow(small, 300 * 512);
      setU64Parts(img, 512 + 8, 0x1fffff, 0xfffffe00);
      const storage = new FuzzStorage(img, 'edge.qcow2', repair === 'none', { deadline: Date.now() + 60_000, maxSize: 64 << 20 });
      const lines: string[] = [];
      const outcome = await checkQcow2(storage, { repair, reporter: { line: (t) => lines.push(t), error: (t) => lines.push(t) } });
      assert.ok(outcome.exitCode >= 0, `${repair}: ${lines.join('\n')}`);
    }
  });

});
