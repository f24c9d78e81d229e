import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSnapshotParam, snapshotLookupKey, snapshotMatches } from './snapshot-param.js';

test('parseSnapshotParam() takes a plain id-or-name', () => {
  assert.deepEqual(parseSnapshotParam('base'), { selector: { idOrName: 'base' }, warnings: [] });
  assert.deepEqual(parseSnapshotParam('nosnapshot.id').selector, { idOrName: 'nosnapshot.id' });
});

test('parseSnapshotParam() parses QemuOpts syntax: last value wins, ",," escapes', () => {
  assert.deepEqual(parseSnapshotParam('snapshot.id=1,snapshot.name=a,,b').selector, { id: '1', name: 'a,b' });
  assert.deepEqual(parseSnapshotParam('snapshot.id=1,snapshot.id=2,').selector, { id: '2' });
  assert.deepEqual(parseSnapshotParam('snapshot.name=').selector, { name: '' });
});

test('parseSnapshotParam() reports unknown keys and short-form booleans like qemu-img', () => {
  const r = parseSnapshotParam('snapshot.name=x,foo=1');
  assert.equal(r.error, "Invalid parameter 'foo'\nFailed in parsing snapshot param 'snapshot.name=x,foo=1'");
  const s = parseSnapshotParam('snapshot.');
  assert.deepEqual(s.warnings, [
    { text: "warning: short-form boolean option 'snapshot.' deprecated", prefixed: true },
    { text: 'Please use snapshot.=on instead', prefixed: false },
  ]);
  assert.equal(s.error, "Invalid parameter 'snapshot.'\nFailed in parsing snapshot param 'snapshot.'");
  assert.deepEqual(parseSnapshotParam('snapshot.id').selector, { id: 'on' });
  assert.deepEqual(parseSnapshotParam('snapshot.id=1,nosnapshot.name').selector, { id: '1', name: 'off' });
});

test('snapshotMatches() applies every constraint', () => {
  const e = { id: '1', name: 'base' };
  assert.equal(snapshotMatches({ idOrName: '1' }, e), true);
  assert.equal(snapshotMatches({ idOrName: 'base' }, e), true);
  assert.equal(snapshotMatches({ id: '1', name: 'base' }, e), true);
  assert.equal(snapshotMatches({ id: '1', name: 'other' }, e), false);
  assert.equal(snapshotMatches({ id: 'base' }, e), false);
  assert.equal(snapshotLookupKey({ id: '2', name: 'x' }), '2');
  assert.equal(snapshotLookupKey({ name: 'x' }), 'x');
});
