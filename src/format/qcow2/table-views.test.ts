import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tableViews } from './table-views.js';

test('a table gets its views once, over exactly its bytes', () => {
  const buf = new Uint8Array(64);
  const table = buf.subarray(16, 48);
  const v = tableViews(table);
  assert.equal(tableViews(table), v, 'same object on the next call');
  v.view.setUint32(0, 0x01020304);
  assert.deepEqual([...buf.subarray(16, 20)], [1, 2, 3, 4]);
  assert.equal(v.view.byteLength, 32);
  assert.equal(v.words.length, 8);
  assert.notEqual(v.words[0], 0);
  assert.notEqual(tableViews(buf.subarray(16, 48)), v, 'another Uint8Array over the same bytes gets its own');
});

test('an unaligned table gets no words, so zero-skipping scans skip nothing', () => {
  const v = tableViews(new Uint8Array(33).subarray(1));
  assert.equal(v.words.length, 0);
  assert.equal(v.view.byteLength, 32);
});
