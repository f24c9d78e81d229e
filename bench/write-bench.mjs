#!/usr/bin/env node
// Write-path benchmark: qcow2kit against qemu-img on the same workloads, in the same run.
//
//   node bench/write-bench.mjs [--runs N] [--dir PATH] [--only bench,convert,convert-c] [--count N]
//
// Cases (issue #3 targets in brackets):
//   bench      `bench -w -c 30000 -d 8 -s 64k` on a fresh 4 GiB qcow2 with 64 KiB clusters, made by
//              qemu-img create before every run: every request allocates a cluster [ratio <= 1.0]
//   convert    `convert -O qcow2` of a 512 MiB raw file of system libraries [<= 1.2]
//   convert-c  `convert -c -O qcow2` of the same file [<= 0.7]
// The two tools alternate (one untimed warm-up each), the median of --runs (default 5) is
// reported with the ratio ours/qemu-img and the peak RSS of each (GNU time %M) [<= 150 MiB].
// For bench, both the process wall time and the tool's own "Run completed in" figure are kept.
// Outputs are verified: qemu-img check (clean) and qemu-img compare against qemu-img's output.
// Work files live in --dir: default /dev/shm when it has room (the page cache and writeback of a
// disk make write timings noisy; tmpfs measures the tools), else bench/out/write.
// Writes bench/out/write-results.json.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(repo, 'bin', 'qcow2kit');
const args = process.argv.slice(2);
const argValue = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const runs = Number(argValue('--runs') ?? 5);
const count = Number(argValue('--count') ?? 30000);
const only = argValue('--only')?.split(',');
const outDir = join(repo, 'bench', 'out');
const BENCH_IMAGE_SIZE = 4 * GiB;
const RAW_BYTES = 512 * MiB;
const LIMITS = { bench: 1.0, convert: 1.2, 'convert-c': 0.7 };
const RSS_LIMIT_KIB = 150 * 1024;

function log(msg) {
  process.stderr.write(`[write-bench] ${msg}\n`);
}

