import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Qcow2Error } from '../errors.js';
import { compareImages } from './compare.js';
import { FakeImage, type FakeRun } from './fake-image.test.helper.js';

const K = 1024;
const M = 1024 * 1024;

const data = (length: number, fill?: FakeRun['fill']): FakeRun => (fill === undefined ? { length, kind: 'data' } : { length, kind: 'data', fill });
const zero = (length: number): FakeRun => ({ length, kind: 'zero' });
const hole = (length: number): FakeRun => ({ length, kind: 'unallocated' });

test('compareImages() finds identical content whatever the allocation', async () => {
  const a = new FakeImage([data(M, 7), hole(3 * M), data(2 * M, 0), zero(M), data(5 * M + 512, 9)]);
  const b = new FakeImage([data(M, 7), zero(M), data(2 * M, 0), hole(3 * M), data(5 * M + 512, 9)], { statusGranularity: 64 * K });
  assert.deepEqual(await compareImages(a, b), { status: 'identical', exitCode: 0, sizeMismatch: false });
  // Ranges both sides report as zero were never read.
  assert.deepEqual(a.badReads, []);
  assert.deepEqual(b.badReads, []);
});

test('compareImages() reports the first differing sector, never beyond 2 MiB chunks', async () => {
  const fill = (bad: number) => (o: number) => (o === bad ? 0xee : 0x11);
  for (const bad of [0, 511, 512, 1000, 2 * M + 5, 7 * M - 1]) {
    const a = new FakeImage([data(7 * M, 0x11)]);
    const b = new FakeImage([data(7 * M, fill(bad))]);
    const r = await compareImages(a, b);
    assert.deepEqual(r, { status: 'content-mismatch', exitCode: 1, offset: Math.floor(bad / 512) * 512 }, `byte ${bad}`);
    assert.ok(a.reads.every((x) => x.length <= 2 * M));
  }
});

test('compareImages() checks data against the other side\'s holes', async () => {
  const a = new FakeImage([hole(4 * M)]);
  const b = new FakeImage([hole(M), data(3 * M, (o) => (o >= 3 * M + 700 ? 1 : 0))]);
  assert.deepEqual(await compareImages(a, b), { status: 'content-mismatch', exitCode: 1, offset: 3 * M + 512 });
  assert.deepEqual(await compareImages(b, a), { status: 'content-mismatch', exitCode: 1, offset: 3 * M + 512 });
  assert.deepEqual(a.reads, []);
});

test('compareImages() with different sizes checks the longer tail and warns first', async () => {
  const events: string[] = [];
  const short = new FakeImage([data(M, 3)]);
  const longZero = new FakeImage([data(M, 3), hole(M), zero(M), data(M, 0)]);
  const r = await compareImages(short, longZero, { onSizeMismatch: () => events.push('warn') });
  assert.deepEqual(r, { status: 'identical', exitCode: 0, sizeMismatch: true });
  assert.deepEqual(events, ['warn']);
  // The hole and zero runs of the tail are not read.
  assert.deepEqual(longZero.badReads, []);
  const longData = new FakeImage([data(M, 3), hole(M), data(M, (o) => (o === 2 * M + 1234 ? 5 : 0))]);
  assert.deepEqual(await compareImages(longData, short), { status: 'content-mismatch', exitCode: 1, offset: 2 * M + 1024 });
});

test('compareImages() strict mode: sizes and block status must match', async () => {
  const a = new FakeImage([data(M, 1), hole(M)]);
  const b = new FakeImage([data(M, 1), zero(M)]);
  const c = new FakeImage([data(M, 1), hole(2 * M)]);
  assert.equal((await compareImages(a, b)).status, 'identical');
  assert.deepEqual(await compareImages(a, b, { strict: true }), { status: 'block-status-mismatch', exitCode: 1, offset: M });
  assert.deepEqual(await compareImages(a, c, { strict: true }), { status: 'size-mismatch', exitCode: 1 });
  assert.equal((await compareImages(a, a, { strict: true })).status, 'identical');
  // Host offsets count (qemu's OFFSET_VALID flag)...
  const d = new FakeImage([{ length: M, kind: 'data', fill: 1, hostOffset: true }, hole(M)]);
  assert.deepEqual(await compareImages(a, d, { strict: true }), { status: 'block-status-mismatch', exitCode: 1, offset: 0 });
  // ...and so does reaching the end of the image in one run (qemu's EOF flag).
  const e = new FakeImage([data(M, 1), data(M, 0)]);
  const f = new FakeImage([data(2 * M, (o) => (o < M ? 1 : 0))]);
  assert.deepEqual(await compareImages(e, f, { strict: true }), { status: 'block-status-mismatch', exitCode: 1, offset: 0 });
  assert.equal((await compareImages(e, f)).status, 'identical');
});

test('compareImages() pads odd sizes to whole sectors as qemu does', async () => {
  const a = new FakeImage([data(1000, 4)]);
  const b = new FakeImage([data(1000, 4), data(24, 0)]);
  // Same size (1024); the padding of `a` reads as unallocated zeros where `b` has data.
  assert.deepEqual(await compareImages(a, b, { strict: true }), { status: 'block-status-mismatch', exitCode: 1, offset: 1000 });
  assert.deepEqual(await compareImages(a, b), { status: 'identical', exitCode: 0, sizeMismatch: false });
  assert.ok(a.reads.length > 0 && a.reads.every((r) => r.offset + r.length <= 1000), 'never reads past its real size');
});

test('compareImages() progress accumulates per chunk over the larger size', async () => {
  const seen: number[] = [];
  const a = new FakeImage([data(M, 1), hole(3 * M)]);
  const b = new FakeImage([data(M, 1), hole(3 * M), hole(4 * M)]);
  await compareImages(a, b, { progress: (p) => seen.push(p) });
  assert.deepEqual(seen, [12.5, 50, 100]);
});

test('compareImages() tags failures with image, stage and offset', async () => {
  const good = new FakeImage([data(4 * M, 1)]);
  const badRead = new FakeImage([data(4 * M, 1)], { failReadAt: 3 * M });
  await assert.rejects(compareImages(good, badRead), (e: unknown) => {
    assert.ok(e instanceof Qcow2Error);
    assert.deepEqual(e.context, { image: 1, stage: 'read', offset: 2 * M });
    return true;
  });
  const badStatus = new FakeImage([data(M, 1), hole(3 * M)], { failStatusAt: M });
  await assert.rejects(compareImages(badStatus, good), (e: unknown) => {
    assert.ok(e instanceof Qcow2Error);
    assert.deepEqual(e.context, { image: 0, stage: 'block-status', offset: M });
    return true;
  });
});
