'use strict';
// Loads the CLI bundle (dist/cli/qcow2kit.cjs) the way Node loads a CommonJS module, plus V8's
// code cache for it when the build left one (written by scripts/code-cache.mjs after running
// sample commands): compiling the bundle and the functions a command calls is ~17 ms of every
// run otherwise. Node 20 has no compile cache of its own for CommonJS (Node 22's
// module.enableCompileCache does this).
//
// There is one cache per common command (dist/cli/qcow2kit.cjs.<command>.v8cache) besides the
// one for all of them (dist/cli/qcow2kit.cjs.v8cache): V8 deserializes the whole cache it is
// given, and a cache that holds only what `convert` runs starts `convert` ~9 ms sooner than the
// full one.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const BUNDLE = path.join(__dirname, '..', 'dist', 'cli', 'qcow2kit.cjs');

/**
 * V8 flags for CLI runs, set once the bundle is compiled. Most commands last a second or
 * less, and TurboFan's compile time is then a large share of the CPU of a 2-core machine: in
 * a 0.6 s `convert -O qcow2` it compiled ~35 functions for over 300 ms. A smaller inlining
 * budget (default 920 bytecode bytes per function) halves that compile time; commands that
 * run long lose nothing measurable (bench/). The code cache records the flags it was made
 * with: scripts/code-cache.mjs makes the caches with V8's default flags, and loadCli sets
 * this one after the bundle is compiled.
 */
const V8_FLAGS = '--max-inlined-bytecode-size-cumulative=200';

/**
 * Flags for one command, instead of V8_FLAGS. `convert` moves gigabytes with little JavaScript
 * per megabyte, and TurboFan still compiled ~30 functions for ~130 ms of CPU in a 0.3 s
 * `convert -O qcow2`, taken from the I/O threads of a 2-core machine. A 16 times larger
 * interrupt budget (the bytecode a function runs before V8 considers optimizing it; default
 * 67584) leaves most of them to the baseline compiler: 380.8 -> 335.1 ms for that convert and
 * 391.0 -> 375.7 ms for `convert -O raw` of 1 GiB (median of 21 runs each). `bench` runs no
 * optimizing compiler at all (Sparkplug is the top tier): its main thread idles most of the
 * time while TurboFan's compiles took ~0.2 s of CPU from the I/O thread. `bench -w -c 30000
 * -d 8 -s 64k`: 0.665 s with V8_FLAGS and the convert budget, 0.745 s with V8's defaults,
 * 0.555 s so (qemu-img 0.765 s; medians of 12-14).
 */
const COMMAND_V8_FLAGS = { convert: `${V8_FLAGS} --interrupt-budget=1081344`, bench: '--max-opt=1' };

/** The V8 flags loadCli sets for a run of `command`. */
function v8FlagsFor(command) {
  return typeof command === 'string' && Object.hasOwn(COMMAND_V8_FLAGS, command) ? COMMAND_V8_FLAGS[command] : V8_FLAGS;
}

/** The first line of the bundle names its build; a cache file starts with the same line. */
function buildId(text) {
  const end = text.indexOf('\n');
  return end < 0 ? '' : text.slice(0, end);
}

/** The cache file for `command` (any command when undefined). */
function cacheFileFor(bundle, command) {
  return command === undefined ? `${bundle}.v8cache` : `${bundle}.${command}.v8cache`;
}

/** The cached data in `file` when it was made for the build `id`; undefined otherwise. */
function readCache(file, id) {
  let cache;
  try {
    cache = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  // V8 checks its version and flags, but of the source only its length: the build id
  // keeps a cache from another build of the bundle out.
  const head = Buffer.byteLength(id) + 1;
  return id !== '' && cache.length > head && cache.toString('latin1', 0, head) === `${id}\n` ? cache.subarray(head) : undefined;
}

/**
 * Compiles and runs the bundle; returns its exports, the compiled script (for
 * createCachedData) and the cache file used. `command` (the CLI's first argument) picks that
 * command's code cache when the build made one; `useCache: false` compiles from source;
 * `tune: false` leaves V8's flags alone (scripts/code-cache.mjs); `bundle` is for tests.
 */
function loadCli({ useCache = true, bundle = BUNDLE, command, tune = true } = {}) {
  // The bundle is ASCII (esbuild escapes the rest): latin1 skips UTF-8 decoding.
  const source = fs.readFileSync(bundle, 'latin1');
  let cachedData;
  let cacheFile;
  if (useCache) {
    const id = buildId(source);
    const files = [cacheFileFor(bundle, undefined)];
    if (typeof command === 'string' && /^[a-z]+$/.test(command)) files.unshift(cacheFileFor(bundle, command));
    for (const file of files) {
      cachedData = readCache(file, id);
      if (cachedData !== undefined) {
        cacheFile = file;
        break;
      }
    }
  }
  // The file is already the module wrapper function (scripts/bundle-cli.mjs).
  const script = new vm.Script(source, { filename: bundle, ...(cachedData ? { cachedData } : {}) });
  const mod = { exports: {} };
  script.runInThisContext()(mod.exports, createRequire(bundle), mod, bundle, path.dirname(bundle));
  // Only now: V8 checks a code cache against its flags, Node's own caches of its modules too.
  // Set before Node starts, the flag made Node compile its modules from source (the CLI
  // reached its first read ~9 ms later); set before the bundle is compiled, it does the
  // same for the modules the bundle loads. The flag matters only to TurboFan, later.
  if (tune) require('node:v8').setFlagsFromString(v8FlagsFor(command));
  return { exports: mod.exports, script, source, cacheFile };
}

/** Writes the code cache of `script` (compiled from `source`) for `command`'s runs (all when undefined). */
function writeCodeCache(script, source, { bundle = BUNDLE, command } = {}) {
  const cacheFile = cacheFileFor(bundle, command);
  fs.writeFileSync(cacheFile, Buffer.concat([Buffer.from(`${buildId(source)}\n`, 'latin1'), script.createCachedData()]));
  return cacheFile;
}

module.exports = { loadCli, writeCodeCache, v8FlagsFor };
