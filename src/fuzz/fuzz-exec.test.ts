import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsCodecs } from '../codecs/codecs-js.js';
import { Qcow2Error } from '../errors.js';
import { buildCase, caseFromMutations, runCase, type CheckDriver, type ExecOptions } from './fuzz-exec.js';
import { makeSeed } from './mutator.js';
import { richImage } from './rich-image.test.helper.js';

const valid = makeSeed('valid', richImage({ valid: true }));
const base: ExecOptions = { timeoutMs: 20_000, codecs: [jsCodecs], memoryLimitBytes: 1 << 30 };

test('a valid image goes through every step without a finding or an error', async () => {
  const r = await runCase(caseFromMutations(3, valid, []), base);
  assert.equal(r.finding, undefined, r.finding?.stack);
  const steps = Object.fromEntries(r.steps.map((s) => [s.step, s.outcome]));
  for (const s of ['inspect-untrusted', 'open-ro', 'info', 'read', 'open-rw', 'write', 'reopen', 'reread']) {
    assert.equal(steps[s], 'ok', `${s}: ${JSON.stringify(r.steps)}`);
  }
  // qemu-img's human map refuses images with compressed clusters; JSON maps them.
  assert.ok(steps['map'] === 'ok' || steps['map'] === 'UNSUPPORTED', `map: ${steps['map']}`);
  assert.ok(r.steps.every((s) => s.ms >= 0));
});

test('Qcow2Error is an expected outcome; anything else escaping is a crash', async () => {
  const c = caseFromMutations(4, valid, []);
  const refuse: CheckDriver = { check: async () => { throw new Qcow2Error('CORRUPT', 'refused'); } };
  const r1 = await runCase(c, { ...base, checker: refuse });
  assert.equal(r1.finding, undefined);
  assert.equal(r1.steps.find((s) => s.step === 'check')?.outcome, 'CORRUPT');

  const buggy: CheckDriver = { check: async () => { (undefined as unknown as { x: number }).x; return { exitCode: 0 }; } };
  const r2 = await runCase(c, { ...base, checker: buggy });
  assert.equal(r2.finding?.kind, 'crash');
  assert.equal(r2.finding?.name, 'TypeError');
  assert.equal(r2.finding?.step, 'check');
});

test('a step that never finishes is a timeout finding', async () => {
  const hang: CheckDriver = { check: () => new Promise(() => {}) };
  const r = await runCase(caseFromMutations(5, valid, []), { ...base, timeoutMs: 1500, checker: hang });
  assert.equal(r.finding?.kind, 'timeout');
  assert.equal(r.finding?.step, 'check');
});

test('memory growth past the bound is a finding', async () => {
  let held: Uint8Array | undefined;
  const hog: CheckDriver = { check: async () => { held = new Uint8Array(64 << 20).fill(1); return { exitCode: 0 }; } };
  const r = await runCase(caseFromMutations(6, valid, []), {
    ...base,
    checker: hog,
    memoryLimitBytes: 32 << 20,
    sampleMemory: () => process.memoryUsage().arrayBuffers,
  });
  assert.equal(r.finding?.kind, 'memory', JSON.stringify(r.finding));
  assert.ok(held !== undefined);
});

test('buildCase is deterministic', () => {
  const a = buildCase(99, [valid]);
  const b = buildCase(99, [valid]);
  assert.deepEqual(a.mutations, b.mutations);
  assert.deepEqual(a.bytes, b.bytes);
});
