'use strict';
// Loads the CLI bundle (dist/cli/qcow2kit.cjs) the way Node loads a CommonJS module, plus V8's
// code cache for it when the build left one (dist/cli/qcow2kit.cjs.v8cache, written by
// scripts/code-cache.mjs after running sample commands): compiling the 600 KB bundle and the
// functions a command calls is ~17 ms of every run otherwise. Node 20 has no compile cache of
// its own for CommonJS (Node 22's module.enableCompileCache does this).
const fs = require('node:fs');
const path = require('node:path');
const v8 = require('node:v8');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const BUNDLE = path.join(__dirname, '..', 'dist', 'cli', 'qcow2kit.cjs');

/**
 * V8 flags for CLI runs, set before the bundle is compiled. Most commands last a second or
 * less, and TurboFan's compile time is then a large share of the CPU of a 2-core machine: in
 * a 0.6 s `convert -O qcow2` it compiled ~35 functions for over 300 ms. A smaller inlining
 * budget (default 920 bytecode bytes per function) halves that compile time; commands that
 * run long lose nothing measurable (bench/). The code cache records the flags it was made
 * with, and scripts/code-cache.mjs loads the bundle through here, so the two match.
 */
const V8_FLAGS = '--max-inlined-bytecode-size-cumulative=200';

/** The first line of the bundle names its build; the cache file starts with the same line. */
function buildId(text) {
  const end = text.indexOf('\n');
  return end < 0 ? '' : text.slice(0, end);
}

/**
 * Compiles and runs the bundle; returns its exports and the compiled script (for
 * createCachedData). `useCache: false` compiles from source; `bundle` is for tests.
 */
function loadCli({ useCache = true, bundle = BUNDLE } = {}) {
  v8.setFlagsFromString(V8_FLAGS);
  const cacheFile = `${bundle}.v8cache`;
  const source = fs.readFileSync(bundle, 'utf8');
  let cachedData;
  if (useCache) {
    try {
      const cache = fs.readFileSync(cacheFile);
      const id = buildId(source);
      // V8 checks its version and flags, but of the source only its length: the build id
      // keeps a cache from another build of the bundle out.
      const head = Buffer.byteLength(id) + 1;
      if (id !== '' && cache.length > head && cache.toString('utf8', 0, head) === `${id}\n`) cachedData = cache.subarray(head);
    } catch {
      // No cache: compile from source.
    }
  }
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new vm.Script(wrapped, { filename: bundle, ...(cachedData ? { cachedData } : {}) });
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, createRequire(bundle), mod, bundle, path.dirname(bundle));
  return { exports: mod.exports, script, source };
}

/** Writes the code cache of `script` (compiled from `source`) for later runs. */
function writeCodeCache(script, source, bundle = BUNDLE) {
  const cacheFile = `${bundle}.v8cache`;
  fs.writeFileSync(cacheFile, Buffer.concat([Buffer.from(`${buildId(source)}\n`), script.createCachedData()]));
  return cacheFile;
}

module.exports = { loadCli, writeCodeCache };
