import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// bin/load-cli.cjs runs the CLI bundle with the V8 code cache the build wrote (dist/cli/).
const repo = fileURLToPath(new URL('../../', import.meta.url));
const require = createRequire(import.meta.url);
const { loadCli } = require(join(repo, 'bin', 'load-cli.cjs')) as {
  loadCli(o?: { useCache?: boolean; bundle?: string }): { exports: { version(): string }; script: { cachedDataRejected?: boolean } };
};
const bundle = join(repo, 'dist', 'cli', 'qcow2kit.cjs');

test('the build leaves a code cache that V8 accepts for the bundle', () => {
  const { exports, script } = loadCli();
  assert.equal(script.cachedDataRejected, false);
  assert.match(exports.version(), /^\d+\.\d+\.\d+/);
});

test('the bundle has no dynamic import(), which vm.Script could not load', () => {
  assert.doesNotMatch(readFileSync(bundle, 'utf8'), /\bimport\(/);
});

test('a cache from another build of the bundle is not handed to V8, even at the same length', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-load-cli-'));
  try {
    const copy = join(dir, 'qcow2kit.cjs');
    copyFileSync(`${bundle}.v8cache`, `${copy}.v8cache`);
    const text = readFileSync(bundle, 'utf8');
    // Same length, another build id on the first line (V8 itself checks only the length).
    const other = text.replace(/build ([0-9a-f])/, (_m, c: string) => `build ${c === '0' ? '1' : '0'}`);
    assert.equal(other.length, text.length);
    assert.notEqual(other, text);
    writeFileSync(copy, other);
    assert.equal(loadCli({ bundle: copy }).script.cachedDataRejected, undefined, 'no cachedData passed');
    writeFileSync(copy, text);
    assert.equal(loadCli({ bundle: copy }).script.cachedDataRejected, false, 'the matching build uses it');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
