#!/usr/bin/env node
// Benchmark: qcow2kit against qemu-img on the same images, in the same run.
//
//   node bench/run.mjs [--quick] [--runs N] [--only NAME[,NAME...]]
//
// Builds its images once in bench/out/ (bench/out/quick/ with --quick) with qemu-img/qemu-io:
//   plain  2 GiB qcow2, 1 GiB of incompressible data, a 512 MiB zeroed region (write -z)
//   zlib   ~512 MiB of system libraries, qemu-img convert -c (zlib)
//   zstd   the same data, compression_type=zstd
//   sparse 64 GiB qcow2 with 20k scattered 4 KiB writes
// then times `bin/qcow2kit convert -O raw` against `qemu-img convert -O raw` on each (and
// `map --output=json` on sparse) and each tool's start-up (`--version`, always run), alternating
// the two tools, page cache warm, and reports the median wall time, the ratio ours/qemu-img and
// the peak RSS of each, with the spread of the runs, CPU time and CPU pressure (bench/harness.mjs).
// Writes bench/out/results.json. --quick uses small images for a smoke test.
import { spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareTools, createLog, findGnuTime, formatTable, have, sh, writeLibraryRaw } from './harness.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(repo, 'bin', 'qcow2kit');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const argValue = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const runs = Number(argValue('--runs') ?? (quick ? 3 : 5));
const only = argValue('--only')?.split(',');
const outDir = join(repo, 'bench', 'out', quick ? 'quick' : '');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Image sizes; --quick shrinks them to a smoke test. */
const P = quick
  ? { plainSize: 128 * MiB, plainData: 64 * MiB, plainZero: 32 * MiB, libBytes: 24 * MiB, sparseSize: 4 * GiB, sparseWrites: 1000 }
  : { plainSize: 2 * GiB, plainData: 1 * GiB, plainZero: 512 * MiB, libBytes: 512 * MiB, sparseSize: 64 * GiB, sparseWrites: 20000 };

/** Targets from issue #2: ours/qemu-img wall time, and peak memory. */
const LIMITS = { plain: 1.2, zlib: 1.2, zstd: 1.5, 'sparse-map': 2 };
const RSS_LIMIT_KIB = 150 * 1024;

const log = createLog('bench');

// --- tools -----------------------------------------------------------------------------------------
if (!have('qemu-img') || !have('qemu-io')) {
  console.error('qemu-img and qemu-io are needed: apt-get install -y qemu-utils');
  process.exit(1);
}
if (!existsSync(join(repo, 'dist', 'cli', 'main.js'))) {
  console.error('qcow2kit is not built: run `npm ci` (or `npm run build`) first');
  process.exit(1);
}
const gnuTime = findGnuTime(log);

// --- image building (cached) -----------------------------------------------------------------------
mkdirSync(outDir, { recursive: true });
const manifestPath = join(outDir, 'images.json');
const manifest = existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : {};

/** Builds `name` with `build(path)` unless a file made with the same parameters is there. */
function cached(name, params, build) {
  const path = join(outDir, name);
  const key = JSON.stringify(params);
  if (existsSync(path) && manifest[name] === key) return path;
  log(`building ${name} ...`);
  const t0 = performance.now();
  rmSync(path, { force: true });
  build(path);
  manifest[name] = key;
  writeFileSync(manifestPath, JSON.stringify(manifest, null, 2));
  log(`built ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return path;
}

/** Incompressible, deterministic bytes: AES-128-CTR keystream. */
function writeRandomRaw(path, size, dataBytes) {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(8 * MiB);
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < dataBytes; off += zeros.length) {
      const chunk = cipher.update(zeros.subarray(0, Math.min(zeros.length, dataBytes - off)));
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
  sh('truncate', ['-s', String(size), path]);
}

function buildPlain(path) {
  const raw = `${path}.src.raw`;
  writeRandomRaw(raw, P.plainSize, P.plainData);
  sh('qemu-img', ['convert', '-O', 'qcow2', raw, path]);
  rmSync(raw);
  // A zeroed region in the middle of the data (zero clusters over allocated ones) and past it.
  const z1 = P.plainData / 2;
  sh('qemu-io', ['-t', 'unsafe', '-c', `write -z ${z1} ${P.plainZero / 2}`, '-c', `write -z ${P.plainData} ${P.plainZero / 2}`, path]);
}

function buildCompressed(type) {
  return (path) => {
    const raw = join(outDir, 'libs.raw');
    if (!existsSync(raw) || manifest['libs.raw'] !== String(P.libBytes)) {
      writeLibraryRaw(raw, P.libBytes, log);
      manifest['libs.raw'] = String(P.libBytes);
    }
    sh('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type}`, raw, path]);
  };
}

function buildSparse(path) {
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', path, String(P.sparseSize)]);
  let seed = 12345;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  const blocks = P.sparseSize / (4 * KiB);
  let script = '';
  for (let i = 0; i < P.sparseWrites; i++) {
    const block = (next() * 65536 + next()) % blocks;
    script += `write -P ${i & 0xff} ${block * 4 * KiB} 4k\n`;
  }
  sh('qemu-io', ['-t', 'unsafe', path], { input: script, stdio: ['pipe', 'ignore', 'inherit'] });
}

