#!/usr/bin/env node
// Bundles the compiled CLI (dist/cli/main.js and everything it imports) into one CommonJS file,
// dist/cli/qcow2kit.cjs (stored as its module wrapper function, so only bin/load-cli.cjs can
// load it), which bin/qcow2kit runs through bin/load-cli.cjs. Node 20 resolves, reads and compiles every
// ES module separately (~50 ms of each run's start-up over ~100 modules), and starts a CommonJS
// entry point ~10-20 ms sooner than an ES one. The library entry points (dist/index.js,
// dist/node.js) stay unbundled ES modules.
// The bundle sits next to main.js so that paths built from import.meta.url stay valid.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Node's CommonJS module wrapper (the one bin/load-cli.cjs calls). */
const MODULE_WRAPPER = ['(function (exports, require, module, __filename, __dirname) {', '\n})\n'];
const outfile = join(repo, 'dist', 'cli', 'qcow2kit.cjs');
const result = await build({
  entryPoints: [join(repo, 'dist', 'cli', 'main.js')],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // CommonJS has no import.meta: the bundle's own file URL stands in for it.
  define: { 'import.meta.url': '__qcow2kitBundleUrl' },
  banner: { js: "const __qcow2kitBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  // Loads its .wasm file relative to itself.
  external: ['@bokuweb/zstd-wasm'],
  charset: 'ascii',
  // Less to read and hold at every start (633 KB -> 442 KB): loading the bundle with its cache
  // took 17.4 against 21.2 ms (median of 25 runs each). Names are kept, so stacks
  // (QCOW2KIT_DEBUG=1) still name functions; their line numbers point into long lines.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
  write: false,
});
let code = result.outputFiles[0].text;
// bin/load-cli.cjs compiles the bundle with vm.Script (to use a code cache), where import() has
// no loader: the lazily loaded externals (the zstd WebAssembly package, node: modules) are
// required instead; both are CommonJS to Node.
code = code.replace(/\bimport\(("(?:@bokuweb\/zstd-wasm|node:[a-z/_]+)")\)/g, 'Promise.resolve().then(() => require($1))');
// bin/load-cli.cjs reads the bundle as latin1, which is right for ASCII only (esbuild's
// default charset escapes everything else).
const wide = /[^\x00-\x7f]/.exec(code);
if (wide) throw new Error(`bundle-cli: non-ASCII text in the bundle: ${code.slice(Math.max(0, wide.index - 40), wide.index + 20)}`);
const left = /\bimport\(/.exec(code);
if (left) throw new Error(`bundle-cli: dynamic import left in the bundle: ${code.slice(left.index, left.index + 60)}`);
// The first line names this build (a hash of the code): a code cache is used only with it.
const id = createHash('sha256').update(code).digest('hex').slice(0, 16);
// Stored inside the CommonJS module wrapper, so bin/load-cli.cjs compiles the file as read:
// V8 flattens a wrapper added at load time into a fresh 442 KB string (~3 ms of every run).
writeFileSync(outfile, `// qcow2kit CLI bundle, build ${id}\n${MODULE_WRAPPER[0]}${code}${MODULE_WRAPPER[1]}`);