function sh(cmd, cmdArgs, opts = {}) {
  const r = spawnSync(cmd, cmdArgs, { stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 * MiB, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')}: exit ${r.status}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  return r.stdout?.toString() ?? '';
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function freeBytes(path) {
  try {
    const s = statfsSync(path);
    return s.bavail * s.bsize;
  } catch {
    return 0;
  }
}

// --- tools ---------------------------------------------------------------------------------------
if (!have('qemu-img')) {
  console.error('qemu-img is needed: apt-get install -y qemu-utils');
  process.exit(1);
}
if (!existsSync(join(repo, 'dist', 'cli', 'main.js'))) {
  console.error('qcow2kit is not built: run `npm run build` first');
  process.exit(1);
}
let gnuTime = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
if (gnuTime === undefined && process.getuid?.() === 0 && have('apt-get')) {
  log('installing GNU time (Debian package "time") for peak-memory figures');
  spawnSync('sh', ['-c', 'apt-get install -y -qq time >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq time >/dev/null)'], { stdio: 'inherit' });
  if (existsSync('/usr/bin/time')) gnuTime = '/usr/bin/time';
}
if (gnuTime === undefined) log('GNU time not found: peak RSS comes from polling /proc/PID/status (VmHWM)');

// Room for one 2 GiB bench image per tool, a 512 MiB source and two outputs.
const workDir = argValue('--dir') ?? (freeBytes('/dev/shm') > 5 * GiB ? '/dev/shm/qcow2kit-write-bench' : join(outDir, 'write'));
mkdirSync(workDir, { recursive: true });
mkdirSync(outDir, { recursive: true });
log(`work directory: ${workDir}`);

// --- measuring -----------------------------------------------------------------------------------
/** Runs a command; resolves wall seconds, peak RSS (KiB) and stdout. */
function measure(cmd, cmdArgs) {
  return new Promise((resolve, reject) => {
    const timeFile = join(workDir, '.time');
    const [file, argv] = gnuTime ? [gnuTime, ['-f', '%M %U %S', '-o', timeFile, cmd, ...cmdArgs]] : [cmd, cmdArgs];
    let stdout = '';
    let stderr = '';
    let hwm = 0;
    const t0 = performance.now();
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (b) => (stdout += b));
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
      // GNU time: "peakKiB user sys"; CPU time says less about other load on the machine than wall time.
      const [rss, user, sys] = gnuTime ? readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ').map(Number) : [hwm, NaN, NaN];
      resolve({ seconds, rssKiB: rss, cpuSeconds: user + sys, stdout });
    });
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * Alternates the two tools `runs` times after one untimed warm-up each. `prepare(side)` runs
 * before every run, untimed; `after(side, result)` after it (may add fields); `verify()` once.
 */
async function compareTools(name, sides, { prepare = () => {}, after = () => {}, verify } = {}) {
  log(`${name}: warm-up`);
  for (const key of ['ours', 'qemu']) {
    prepare(key);
    after(key, await measure(...sides[key]));
  }
  const res = { ours: [], qemu: [] };
  for (let i = 0; i < runs; i++) {
    for (const key of i % 2 === 0 ? ['ours', 'qemu'] : ['qemu', 'ours']) {
      prepare(key);
      const r = await measure(...sides[key]);
      after(key, r);
      res[key].push(r);
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
    oursCpuSeconds: res.ours.map((r) => r.cpuSeconds),
    qemuCpuSeconds: res.qemu.map((r) => r.cpuSeconds),
    cpuRatio: median(res.ours.map((r) => r.cpuSeconds)) / median(res.qemu.map((r) => r.cpuSeconds)),
    loadAverage: os.loadavg(),
    oursPeakRssKiB: Math.max(...res.ours.map((r) => r.rssKiB)),
    qemuPeakRssKiB: Math.max(...res.qemu.map((r) => r.rssKiB)),
    limitRatio: LIMITS[name] ?? null,
    limitRssKiB: RSS_LIMIT_KIB,
  };
  if (res.ours[0]?.runSeconds !== undefined) {
    row.oursRunSeconds = res.ours.map((r) => r.runSeconds);
    row.qemuRunSeconds = res.qemu.map((r) => r.runSeconds);
    row.runRatio = median(row.oursRunSeconds) / median(row.qemuRunSeconds);
  }
  if (verify) Object.assign(row, verify());
  return row;
}

/** `qemu-img check` clean (exit 0, nothing leaked or corrupt). */
function checkClean(image) {
  const r = spawnSync('qemu-img', ['check', image], { encoding: 'utf8' });
  return { clean: r.status === 0, checkOutput: r.status === 0 ? undefined : `${r.stdout}${r.stderr}`.trim() };
}

// --- cases ---------------------------------------------------------------------------------------
async function benchWrite() {
  const img = { ours: join(workDir, 'bench-ours.qcow2'), qemu: join(workDir, 'bench-qemu.qcow2') };
  const benchArgs = ['bench', '-w', '-c', String(count), '-d', '8', '-s', '64k'];
  const fresh = (key) => {
    rmSync(img.ours, { force: true });
    rmSync(img.qemu, { force: true });
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', img[key], String(BENCH_IMAGE_SIZE)]);
  };
  const runLine = (stdout) => {
    const m = /Run completed in ([\d.]+) seconds\./.exec(stdout);
    return m ? Number(m[1]) : NaN;
  };
  return compareTools(
    'bench',
    {
      ours: [cli, [...benchArgs, img.ours]],
      qemu: ['qemu-img', [...benchArgs, img.qemu]],
    },
    {
      prepare: fresh,
      after: (key, r) => {
        r.runSeconds = runLine(r.stdout);
        r.header = r.stdout.split('\n')[0];
      },
      verify: () => {
        // One more pair, kept for the checks: same content, ours clean, same first line.
        fresh('ours');
        const o = sh(cli, [...benchArgs, img.ours]);
        sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', img.qemu, String(BENCH_IMAGE_SIZE)]);
        const q = sh('qemu-img', [...benchArgs, img.qemu]);
        const same = spawnSync('qemu-img', ['compare', '-q', img.ours, img.qemu]).status === 0;
        const c = checkClean(img.ours);
        rmSync(img.ours, { force: true });
        rmSync(img.qemu, { force: true });
        return { sameOutput: same, sameHeader: o.split('\n')[0] === q.split('\n')[0], ...c };
      },
    },
  );
}

/** Regular files under the library directories, sorted, concatenated up to `bytes` (as bench/run.mjs). */
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
  const fd = openSync(path, 'w');
  let written = 0;
  try {
    for (const f of files) {
      if (written >= bytes) break;
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

function sourceRaw() {
  const path = join(workDir, 'libs-512m.raw');
  if (!existsSync(path) || lstatSync(path).size !== RAW_BYTES) {
    log('building the 512 MiB raw source from system libraries ...');
    writeLibraryRaw(path, RAW_BYTES);
  }
  return path;
}

/** Null when `convert [extra] -O qcow2` works in our CLI, else its error line. */
function convertUnsupported(extra) {
  const src = join(workDir, 'probe.raw');
  const dst = join(workDir, 'probe.qcow2');
  writeFileSync(src, new Uint8Array(1 * MiB).fill(1));
  const r = spawnSync(cli, ['convert', ...extra, '-O', 'qcow2', src, dst], { encoding: 'utf8' });
  rmSync(src, { force: true });
  rmSync(dst, { force: true });
  return r.status === 0 ? null : (r.stderr.trim().split('\n')[0] ?? `exit ${r.status}`);
}

async function benchConvert(name, extra) {
  const unsupported = convertUnsupported(extra);
  if (unsupported !== null) {
    log(`${name}: skipped: qcow2kit ${['convert', ...extra, '-O', 'qcow2'].join(' ')} fails: ${unsupported}`);
    return { name, skipped: `qcow2kit convert ${[...extra, '-O', 'qcow2'].join(' ')} not supported yet: ${unsupported}` };
  }
  const src = sourceRaw();
  const out = { ours: join(workDir, `${name}.ours.qcow2`), qemu: join(workDir, `${name}.qemu.qcow2`) };
  const clean = () => {
    rmSync(out.ours, { force: true });
    rmSync(out.qemu, { force: true });
  };
  const row = await compareTools(
    name,
    {
      ours: [cli, ['convert', ...extra, '-O', 'qcow2', src, out.ours]],
      qemu: ['qemu-img', ['convert', ...extra, '-O', 'qcow2', src, out.qemu]],
    },
    {
      prepare: clean,
      verify: () => {
        sh(cli, ['convert', ...extra, '-O', 'qcow2', src, out.ours]);
        sh('qemu-img', ['convert', ...extra, '-O', 'qcow2', src, out.qemu]);
        const same = spawnSync('qemu-img', ['compare', '-q', '-f', 'raw', src, out.ours]).status === 0;
        const size = { oursFileBytes: lstatSync(out.ours).size, qemuFileBytes: lstatSync(out.qemu).size };
        const c = checkClean(out.ours);
        clean();
        return { sameOutput: same, ...size, ...c };
      },
    },
  );
  return row;
}

// --- main ----------------------------------------------------------------------------------------
const plan = [
  ['bench', benchWrite],
  ['convert', () => benchConvert('convert', [])],
  ['convert-c', () => benchConvert('convert-c', ['-c'])],
].filter(([name]) => only === undefined || only.includes(name));

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
  `qcow2kit vs qemu-img, write path: median of ${runs} alternating runs, work files in ${workDir}`,
  '',
  'case        ours (s)  qemu-img (s)  ratio  limit  ours RSS (MiB)  qemu RSS (MiB)  output ok',
];
for (const r of results) {
  if (r.error || r.skipped) {
    lines.push(`${r.name.padEnd(10)}  ${r.error ? `error: ${r.error}` : `skipped: ${r.skipped}`}`);
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
      String(r.sameOutput && r.clean).padStart(10),
      ok ? '' : '  <- over target',
    ].join(' '),
  );
  if (Number.isFinite(r.cpuRatio)) {
    lines.push(`            CPU (user+sys): ours ${median(r.oursCpuSeconds).toFixed(3)} s, qemu-img ${median(r.qemuCpuSeconds).toFixed(3)} s, ratio ${r.cpuRatio.toFixed(2)}; load average ${r.loadAverage.map((x) => x.toFixed(1)).join(' ')}`);
  }
  if (r.runRatio !== undefined) {
    lines.push(`            "Run completed in": ours ${median(r.oursRunSeconds).toFixed(3)} s, qemu-img ${median(r.qemuRunSeconds).toFixed(3)} s, ratio ${r.runRatio.toFixed(2)}`);
  }
  if (r.checkOutput) lines.push(`            qemu-img check of our output: ${r.checkOutput.split('\n')[0]}`);
}
lines.push('', `targets: ratio <= limit, ours peak RSS <= ${RSS_LIMIT_KIB / 1024} MiB; output ok = same content as qemu-img's and qemu-img check clean`);
console.log(lines.join('\n'));

const report = {
  date: new Date().toISOString(),
  runs,
  count,
  node: process.version,
  qemu: sh('qemu-img', ['--version']).split('\n')[0],
  cpus: os.cpus().length,
  loadAverageAtEnd: os.loadavg(),
  workDir,
  peakRssSource: gnuTime ? 'GNU time %M' : '/proc VmHWM polling',
  params: { benchImageSize: BENCH_IMAGE_SIZE, rawBytes: RAW_BYTES },
  results,
};
writeFileSync(join(outDir, 'write-results.json'), JSON.stringify(report, null, 2) + '\n');
log(`wrote ${join(outDir, 'write-results.json')}`);
if (workDir.startsWith('/dev/shm/')) rmSync(join(workDir, 'libs-512m.raw'), { force: true });
process.exitCode = results.some((r) => r.error) ? 1 : 0;