const images = {
  plain: () => cached('plain.qcow2', { v: 1, s: P.plainSize, d: P.plainData, z: P.plainZero }, buildPlain),
  zlib: () => cached('zlib.qcow2', { v: 1, b: P.libBytes }, buildCompressed('zlib')),
  zstd: () => cached('zstd.qcow2', { v: 1, b: P.libBytes }, buildCompressed('zstd')),
  sparse: () => cached('sparse.qcow2', { v: 1, s: P.sparseSize, w: P.sparseWrites }, buildSparse),
};

// --- measuring -----------------------------------------------------------------------------------
/** Times both sides of a case (stdout to /dev/null unless a side names a file). */
function compare(name, ours, theirs, options) {
  return compareTools(name, { ours, qemu: theirs }, {
    runs,
    limit: LIMITS[name] ?? null,
    log,
    measureOptions: { gnuTime, timeFile: join(outDir, '.time'), stdoutPath: '/dev/null' },
    ...options,
  });
}

async function benchConvert(name, image) {
  const oursOut = join(outDir, `${name}.ours.raw`);
  const qemuOut = join(outDir, `${name}.qemu.raw`);
  const clean = () => {
    rmSync(oursOut, { force: true });
    rmSync(qemuOut, { force: true });
  };
  const row = await compare(
    name,
    [cli, ['convert', '-O', 'raw', image, oursOut]],
    ['qemu-img', ['convert', '-O', 'raw', image, qemuOut]],
    {
      prepare: clean,
      verify: () => {
        // Last run of each left its output (prepare deletes both before each run, so redo one).
        spawnSync(cli, ['convert', '-O', 'raw', image, oursOut]);
        spawnSync('qemu-img', ['convert', '-O', 'raw', image, qemuOut]);
        const same = spawnSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', oursOut, qemuOut]).status === 0;
        clean();
        return { sameOutput: same };
      },
    },
  );
  return row;
}

async function benchMap(name, image) {
  const oursOut = join(outDir, `${name}.ours.json`);
  const qemuOut = join(outDir, `${name}.qemu.json`);
  return compare(
    name,
    [cli, ['map', '--output=json', image]],
    ['qemu-img', ['map', '--output=json', image]],
    {
      verify: () => {
        const o = spawnSync(cli, ['map', '--output=json', image], { maxBuffer: 512 * MiB });
        const q = spawnSync('qemu-img', ['map', '--output=json', image], { maxBuffer: 512 * MiB });
        let same = false;
        try {
          same = JSON.stringify(JSON.parse(o.stdout.toString())) === JSON.stringify(JSON.parse(q.stdout.toString()));
        } catch {
          same = false;
        }
        if (!same) {
          writeFileSync(oursOut, o.stdout);
          writeFileSync(qemuOut, q.stdout);
        }
        return { sameOutput: same };
      },
    },
  );
}

/**
 * The fixed cost of one run of each tool, paid by every case above: `qcow2kit --version` (Node's
 * own start-up plus loading the CLI) against `qemu-img --version`. No target: it shows how much
 * of a short case's ratio is start-up.
 */
async function benchStartup() {
  return compare('startup', [cli, ['--version']], ['qemu-img', ['--version']]);
}

// --- main ----------------------------------------------------------------------------------------
const plan = [
  ['startup', benchStartup],
  ['plain', () => benchConvert('plain', images.plain())],
  ['zlib', () => benchConvert('zlib', images.zlib())],
  ['zstd', () => benchConvert('zstd', images.zstd())],
  ['sparse', () => benchConvert('sparse', images.sparse())],
  ['sparse-map', () => benchMap('sparse-map', images.sparse())],
].filter(([name]) => only === undefined || only.includes(name) || (name === 'sparse-map' && only.includes('sparse')) || name === 'startup');

const results = [];
for (const [name, fn] of plan) {
  try {
    results.push(await fn());
  } catch (e) {
    log(`${name} failed: ${e.message}`);
    results.push({ name, error: String(e.message).split('\n')[0] });
  }
}

console.log(
  formatTable({
    title: `qcow2kit vs qemu-img${quick ? ' (--quick)' : ''}: median of ${runs} alternating runs, page cache warm`,
    results,
    rssLimitKiB: RSS_LIMIT_KIB,
    okColumn: 'same output',
    ok: (r) => r.sameOutput,
    footer: `targets: ratio <= limit, ours peak RSS <= ${RSS_LIMIT_KIB / 1024} MiB`,
  }),
);

const report = {
  date: new Date().toISOString(),
  quick,
  runs,
  node: process.version,
  qemu: sh('qemu-img', ['--version']).split('\n')[0],
  peakRssSource: gnuTime ? 'GNU time %M' : '/proc VmHWM polling',
  params: P,
  limits: { ratio: LIMITS, peakRssKiB: RSS_LIMIT_KIB },
  results,
};
writeFileSync(join(outDir, 'results.json'), JSON.stringify(report, null, 2) + '\n');
log(`wrote ${join(outDir, 'results.json')}`);
process.exitCode = results.some((r) => r.error) ? 1 : 0;
