import assert from 'node:assert/strict';
import { test } from 'node:test';
import { commitImage, commitRuns, emptyImage } from './commit.js';
import { MemoryFiles, runsOf } from './memory-chain.test.helper.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** base (1 MiB) <- mid (2 MiB) <- top (3 MiB), 64 KiB clusters except mid (4 KiB). */
async function chain(): Promise<MemoryFiles> {
  const f = new MemoryFiles();
  await f.createQcow2('base', { size: MiB });
  await f.createQcow2('mid', { size: 2 * MiB, clusterSize: 4096, backingFile: 'base', backingFormat: 'qcow2' });
  await f.createQcow2('top', { size: 3 * MiB, backingFile: 'mid', backingFormat: 'qcow2' });
  await f.write('base', [[0, 1, MiB]]);
  await f.write('mid', [[64 * KiB, 2, 8 * KiB], [1536 * KiB, 2, 4 * KiB]]);
  await f.write('top', [[128 * KiB, 3, 100], [256 * KiB, 'zero', 64 * KiB], [2 * MiB + 64 * KiB, 3, 64 * KiB]]);
  return f;
}

test('commitRuns: what the layers above the base decide, zeros past a short intermediate layer', async () => {
  const f = await chain();
  const top = await f.open('top');
  try {
    const intoMid = await commitRuns(top, 1);
    assert.deepEqual(intoMid, [
      { offset: 128 * KiB, length: 64 * KiB, zero: false },
      { offset: 256 * KiB, length: 64 * KiB, zero: true },
      { offset: 2 * MiB + 64 * KiB, length: 64 * KiB, zero: false },
    ]);
    const intoBase = await commitRuns(top, 2);
    assert.deepEqual(intoBase, [
      { offset: 64 * KiB, length: 8 * KiB, zero: false },
      { offset: 128 * KiB, length: 64 * KiB, zero: false },
      { offset: 256 * KiB, length: 64 * KiB, zero: true },
      { offset: 1536 * KiB, length: 4 * KiB, zero: false },
      // mid ends at 2 MiB: QEMU treats [2M, 3M) as zeros allocated in mid.
      { offset: 2 * MiB, length: 64 * KiB, zero: true },
      { offset: 2 * MiB + 64 * KiB, length: 64 * KiB, zero: false },
      { offset: 2 * MiB + 128 * KiB, length: MiB - 128 * KiB, zero: true },
    ]);
  } finally {
    await top.close();
  }
});

test('commit into the backing file, grow it, then empty the overlay', async () => {
  const f = await chain();
  const before = await f.content('top');
  const top = await f.open('top', { readOnly: false });
  const mid = await f.open('mid', { readOnly: false });
  const percents: number[] = [];
  const r = await commitImage(top, { baseDepth: 1, base: mid, progress: (p) => percents.push(p) });
  assert.equal(r.grewBase, true);
  assert.equal(r.copiedBytes, 128 * KiB);
  assert.equal(r.zeroedBytes, 64 * KiB);
  assert.equal(percents[0], 0);
  assert.equal(percents.at(-1), 100);
  await mid.close();
  await emptyImage(top);
  await top.close();

  assert.equal(runsOf(await f.content('mid')), runsOf(before));
  assert.equal(runsOf(await f.content('top')), runsOf(before));
  const emptied = await f.open('top', { backing: false });
  try {
    const st = await emptied.blockStatus(0, emptied.size);
    assert.deepEqual([st.present, st.length], [false, 3 * MiB], 'every cluster of the overlay is unallocated again');
  } finally {
    await emptied.close();
  }
});

test('commit two layers down leaves the intermediate and the overlay as they were', async () => {
  const f = await chain();
  const before = await f.content('top');
  // What mid itself holds; through the changed base it now shows more (as with QEMU).
  const midBefore = await f.content('mid', { backing: false });
  const top = await f.open('top', { readOnly: false });
  const base = await f.open('base', { readOnly: false });
  await commitImage(top, { baseDepth: 2, base });
  await base.close();
  await top.close();
  assert.equal(runsOf(await f.content('base')), runsOf(before));
  assert.equal(runsOf(await f.content('mid', { backing: false })), runsOf(midBefore));
  assert.equal(runsOf(await f.content('top')), runsOf(before));
});

test('emptyImage also drops the partial last cluster', async () => {
  const f = new MemoryFiles();
  f.createRaw('base', new Uint8Array(100 * KiB).fill(7));
  await f.createQcow2('top', { size: 100 * KiB, backingFile: 'base', backingFormat: 'raw' });
  await f.write('top', [[0, 1, 100 * KiB]]);
  const top = await f.open('top', { readOnly: false });
  await emptyImage(top);
  await top.close();
  assert.equal(runsOf(await f.content('top')), `0+${100 * KiB}:7`);
});

test('commitImage refuses a base depth outside the chain', async () => {
  const f = await chain();
  const top = await f.open('top');
  const base = await f.open('base');
  try {
    await assert.rejects(commitImage(top, { baseDepth: 3, base }), /Invalid base depth/);
    await assert.rejects(commitImage(top, { baseDepth: 0, base }), /Invalid base depth/);
  } finally {
    await base.close();
    await top.close();
  }
});
