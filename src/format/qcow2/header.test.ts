import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeHeader, encodeHeader, decodeBackingName, QCOW2_MAGIC, type Qcow2Header } from './header.js';
import { Qcow2Error } from '../../errors.js';

function sampleV3(): Qcow2Header {
  return {
    version: 3, backingFileOffset: 0x1f8, backingFileSize: 9, clusterBits: 16, size: 5 * 2 ** 40 + 512,
    cryptMethod: 0, l1Size: 10, l1TableOffset: 0x30000, refcountTableOffset: 0x10000, refcountTableClusters: 1,
    nbSnapshots: 2, snapshotsOffset: 0x80000, incompatibleFeatures: { hi: 0x80000000, lo: 0x1c },
    compatibleFeatures: { hi: 0, lo: 1 }, autoclearFeatures: { hi: 0x1, lo: 3 }, refcountOrder: 4,
    headerLength: 120, compressionType: 1, unknownFields: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]),
  };
}

test('v3 header round-trips every field, including unknown trailing fields', () => {
  const h = sampleV3();
  const buf = new Uint8Array(4096);
  assert.equal(encodeHeader(h, buf), 120);
  assert.deepEqual(decodeHeader(buf), h);
});

test('v2 header decodes with implied values', () => {
  const h: Qcow2Header = { ...sampleV3(), version: 2, incompatibleFeatures: { hi: 0, lo: 0 }, compatibleFeatures: { hi: 0, lo: 0 },
    autoclearFeatures: { hi: 0, lo: 0 }, refcountOrder: 4, headerLength: 72, compressionType: 0, unknownFields: new Uint8Array(0) };
  const buf = new Uint8Array(4096);
  assert.equal(encodeHeader(h, buf), 72);
  assert.deepEqual(decodeHeader(buf), h);
});

test('header of length 104 has no compression type byte', () => {
  const h = { ...sampleV3(), headerLength: 104, compressionType: 0, unknownFields: new Uint8Array(0) };
  const buf = new Uint8Array(4096);
  encodeHeader(h, buf);
  buf[104] = 7; // beyond the header: must be ignored
  assert.equal(decodeHeader(buf).compressionType, 0);
});

test('bad magic, version and oversized fields are typed errors', () => {
  const buf = new Uint8Array(4096);
  encodeHeader(sampleV3(), buf);
  const bad = buf.slice();
  bad[0] = 0;
  assert.throws(() => decodeHeader(bad), (e: unknown) => e instanceof Qcow2Error && e.message === 'Image is not in qcow2 format');
  const v4 = buf.slice();
  new DataView(v4.buffer).setUint32(4, 4);
  assert.throws(() => decodeHeader(v4), (e: unknown) => e instanceof Qcow2Error && e.code === 'UNSUPPORTED' && /version 4/.test(e.message));
  const huge = buf.slice();
  new DataView(huge.buffer).setUint32(24, 0xffffffff);
  assert.throws(() => decodeHeader(huge), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_IMAGE');
  const longHeader = buf.slice();
  new DataView(longHeader.buffer).setUint32(100, 8192);
  assert.throws(() => decodeHeader(longHeader), /exceeds cluster size/);
  assert.throws(() => decodeHeader(new Uint8Array(10)), Qcow2Error);
});

test('magic constant and backing name', () => {
  assert.equal(QCOW2_MAGIC, 0x514649fb);
  const h = sampleV3();
  const buf = new Uint8Array(4096);
  encodeHeader(h, buf);
  buf.set(new TextEncoder().encode('base.qcow2'), 0x1f8);
  assert.equal(decodeBackingName(buf, h), 'base.qcow');
});
