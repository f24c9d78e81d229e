#!/usr/bin/env node
// Writes V8's code cache for the CLI bundle (dist/cli/qcow2kit.cjs.v8cache), which
// bin/load-cli.cjs hands to V8 so that runs skip compiling the bundle and the functions their
// command calls. The cache holds bytecode for what ran before it was taken, so this runs the
// common commands once on a small image of its own, in this process, with output captured.
// V8 refuses a cache made by another Node version or with other flags; the CLI then compiles
// from source as without one. Part of `npm run build`; a failure here leaves no cache and fails
// the build.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const { loadCli, writeCodeCache } = require('../bin/load-cli.cjs');

const { exports: cli, script, source } = loadCli({ useCache: false });
const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-code-cache-'));
const f = (name) => join(dir, name);
const commands = [
  ['create', '-q', '-f', 'qcow2', f('a.qcow2'), '64M'],
  ['io', '-c', 'write -P 0x5a 0 1M', '-c', 'write -z 4M 1M', '-c', 'write -c 8M 64k', '-c', 'discard 16M 64k', '-c', 'read -P 0x5a 0 64k', '-c', 'map', f('a.qcow2')],
  ['create', '-q', '-f', 'qcow2', '-b', f('a.qcow2'), '-F', 'qcow2', f('b.qcow2')],
  ['io', '-c', 'write -P 1 2M 64k', f('b.qcow2')],
  ['info', f('b.qcow2')],
  ['info', '--output=json', '--backing-chain', f('b.qcow2')],
  ['map', '--output=json', f('b.qcow2')],
  ['convert', '-O', 'raw', f('b.qcow2'), f('b.raw')],
  ['convert', '-O', 'qcow2', f('b.raw'), f('c.qcow2')],
  ['convert', '-c', '-O', 'qcow2', f('b.qcow2'), f('d.qcow2')],
  ['map', f('c.qcow2')],
  ['compare', f('b.qcow2'), f('c.qcow2')],
  ['check', f('c.qcow2')],
  ['snapshot', '-l', f('a.qcow2')],
  ['resize', f('c.qcow2'), '+1M'],
  ['bench', '-w', '-c', '64', '-s', '64k', f('c.qcow2')],
  ['bench', '-c', '64', '-s', '64k', f('c.qcow2')],
];
try {
  for (const argv of commands) {
    const io = cli.createCaptureIO();
    const code = await cli.main(argv, io);
    if (code !== 0) throw new Error(`code-cache: \`qcow2kit ${argv.join(' ')}\` exited ${code}: ${io.stderrText()}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
writeCodeCache(script, source);
