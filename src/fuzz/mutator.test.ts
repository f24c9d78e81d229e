import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyMutations } from './mutation.js';
import { generateMutation, makeSeed, mutateImage } from './mutator.js';
import { Prng } from './prng.js';
import { richImage } from './rich-image.test.helper.js';

const seed = makeSeed('rich', richImage());

test('a case seed fully determines the mutations and bytes', () => {
  const a = mutateImage(seed, new Prng(77));
  const b = mutateImage(seed, new Prng(77));
  assert.deepEqual(a.mutations, b.mutations);
  assert.deepEqual(a.bytes, b.bytes);
  assert.deepEqual(applyMutations(seed.bytes, a.mutations), a.bytes, 'the mutation list reproduces the bytes');
  assert.notDeepEqual(mutateImage(seed, new Prng(78)).mutations, a.mutations);
});

test('every mutation family is reached on a rich seed, and mutations change bytes', () => {
  const kinds = new Map<string, number>();
  let unchanged = 0;
  for (let s = 0; s < 3000; s++) {
    const m = generateMutation(seed, new Prng(s));
    kinds.set(m.kind, (kinds.get(m.kind) ?? 0) + 1);
    for (const p of m.patches) {
      assert.ok(Number.isSafeInteger(p.at) && p.at >= 0, `${m.kind}: patch at ${p.at}`);
      assert.match(p.hex, /^([0-9a-f]{2})*$/);
    }
    if (m.resize === undefined && m.patches.every((p) => p.hex === Buffer.from(seed.bytes.subarray(p.at, p.at + p.hex.length / 2)).toString('hex'))) unchanged++;
  }
  for (const k of [
    'header-field', 'feature-bit', 'ext-length', 'ext-type', 'ext-insert', 'backing-name', 'l1-entry', 'l2-entry', 'reftable-entry',
    'bitmap-table-entry', 'refcount', 'compressed', 'compressed-data', 'snapshot-field', 'bitmap-ext', 'bitmap-dir', 'bit-flips',
    'random-bytes', 'cluster-copy', 'truncate', 'extend',
  ]) {
    assert.ok((kinds.get(k) ?? 0) > 0, `family ${k} never generated: ${JSON.stringify([...kinds])}`);
  }
  // Some mutations legitimately write the value already there (an entry copied onto an equal one).
  assert.ok(unchanged < 300, `${unchanged} of 3000 mutations changed nothing`);
});
