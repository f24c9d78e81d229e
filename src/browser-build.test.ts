import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// The library entry (src/index.ts) must stay browser-safe: tsconfig.browser.json type-checks
// everything it reaches without Node's types, so an import from `node:` (side-effect imports
// too) or a `Buffer` there fails.
// Node-only code (node codecs, file storage) is reached from src/node.ts, the CLI and the fuzzer.
const repo = fileURLToPath(new URL('../', import.meta.url));

test('the library entry type-checks without Node (tsconfig.browser.json)', { timeout: 120_000 }, () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.browser.json'], { cwd: repo, encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});
