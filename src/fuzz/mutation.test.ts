import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyMutations, fromHex, MAX_MUTATED_SIZE, toHex, type Mutation } from './mutation.js';

test('hex round trip and rejection of malformed hex', () => {
  const bytes = new Uint8Array([0, 1, 0xab, 0xff]);
  assert.equal(toHex(bytes), '0001abff');
  assert.deepEqual(fromHex('0001abff'), bytes);
  assert.throws(() => fromHex('abc'), RangeError);
  assert.throws(() => fromHex('zz'), RangeError);
});

test('applyMutations patches a copy, extends for patches past the end, resizes first', () => {
  const base = new Uint8Array([1, 2, 3, 4]);
  const ms: Mutation[] = [
    { kind: 'x', what: 'patch', patches: [{ at: 1, hex: 'ff' }] },
    { kind: 'x', what: 'grow', patches: [{ at: 6, hex: '0909' }] },
    { kind: 'x', what: 'truncate then patch', resize: 3, patches: [{ at: 0, hex: '07' }] },
  ];
  const out = applyMutations(base, ms);
  assert.deepEqual(base, new Uint8Array([1, 2, 3, 4]), 'base untouched');
  assert.deepEqual(out, new Uint8Array([7, 0xff, 3]));
  assert.deepEqual(applyMutations(base, ms.slice(0, 2)), new Uint8Array([1, 0xff, 3, 4, 0, 0, 9, 9]));
});

test('mutated files never exceed the size cap', () => {
  const out = applyMutations(new Uint8Array(4), [
    { kind: 'x', what: 'huge resize', resize: 2 ** 40, patches: [] },
    { kind: 'x', what: 'far patch', patches: [{ at: MAX_MUTATED_SIZE + 10, hex: 'aa' }] },
  ]);
  assert.equal(out.byteLength, MAX_MUTATED_SIZE);
});
