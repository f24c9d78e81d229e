#!/usr/bin/env node
// Writes V8's code caches for the CLI bundle, which bin/load-cli.cjs hands to V8 so that runs
// skip compiling the bundle and the functions their command calls. A cache holds bytecode for
// what ran before it was taken, so this runs the common commands once on small images of its
// own, with output captured:
//   dist/cli/qcow2kit.cjs.v8cache            all of them, in this process (any command)
//   dist/cli/qcow2kit.cjs.<command>.v8cache  one command's runs only, each in a fresh process
//                                            (V8 deserializes all of a cache: a smaller one
//                                            starts its command sooner)
// V8 refuses a cache made by another Node version or with other flags; the CLI then compiles
// from source as without one. Part of `npm run build`; a failure here fails the build.
//
//   node scripts/code-cache.mjs                    all caches
//   node scripts/code-cache.mjs --command NAME DIR NAME's cache, on the images in DIR (internal)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const { loadCli, writeCodeCache } = require('../bin/load-cli.cjs');

/** The sample runs, in order (later ones use the images earlier ones made). */
function sampleCommands(dir) {
  const f = (name) => join(dir, name);
  return [
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
}

/** Loads the bundle without a cache, runs `commands` and writes the cache for `command`. */
async function makeCache(commands, command) {
  const { exports: cli, script, source } = loadCli({ useCache: false, tune: false });
  for (const argv of commands) {
    const io = cli.createCaptureIO();
    const code = await cli.main(argv, io);
    if (code !== 0) throw new Error(`code-cache: \`qcow2kit ${argv.join(' ')}\` exited ${code}: ${io.stderrText()}`);
  }
  writeCodeCache(script, source, { command });
}

const args = process.argv.slice(2);
if (args[0] === '--command') {
  const [, command, dir] = args;
  await makeCache(sampleCommands(dir).filter((argv) => argv[0] === command), command);
} else {
  const bundleDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli');
  for (const name of readdirSync(bundleDir)) if (name.endsWith('.v8cache')) rmSync(join(bundleDir, name));
  const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-code-cache-'));
  try {
    const commands = sampleCommands(dir);
    await makeCache(commands, undefined);
    for (const command of new Set(commands.map((argv) => argv[0]))) {
      const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--command', command, dir], { stdio: 'inherit' });
      if (child.status !== 0) throw new Error(`code-cache: the cache for ${command} failed (exit ${child.status ?? child.signal})`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
