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
// the peak RSS of each. Writes bench/out/results.json. --quick uses small images for a smoke test.
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

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

function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

function sh(cmd, cmdArgs, opts = {}) {
  const r = spawnSync(cmd, cmdArgs, { stdio: ['pipe', 'pipe', 'inherit'], maxBuffer: 64 * MiB, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')}: exit ${r.status}\n${r.stdout ?? ''}`);
  return r.stdout?.toString() ?? '';
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

// --- tools -----------------------------------------------------------------------------------------
if (!have('qemu-img') || !have('qemu-io')) {
  console.error('qemu-img and qemu-io are needed: apt-get install -y qemu-utils');
  process.exit(1);
}
if (!existsSync(join(repo, 'dist', 'cli', 'main.js'))) {
  console.error('qcow2kit is not built: run `npm ci` (or `npm run build`) first');
  process.exit(1);
}
/** GNU time gives the peak RSS of a child (ru_maxrss); fall back to polling /proc otherwise. */
let gnuTime = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
if (gnuTime === undefined && process.getuid?.() === 0 && have('apt-get')) {
  log('installing GNU time for peak-memory figures');
  spawnSync('sh', ['-c', 'apt-get install -y -qq time >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq time >/dev/null)'], { stdio: 'inherit' });
  if (existsSync('/usr/bin/time')) gnuTime = '/usr/bin/time';
}
if (gnuTime === undefined) log('GNU time not found: peak RSS comes from polling /proc/PID/status (VmHWM)');

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

/** Regular files under the library directories, sorted, concatenated up to `bytes`. */
function writeLibraryRaw(path, bytes) {
  const files = [];
  const walk = (dir) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files.push(p);
    }
  };
  walk('/usr/lib/x86_64-linux-gnu');
  walk('/usr/lib');
  const seen = new Set();
  const fd = openSync(path, 'w');
  let written = 0;
  try {
    for (const f of files) {
      if (written >= bytes || seen.has(f)) continue;
      seen.add(f);
      let data;
      try {
        if (lstatSync(f).size === 0) continue;
        data = readFileSync(f);
      } catch {
        continue;
      }
      const n = Math.min(data.length, bytes - written);
      writeSync(fd, data, 0, n, written);
      written += n;
    }
  } finally {
    closeSync(fd);
  }
  if (written < bytes) log(`only ${written} bytes of library files found (wanted ${bytes})`);
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
      writeLibraryRaw(raw, P.libBytes);
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
/** Runs a command with stdout to `stdoutPath` (or /dev/null); resolves wall seconds and peak RSS (KiB). */
function measure(cmd, cmdArgs, stdoutPath = '/dev/null') {
  return new Promise((resolve, reject) => {
    const timeFile = join(outDir, '.time');
    const [file, argv] = gnuTime
      ? [gnuTime, ['-f', '%M', '-o', timeFile, cmd, ...cmdArgs]]
      : [cmd, cmdArgs];
    const out = openSync(stdoutPath, 'w');
    let stderr = '';
    let hwm = 0;
    const t0 = performance.now();
    const child = spawn(file, argv, { stdio: ['ignore', out, 'pipe'] });
    closeSync(out);
    child.stderr.on('data', (b) => (stderr += b));
    const poll = gnuTime
      ? undefined
      : setInterval(() => {
          try {
            const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
            if (m) hwm = Math.max(hwm, Number(m[1]));
          } catch {
            /* exited */
          }
        }, 5);
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (performance.now() - t0) / 1000;
      if (poll) clearInterval(poll);
      if (code !== 0) return reject(new Error(`${cmd} ${cmdArgs.join(' ')}: exit ${code}\n${stderr}`));
      const rss = gnuTime ? Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop()) : hwm;
      resolve({ seconds, rssKiB: rss });
    });
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * Alternates the two tools `runs` times after one untimed warm-up each; `prepare` runs before
 * every run (deletes the previous output), `verify` once at the end on the last outputs.
 */
async function compareTools(name, ours, theirs, { prepare = () => {}, verify } = {}) {
  log(`${name}: warm-up`);
  for (const side of [ours, theirs]) {
    prepare();
    await measure(...side);
  }
  const res = { ours: [], qemu: [] };
  for (let i = 0; i < runs; i++) {
    for (const [key, side] of i % 2 === 0 ? [['ours', ours], ['qemu', theirs]] : [['qemu', theirs], ['ours', ours]]) {
      prepare();
      res[key].push(await measure(...side));
    }
    log(`${name}: run ${i + 1}/${runs}: ours ${res.ours.at(-1).seconds.toFixed(2)} s, qemu-img ${res.qemu.at(-1).seconds.toFixed(2)} s`);
  }
  const oursS = median(res.ours.map((r) => r.seconds));
  const qemuS = median(res.qemu.map((r) => r.seconds));
  const row = {
    name,
    runs,
    oursSeconds: res.ours.map((r) => r.seconds),
    qemuSeconds: res.qemu.map((r) => r.seconds),
    oursMedian: oursS,
    qemuMedian: qemuS,
    ratio: oursS / qemuS,
    oursPeakRssKiB: Math.max(...res.ours.map((r) => r.rssKiB)),
    qemuPeakRssKiB: Math.max(...res.qemu.map((r) => r.rssKiB)),
    limitRatio: LIMITS[name] ?? null,
    limitRssKiB: RSS_LIMIT_KIB,
  };
  if (verify) row.sameOutput = verify();
  return row;
}

async function benchConvert(name, image) {
  const oursOut = join(outDir, `${name}.ours.raw`);
  const qemuOut = join(outDir, `${name}.qemu.raw`);
  const clean = () => {
    rmSync(oursOut, { force: true });
    rmSync(qemuOut, { force: true });
  };
  const row = await compareTools(
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
        return same;
      },
    },
  );
  return row;
}

