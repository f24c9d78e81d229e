/**
 * Bounded fuzz round for CI: mutated qemu-made images through open/info/map/read/write/reopen/
 * check/repair (src/fuzz/run-fuzz.ts). Every outcome must be success or a Qcow2Error: any
 * finding (uncaught TypeError/RangeError, unhandled rejection, invariant violation, hang,
 * memory blow-up) fails the test and is listed with its seed and minimised mutations.
 *
 * Budget: QCOW2KIT_FUZZ_SECONDS (default 60) and at most QCOW2KIT_FUZZ_EXECS executions
 * (default 5000). Long runs: `QCOW2KIT_FUZZ_SECONDS=3600 node dist/fuzz/run-fuzz.js --workers 4`.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot, requireQemu, run, tempDir } from '../interop/helpers.js';

interface Group {
  signature: string;
  count: number;
  seeds: number[];
  step: string;
  message: string;
  stack: string;
  base: string;
  minimized?: unknown;
  mutations: unknown;
  file: string;
}

interface Summary {
  executions: number;
  seconds: number;
  execsPerSecond: number;
  findings: number;
  groups: Group[];
  checker: boolean;
  opened: number;
  outcomes: Record<string, Record<string, number>>;
}

function envNumber(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, not '${v}'`);
  return n;
}

test('fuzz round: every outcome is success or a Qcow2Error', { timeout: 30 * 60_000 }, async (t) => {
  if (!requireQemu(t)) return;
  const seconds = envNumber('QCOW2KIT_FUZZ_SECONDS', 60);
  const execs = envNumber('QCOW2KIT_FUZZ_EXECS', 5000);
  const dir = await tempDir(t, 'qcow2kit-fuzz-');
  const workers = Math.max(1, Math.min(4, availableParallelism()));
  const r = await run(process.execPath, [
    join(repoRoot, 'dist', 'fuzz', 'run-fuzz.js'),
    '--seconds', String(seconds), '--execs', String(execs), '--workers', String(workers),
    '--seed', String(envNumber('QCOW2KIT_FUZZ_SEED', 1)),
    '--seeds', join(dir, 'seeds'), '--corpus', join(dir, 'corpus'), '--progress-ms', '0',
  ], { timeoutMs: (seconds + 600) * 1000 });
  assert.equal(r.timedOut, false, 'the fuzz harness itself hung');
  assert.ok(r.code === 0 || r.code === 1, `harness failed (exit ${r.code}):\n${r.stderr}`);
  const summary = JSON.parse(r.stdout) as Summary;
  t.diagnostic(`${summary.executions} executions in ${summary.seconds.toFixed(1)} s (${summary.execsPerSecond}/s, ${workers} workers), ${summary.opened} images opened, check ${summary.checker ? 'on' : 'absent'}`);
  // A harness that runs nothing proves nothing.
  assert.ok(summary.executions >= Math.min(100, execs), `only ${summary.executions} executions ran`);
  assert.ok(summary.opened > 0, 'no mutated image ever opened: the mutator destroys everything');
  const listing = summary.groups.map((g) => [
    `${g.signature} x${g.count} (step ${g.step}, seeds ${g.seeds.join(', ')}, base ${g.base})`,
    `  ${g.message}`,
    `  mutations: ${JSON.stringify(g.minimized ?? g.mutations)}`,
    `  replay (run with QCOW2KIT_KEEP_TMP=1 to keep the corpus): node dist/fuzz/run-fuzz.js --replay ${g.file} --seeds ${join(dir, 'seeds')}`,
    ...g.stack.split('\n').slice(0, 8).map((l) => `  ${l}`),
  ].join('\n'));
  assert.equal(summary.findings, 0, `${summary.findings} findings in ${summary.groups.length} groups:\n${listing.join('\n\n')}`);
  assert.equal(r.code, 0);
});
