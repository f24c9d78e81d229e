#!/usr/bin/env node
// Bundles the compiled CLI (dist/cli/main.js and everything it imports) into one module,
// dist/cli/qcow2kit.mjs, which bin/qcow2kit loads. Node 20 resolves, reads and compiles every
// ES module separately, which cost ~50 ms of each run's start-up over ~100 modules; one file
// costs one. The library entry points (dist/index.js, dist/node.js) stay unbundled.
// The bundle sits next to main.js so that paths built from import.meta.url stay valid.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
await build({
  entryPoints: [join(repo, 'dist', 'cli', 'main.js')],
  outfile: join(repo, 'dist', 'cli', 'qcow2kit.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Loads its .wasm file relative to itself.
  external: ['@bokuweb/zstd-wasm'],
  logLevel: 'warning',
});
