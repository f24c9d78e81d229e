import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planAmend, type AmendCurrent } from './amend-options.js';

const v3: AmendCurrent = { version: 3, refcountBits: 16, lazyRefcounts: false, hasDataFile: false, dataFileRaw: false, encrypted: false };

test('compat levels and the operations progress counts', () => {
  assert.equal(planAmend({ compat: '0.10' }, v3).newVersion, 2);
  assert.equal(planAmend({ compat: 'v2' }, v3).newVersion, 2);
  assert.equal(planAmend({ compat: 'v3' }, { ...v3, version: 2 }).newVersion, 3);
  assert.equal(planAmend({ compat: '0.10', refcountBits: 8n }, v3).totalOperations, 2);
  assert.equal(planAmend({}, v3).totalOperations, 0);
  assert.throws(() => planAmend({ compat: '0.42' }, v3), /^Qcow2Error: Unknown compatibility level 0.42$/);
});

test('refcount width must be a power of two up to 64 (as a C int)', () => {
  for (const bad of [0n, 3n, 128n, (1n << 64n) - 1n]) {
    assert.throws(() => planAmend({ refcountBits: bad }, v3), /Refcount width must be a power of two and may not exceed 64 bits/);
  }
  assert.equal(planAmend({ refcountBits: 1n }, v3).refcountBits, 1);
  assert.equal(planAmend({ refcountBits: (1n << 32n) + 16n }, v3).refcountBits, 16);
});

test('data file options only where QEMU allows them', () => {
  assert.throws(() => planAmend({ dataFile: 'x' }, v3), /data-file can only be set for images that use an external data file/);
  assert.throws(() => planAmend({ dataFileRaw: true }, { ...v3, hasDataFile: true }), /data-file-raw cannot be set on existing images/);
  assert.equal(planAmend({ dataFileRaw: false }, { ...v3, hasDataFile: true, dataFileRaw: true }).dataFileRaw, false);
  assert.equal(planAmend({ dataFile: '' }, { ...v3, hasDataFile: true }).dataFile, '');
});

test('checks run in option-list order: encryption before compat', () => {
  assert.throws(() => planAmend({ encrypt: true, compat: 'bad' }, v3), /Can't amend encryption options - encryption not present/);
  assert.deepEqual(planAmend({ backingFile: 'b' }, v3).backing, { file: 'b', format: undefined });
  assert.equal(planAmend({ size: 0n }, v3).size, 0);
  assert.equal(planAmend({ lazyRefcounts: true }, v3).lazyRefcounts, true);
});
