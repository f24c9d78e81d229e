import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getU16BE, getU32BE, setU16BE, setU32BE } from './bytes.js';

test('big-endian u16/u32 accessors agree with DataView, high bits included', () => {
  const bytes = new Uint8Array(12);
  const view = new DataView(bytes.buffer);
  for (const value of [0, 1, 0x7fff, 0x8000, 0xffff]) {
    setU16BE(bytes, 3, value);
    assert.equal(view.getUint16(3), value);
    assert.equal(getU16BE(bytes, 3), value);
  }
  for (const value of [0, 1, 0x7fffffff, 0x80000000, 0xfedcba98, 0xffffffff]) {
    setU32BE(bytes, 5, value);
    assert.equal(view.getUint32(5), value);
    assert.equal(getU32BE(bytes, 5), value);
  }
  assert.deepEqual([...bytes.subarray(0, 3)], [0, 0, 0], 'bytes before untouched');
  assert.deepEqual([...bytes.subarray(9)], [0, 0, 0], 'bytes after untouched');
});
