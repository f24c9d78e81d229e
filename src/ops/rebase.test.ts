import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryFiles, runsOf } from './memory-chain.test.helper.js';
import { changeBackingFile, compareSectors, rebaseCopy } from './rebase.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('compareSectors: runs of equal or different whole sectors', () => {
  const a = new Uint8Array(2048);
  const b = new Uint8Array(2048);
  b[600] = 1; // sector 1 differs
  assert.deepEqual(compareSectors(a, b, 2048), { differ: false, length: 512 });
  assert.deepEqual(compareSectors(a.subarray(512), b.subarray(512), 1536), { differ: true, length: 512 });
  b[1100] = 1; // sector 2 differs too
  assert.deepEqual(compareSectors(a.subarray(512), b.subarray(512), 1536), { differ: true, length: 1024 });
  // A short tail counts as a (partial) sector.
  assert.deepEqual(compareSectors(a, a, 700), { differ: false, length: 700 });
});

/** old (2 MiB, 4 KiB clusters) <- top (3 MiB); new (1 MiB raw) differs from old in places. */
async function files(): Promise<MemoryFiles> {
  const f = new MemoryFiles();
  await f.createQcow2('old', { size: 2 * MiB, clusterSize: 4096 });
  await f.write('old', [[0, 5, 1536 * KiB], [4096, 6, 1024]]);
  const neu = new Uint8Array(MiB).fill(5);
  neu.fill(9, 8 * KiB, 8 * KiB + 512); // one differing sector
  f.createRaw('new', neu);
  await f.createQcow2('top', { size: 3 * MiB, backingFile: 'old', backingFormat: 'qcow2' });
  await f.write('top', [[64 * KiB, 1, 64 * KiB], [2 * MiB + 64 * KiB, 2, 4 * KiB]]);
  return f;
}

test('rebaseCopy writes exactly the differing sectors, then the new chain reads the same', async () => {
  const f = await files();
  const before = await f.content('top');
  const top = await f.open('top', { readOnly: false });
  const neu = await f.open('new');
  const steps: number[] = [];
  const r = await rebaseCopy(top, { newBacking: neu, progressStep: (d) => steps.push(d) });
  // Differing: [4096, 5120) (old has 6), [8K, 8K+512) (new has 9), [1M, 1.5M) (new ends, old has 5).
  assert.equal(r.copiedBytes, 1024 + 512 + 512 * KiB);
  assert.equal(r.zeroedBytes, 0);
  // qemu-img's step: 100 / (3 MiB / 2 MiB, in integers) = 100 per compared range.
  assert.ok(steps.length > 0 && steps.every((s) => s === 100), `steps ${steps.join(',')}`);
  await changeBackingFile(top, 'new', 'raw');
  await neu.close();
  await top.close();
  assert.equal(runsOf(await f.content('top')), runsOf(before));
  const reopened = await f.open('top');
  try {
    assert.equal(reopened.backing?.driver.storage.name, 'new');
    assert.equal(reopened.backing?.driver.format, 'raw');
  } finally {
    await reopened.close();
  }
});

test('detaching copies everything the old chain shows', async () => {
  const f = await files();
  const before = await f.content('top');
  const top = await f.open('top', { readOnly: false });
  await rebaseCopy(top, { newBacking: undefined });
  await changeBackingFile(top, undefined, undefined);
  await top.close();
  const detached = await f.open('top');
  try {
    assert.equal(detached.backing, undefined);
  } finally {
    await detached.close();
  }
  assert.equal(runsOf(await f.content('top')), runsOf(before));
});

test('a new backing longer than the old one: zeros are written where the old chain ended', async () => {
  const f = new MemoryFiles();
  f.createRaw('old', new Uint8Array(64 * KiB).fill(3));
  f.createRaw('new', new Uint8Array(256 * KiB).fill(4));
  await f.createQcow2('top', { size: 256 * KiB, backingFile: 'old', backingFormat: 'raw' });
  const before = await f.content('top');
  const top = await f.open('top', { readOnly: false });
  const neu = await f.open('new');
  const r = await rebaseCopy(top, { newBacking: neu });
  assert.deepEqual(r, { copiedBytes: 64 * KiB, zeroedBytes: 192 * KiB });
  await changeBackingFile(top, 'new', 'raw');
  await neu.close();
  await top.close();
  assert.equal(runsOf(await f.content('top')), runsOf(before));
});

test('rebasing onto a layer of the old chain skips what no layer above it changed', async () => {
  const f = new MemoryFiles();
  await f.createQcow2('base', { size: MiB });
  await f.write('base', [[0, 1, MiB]]);
  await f.createQcow2('mid', { size: MiB, backingFile: 'base', backingFormat: 'qcow2' });
  await f.write('mid', [[128 * KiB, 2, 64 * KiB]]);
  await f.createQcow2('top', { size: MiB, backingFile: 'mid', backingFormat: 'qcow2' });
  const before = await f.content('top');
  const top = await f.open('top', { readOnly: false });
  const steps: number[] = [];
  const r = await rebaseCopy(top, { newBacking: top.backing!.backing, prefixDepth: 2, progressStep: (d) => steps.push(d) });
  assert.deepEqual(r, { copiedBytes: 64 * KiB, zeroedBytes: 0 });
  assert.equal(steps.length, 1, 'only the range mid changed is compared');
  await changeBackingFile(top, 'base', 'qcow2');
  await top.close();
  assert.equal(runsOf(await f.content('top')), runsOf(before));
});

test('changeBackingFile refuses names longer than 1023 bytes and raw images', async () => {
  const f = await files();
  const top = await f.open('top', { readOnly: false, backing: false });
  const raw = await f.open('new', { readOnly: false });
  try {
    await assert.rejects(changeBackingFile(top, 'x'.repeat(1024), 'raw'), (e: unknown) => (e as { context: { errno?: string } }).context.errno === 'EINVAL');
    await assert.rejects(changeBackingFile(raw, 'old', 'qcow2'), (e: unknown) => (e as { code?: string }).code === 'UNSUPPORTED');
  } finally {
    await raw.close();
    await top.close();
  }
});
