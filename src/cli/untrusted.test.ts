import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { buildQcow2, pattern } from '../format/qcow2/qcow2-builder.test.helper.js';
import { CliError } from './cli-error.js';
import { createCaptureIO } from './main.js';
import { formatUntrustedReportHuman, infoUntrusted, openUntrustedForCli, prepareUntrustedCheck, untrustedFormat } from './untrusted.js';
import { NodeFileStorage } from '../storage/node-file-storage.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2kit-untrusted-unit-'));
  const entries = [{ cluster: 0, kind: 'data' as const, bytes: pattern(4096, 3) }];
  await writeFile(join(dir, 'clean.qcow2'), buildQcow2({ clusterBits: 12, size: 1 << 20, entries }));
  await writeFile(join(dir, 'overlay.qcow2'), buildQcow2({ clusterBits: 12, size: 1 << 20, entries, backingName: join(dir, 'does-not-exist') }));
  await writeFile(join(dir, 'future.qcow2'), buildQcow2({ clusterBits: 12, size: 1 << 20, entries, incompat: { hi: 0, lo: 1 << 9 } }));
});
after(() => rm(dir, { recursive: true, force: true }));

test('the format must be declared', () => {
  assert.throws(() => untrustedFormat(undefined), (e) => e instanceof CliError && /requires the image format/.test(e.message));
  assert.throws(() => untrustedFormat('vmdk'), (e) => e instanceof CliError && e.message === "Unknown driver 'vmdk'");
  assert.equal(untrustedFormat('raw'), 'raw');
});

test('info --untrusted --output=json: the usual info plus the report', async () => {
  const io = createCaptureIO();
  const code = await infoUntrusted(join(dir, 'overlay.qcow2'), { format: 'qcow2', output: 'json', backingChain: false }, io);
  assert.equal(code, 0, io.stderrText());
  const json = JSON.parse(io.stdoutText()) as { format: string; 'backing-filename': string; 'untrusted-report': { reasons: string[]; safe: boolean } };
  assert.equal(json.format, 'qcow2');
  assert.equal(json['backing-filename'], join(dir, 'does-not-exist'));
  assert.deepEqual(json['untrusted-report'].reasons, ['backing-file']);
  assert.equal(json['untrusted-report'].safe, false);
});

test('info --untrusted on an image that cannot be opened: report on stdout, error and exit 1', async () => {
  const io = createCaptureIO();
  const code = await infoUntrusted(join(dir, 'future.qcow2'), { format: 'qcow2', output: 'json', backingChain: false }, io);
  assert.equal(code, 1);
  assert.match(io.stderrText(), /^qcow2kit: Could not open '.*future\.qcow2': Unsupported qcow2 feature\(s\): Unknown incompatible feature: 200\n$/);
  const json = JSON.parse(io.stdoutText()) as { 'untrusted-report': { 'unknown-incompatible-features': string[] } };
  assert.deepEqual(json['untrusted-report']['unknown-incompatible-features'], ['bit 9']);
});

test('human output and refused combinations', async () => {
  const io = createCaptureIO();
  assert.equal(await infoUntrusted(join(dir, 'clean.qcow2'), { format: 'qcow2', output: 'human', backingChain: false }, io), 0);
  assert.match(io.stdoutText(), /^image: .*clean\.qcow2\n[^]*\nUntrusted report:\n {4}format: qcow2\n[^]*\n {4}safe: true\n {4}reasons: \(none\)\n/);
  await assert.rejects(infoUntrusted(join(dir, 'clean.qcow2'), { format: 'qcow2', output: 'json', backingChain: true }, createCaptureIO()), CliError);
  await assert.rejects(infoUntrusted(join(dir, 'clean.qcow2'), { format: undefined, output: 'json', backingChain: false }, createCaptureIO()), CliError);
  await assert.rejects(infoUntrusted(join(dir, 'missing.qcow2'), { format: 'qcow2', output: 'json', backingChain: false }, createCaptureIO()), (e) => e instanceof CliError && /^Could not open/.test(e.message));
});

test('openUntrustedForCli says "Could not open" like the ordinary open', async () => {
  await assert.rejects(openUntrustedForCli(join(dir, 'overlay.qcow2'), { format: 'qcow2' }), (e) => e instanceof CliError && /^Could not open '.*overlay\.qcow2': .*Refusing to open backing file/.test(e.message));
  const img = await openUntrustedForCli(join(dir, 'overlay.qcow2'), { format: 'qcow2', backing: false });
  await img.close();
});

test('check --untrusted: limits apply before the check, array capped', async () => {
  const st = await NodeFileStorage.open(join(dir, 'clean.qcow2'), { readOnly: true });
  try {
    assert.deepEqual(await prepareUntrustedCheck(st, 'qcow2', 'none'), { maxArrayBytes: 64 << 20 });
    await assert.rejects(prepareUntrustedCheck(st, undefined, 'none'), CliError);
  } finally {
    await st.close();
  }
});

test('the human report lists every field', () => {
  const text = formatUntrustedReportHuman({ format: 'qcow2', 'format-signature': 'qcow2', encrypted: false, dirty: false, corrupt: false, safe: false, reasons: ['data-file', 'dirty'] });
  assert.equal(text, 'Untrusted report:\n    format: qcow2\n    format signature: qcow2\n    encrypted: false\n    dirty: false\n    corrupt: false\n    safe: false\n    reasons: data-file, dirty\n');
});
