/**
 * The CLI bundle loads Node builtins only when a run needs them: each costs milliseconds of
 * start-up on a small machine (zlib ~3 ms, fs/promises ~1.8 ms, os ~0.4 ms), against
 * qemu-img's ~15 ms. Each case runs in a fresh child process, the way bin/qcow2kit does.
 * qemu-img makes the images; set QCOW2KIT_SKIP_QEMU=1 to skip on machines without it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const skip = process.env['QCOW2KIT_SKIP_QEMU'] === '1' ? 'QCOW2KIT_SKIP_QEMU=1' : false;
const loadCliPath = fileURLToPath(new URL('../../bin/load-cli.cjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-startup-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** Builtins that commands meeting no compressed cluster must not load. */
const LAZY = ['NativeModule zlib', 'NativeModule fs/promises', 'NativeModule os', 'NativeModule worker_threads'];

function qemuImg(...args: string[]): void {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run qemu-img (install qemu-utils or set QCOW2KIT_SKIP_QEMU=1): ${r.error.message}`);
  assert.equal(r.status, 0, `qemu-img ${args.join(' ')}: ${r.stderr}`);
}

// Records process.moduleLoadList before loading the bundle and after the command finished;
// loads the bundle as bin/qcow2kit does.
const CHILD = `
const before = new Set(process.moduleLoadList);
const [loadCliPath, argvJson, resultPath] = process.argv.slice(1);
const argv = JSON.parse(argvJson);
require(loadCliPath).loadCli({ command: argv[0] }).exports.runCli(argv).then((code) => {
  const loaded = process.moduleLoadList.filter((m) => !before.has(m));
  require('node:fs').writeFileSync(resultPath, JSON.stringify({ code, loaded }));
});
`;

/** Runs `qcow2kit <argv>` in a new Node process; its exit code and the modules it loaded. */
function runFresh(argv: string[]): { code: number; loaded: string[] } {
  const resultPath = join(dir, 'result.json');
  rmSync(resultPath, { force: true });
  const env = { ...process.env };
  delete env['NODE_EXTRA_CA_CERTS'];
  delete env['NODE_TEST_CONTEXT'];
  const r = spawnSync(process.execPath, ['-e', CHILD, loadCliPath, JSON.stringify(argv), resultPath], { encoding: 'utf8', env });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(readFileSync(resultPath, 'utf8')) as { code: number; loaded: string[] };
}

/** 1 MiB that deflate shrinks but that is not all zeros. */
function sourceBytes(): Uint8Array {
  const text = new TextEncoder().encode(Array.from({ length: 40000 }, (_, i) => `line ${i} of the source image\n`).join(''));
  return text.subarray(0, 1 << 20);
}

test('info and convert -O raw of an uncompressed qcow2 load no zlib, fs/promises, os or worker_threads', { skip }, () => {
  const raw = join(dir, 'plain-src.raw');
  const image = join(dir, 'plain.qcow2');
  const bytes = sourceBytes();
  writeFileSync(raw, bytes);
  qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, image);

  const info = runFresh(['info', image]);
  assert.equal(info.code, 0);
  assert.deepEqual(info.loaded.filter((m) => LAZY.includes(m)), [], 'info');

  const out = join(dir, 'plain-out.raw');
  const convert = runFresh(['convert', '-O', 'raw', image, out]);
  assert.equal(convert.code, 0);
  assert.deepEqual(convert.loaded.filter((m) => LAZY.includes(m)), [], 'convert');
  // It prints nothing, so process.stdout and process.stderr (pipes here) are never created.
  assert.equal(convert.loaded.includes('NativeModule net'), false, 'convert created a stdio stream');
  assert.deepEqual(new Uint8Array(readFileSync(out)), bytes);
});

test('convert -O raw of a zlib-compressed qcow2 loads zlib and converts correctly', { skip }, () => {
  const raw = join(dir, 'zlib-src.raw');
  const image = join(dir, 'zlib.qcow2');
  const bytes = sourceBytes();
  writeFileSync(raw, bytes);
  qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zlib', raw, image);

  const out = join(dir, 'zlib-out.raw');
  const convert = runFresh(['convert', '-O', 'raw', image, out]);
  assert.equal(convert.code, 0);
  assert.ok(convert.loaded.includes('NativeModule zlib'), 'a compressed cluster needs node:zlib');
  assert.deepEqual(new Uint8Array(readFileSync(out)), bytes);
});

test('bench -w prints and times itself without perf_hooks or a stdio stream', { skip }, () => {
  const image = join(dir, 'bench.qcow2');
  qemuImg('create', '-f', 'qcow2', image, '64M');
  const r = runFresh(['bench', '-w', '-c', '16', '-s', '64k', image]);
  assert.equal(r.code, 0);
  for (const m of ['NativeModule perf_hooks', 'NativeModule net', 'NativeModule tty', 'NativeModule internal/fs/sync_write_stream']) {
    assert.equal(r.loaded.includes(m), false, m);
  }
});