async function benchMap(name, image) {
  const oursOut = join(outDir, `${name}.ours.json`);
  const qemuOut = join(outDir, `${name}.qemu.json`);
  return compareTools(
    name,
    [cli, ['map', '--output=json', image], '/dev/null'],
    ['qemu-img', ['map', '--output=json', image], '/dev/null'],
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
        return same;
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
  return compareTools('startup', [cli, ['--version']], ['qemu-img', ['--version']]);
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

const mib = (kib) => (kib / 1024).toFixed(0);
const lines = [
  `qcow2kit vs qemu-img${quick ? ' (--quick)' : ''}: median of ${runs} alternating runs, page cache warm`,
  '',
  'case        ours (s)  qemu-img (s)  ratio  limit  ours RSS (MiB)  qemu RSS (MiB)  same output',
];
for (const r of results) {
  if (r.error) {
    lines.push(`${r.name.padEnd(10)}  error: ${r.error}`);
    continue;
  }
  const ok = (r.limitRatio === null || r.ratio <= r.limitRatio) && r.oursPeakRssKiB <= RSS_LIMIT_KIB;
  lines.push(
    [
      r.name.padEnd(10),
      r.oursMedian.toFixed(3).padStart(9),
      r.qemuMedian.toFixed(3).padStart(13),
      r.ratio.toFixed(2).padStart(6),
      (r.limitRatio === null ? '-' : r.limitRatio.toFixed(1)).padStart(6),
      mib(r.oursPeakRssKiB).padStart(15),
      mib(r.qemuPeakRssKiB).padStart(15),
      (r.sameOutput === undefined ? '-' : String(r.sameOutput)).padStart(12),
      ok ? '' : '  <- over target',
    ].join(' '),
  );
}
lines.push('', `targets: ratio <= limit, ours peak RSS <= ${RSS_LIMIT_KIB / 1024} MiB`);
console.log(lines.join('\n'));

const report = {
  date: new Date().toISOString(),
  quick,
  runs,
  node: process.version,
  qemu: sh('qemu-img', ['--version']).split('\n')[0],
  peakRssSource: gnuTime ? 'GNU time %M' : '/proc VmHWM polling',
  params: P,
  results,
};
writeFileSync(join(outDir, 'results.json'), JSON.stringify(report, null, 2) + '\n');
log(`wrote ${join(outDir, 'results.json')}`);
process.exitCode = results.some((r) => r.error) ? 1 : 0;
