#!/usr/bin/env node
// Bundles the compiled CLI (dist/cli/main.js and everything it imports) into one CommonJS file,
// dist/cli/qcow2kit.cjs, which bin/qcow2kit loads. Node 20 resolves, reads and compiles every
// ES module separately (~50 ms of each run's start-up over ~100 modules), and starts a CommonJS
// entry point ~10-20 ms sooner than an ES one. The library entry points (dist/index.js,
// dist/node.js) stay unbundled ES modules.
// The bundle sits next to main.js so that paths built from import.meta.url stay valid.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
await build({
  entryPoints: [join(repo, 'dist', 'cli', 'main.js')],
  outfile: join(repo, 'dist', 'cli', 'qcow2kit.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // CommonJS has no import.meta: the bundle's own file URL stands in for it.
  define: { 'import.meta.url': '__qcow2kitBundleUrl' },
  banner: { js: "const __qcow2kitBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  // Loads its .wasm file relative to itself.
  external: ['@bokuweb/zstd-wasm'],
  logLevel: 'warning',
});
