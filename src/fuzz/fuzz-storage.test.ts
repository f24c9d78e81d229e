import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Qcow2Error } from '../errors.js';
import { FuzzStorage, HarnessTimeout, HarnessViolation } from './fuzz-storage.js';

const later = (): number => Date.now() + 60_000;

test('reads like a memory store; writes past the cap are a full disk (Qcow2Error)', async () => {
  const st = new FuzzStorage(new Uint8Array([1, 2, 3]), 'img', false, { deadline: later(), maxSize: 8 });
  const buf = new Uint8Array(4);
  await st.read(buf, 1);
  assert.deepEqual(buf, new Uint8Array([2, 3, 0, 0]));
  await st.write(new Uint8Array([9]), 7);
  assert.equal(await st.size(), 8);
  await assert.rejects(st.write(new Uint8Array(2), 7), (e) => e instanceof Qcow2Error && e.code === 'IO');
  await assert.rejects(st.resize(9), (e) => e instanceof Qcow2Error && e.code === 'IO');
  const ro = new FuzzStorage(new Uint8Array(4), 'ro', true, { deadline: later(), maxSize: 8 });
  await assert.rejects(ro.write(new Uint8Array(1), 0), (e) => e instanceof Qcow2Error && e.code === 'READ_ONLY');
});

test('offsets that are negative, fractional or unsafe are harness violations, not Qcow2Errors', async () => {
  const st = new FuzzStorage(new Uint8Array(16), 'img', false, { deadline: later(), maxSize: 1 << 20 });
  for (const off of [-1, 0.5, 2 ** 53, Number.NaN, 2 ** 56]) {
    await assert.rejects(st.read(new Uint8Array(1), off), HarnessViolation, `read at ${off}`);
  }
  await assert.rejects(st.write(new Uint8Array(1), -512), HarnessViolation);
  await assert.rejects(st.resize(-1), HarnessViolation);
});

test('after the deadline every operation fails with HarnessTimeout', async () => {
  const st = new FuzzStorage(new Uint8Array(16), 'img', false, { deadline: Date.now() - 1, maxSize: 1 << 20 });
  await assert.rejects(st.read(new Uint8Array(1), 0), HarnessTimeout);
  await assert.rejects(st.size(), HarnessTimeout);
  await assert.rejects(st.flush(), HarnessTimeout);
});
