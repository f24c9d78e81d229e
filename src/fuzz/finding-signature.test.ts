import assert from 'node:assert/strict';
import { test } from 'node:test';
import { signatureOf, topFrame } from './finding-signature.js';

const stack = [
  'TypeError: x is undefined',
  '    at checkOffset (file:///repo/dist/fuzz/fuzz-storage.js:26:15)',
  '    at getRefcount (file:///repo/dist/format/qcow2/refcount-codec.js:78:5)',
  '    at async Refcounts.update (file:///repo/dist/format/qcow2/refcounts.js:84:25)',
].join('\n');

test('the top frame is the first one outside the harness', () => {
  assert.equal(topFrame(stack), 'dist/format/qcow2/refcount-codec.js:78');
  assert.equal(topFrame('Error\n    at file:///repo/dist/ops/map-entries.js:55:20'), 'dist/ops/map-entries.js:55');
  assert.equal(topFrame('no frames'), '');
});

test('crashes group by type and place; timeouts and memory by step', () => {
  assert.equal(signatureOf({ kind: 'crash', step: 'write', name: 'TypeError', message: 'm', stack }), 'crash|TypeError|dist/format/qcow2/refcount-codec.js:78');
  assert.equal(signatureOf({ kind: 'timeout', step: 'check', name: 'HarnessTimeout', message: 'm', stack }), 'timeout|HarnessTimeout|check');
  assert.equal(signatureOf({ kind: 'crash', step: 'x', name: 'Error', message: 'no stack here', stack: '' }), 'crash|Error|no stack here');
});
