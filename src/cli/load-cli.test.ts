import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// bin/load-cli.cjs runs the CLI bundle with the V8 code caches the build wrote (dist/cli/).
const repo = fileURLToPath(new URL('../../', import.meta.url));
const require = createRequire(import.meta.url);
const loader = join(repo, 'bin', 'load-cli.cjs');
interface Loaded {
  exports: { version(): string };
  script: { cachedDataRejected?: boolean };
  cacheFile: string | undefined;
}
// Tests in this process pass tune: false: the V8 flag loadCli sets would change V8's flag
// hash, and V8 would then refuse every cache compiled afterwards in this process.
const { loadCli, v8FlagsFor } = require(loader) as {
  loadCli(o?: { useCache?: boolean; bundle?: string; command?: string | undefined; tune?: boolean }): Loaded;
  v8FlagsFor(command: string | undefined): string;
};
const bundle = join(repo, 'dist', 'cli', 'qcow2kit.cjs');

test('the build leaves a code cache per common command and one for all, each accepted by V8', () => {
  const commands = readdirSync(join(repo, 'dist', 'cli'))
    .map((name) => /^qcow2kit\.cjs\.([a-z]+)\.v8cache$/.exec(name)?.[1])
    .filter((c): c is string => c !== undefined);
  for (const c of ['convert', 'map', 'info', 'io', 'bench']) assert.ok(commands.includes(c), c);
  for (const command of commands) {
    const { exports, script, cacheFile } = loadCli({ command, tune: false });
    assert.equal(cacheFile, `${bundle}.${command}.v8cache`);
    assert.equal(script.cachedDataRejected, false, command);
    assert.match(exports.version(), /^\d+\.\d+\.\d+/);
  }
  // Other commands, and anything that is not a plain command name, get the cache for all.
  for (const command of ['amend', '--version', '../x', undefined]) {
    const { script, cacheFile } = loadCli({ command, tune: false });
    assert.equal(cacheFile, `${bundle}.v8cache`, String(command));
    assert.equal(script.cachedDataRejected, false);
  }
});

test('a CLI run sets its V8 flag only after the bundle is compiled, so the cache is still accepted', () => {
  const code = `const { loadCli } = require(${JSON.stringify(loader)});
    const r = loadCli({ command: 'convert' });
    process.stdout.write(JSON.stringify({ rejected: r.script.cachedDataRejected, file: r.cacheFile }));`;
  const child = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
  assert.equal(child.status, 0, child.stderr);
  assert.deepEqual(JSON.parse(child.stdout), { rejected: false, file: `${bundle}.convert.v8cache` });
});

test('convert runs get a larger interrupt budget on top of the inlining flag, bench no optimizing tier, other commands only the former', () => {
  const base = '--max-inlined-bytecode-size-cumulative=200';
  assert.equal(v8FlagsFor('convert'), `${base} --interrupt-budget=1081344`);
  assert.equal(v8FlagsFor('bench'), '--max-opt=1');
  for (const command of ['map', 'info', '--version', 'toString', '__proto__', undefined]) assert.equal(v8FlagsFor(command), base, String(command));
});

test('the bundle has no dynamic import(), which vm.Script could not load', () => {
  assert.doesNotMatch(readFileSync(bundle, 'utf8'), /\bimport\(/);
});

test('the bundle is stored as its module wrapper function, which loadCli compiles as read', () => {
  const lines = readFileSync(bundle, 'latin1').split('\n');
  assert.match(lines[0]!, /^\/\/ qcow2kit CLI bundle, build [0-9a-f]{16}$/);
  assert.ok(lines[1]!.startsWith('(function (exports, require, module, __filename, __dirname) {'), lines[1]!.slice(0, 80));
  assert.deepEqual(lines.slice(-2), ['})', '']);
});

test('the bundle is ASCII, so reading it as latin1 gives the same text', () => {
  assert.doesNotMatch(readFileSync(bundle, 'latin1'), /[^\x00-\x7f]/);
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
    const refused = loadCli({ bundle: copy, tune: false });
    assert.equal(refused.script.cachedDataRejected, undefined, 'no cachedData passed');
    assert.equal(refused.cacheFile, undefined);
    writeFileSync(copy, text);
    assert.equal(loadCli({ bundle: copy, tune: false }).script.cachedDataRejected, false, 'the matching build uses it');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
