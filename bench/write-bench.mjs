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
// The two tools alternate (one untimed warm-up each), the median of --runs (default 5; 9 for
// bench, whose one-second runs are cheap and, on a VM whose balloon takes back freed memory,
// now and then several times slower for either tool: see the README) is
// reported with the ratio ours/qemu-img and the peak RSS of each (GNU time %M) [<= 150 MiB].
// For bench, both the process wall time and the tool's own "Run completed in" figure are kept.
// Each case also reports the spread of the runs, CPU time and CPU pressure (bench/harness.mjs).
// Outputs are verified: qemu-img check (clean) and qemu-img compare against qemu-img's output.
// Work files live in --dir: default /dev/shm when it has room (the page cache and writeback of a
// disk make write timings noisy; tmpfs measures the tools), else bench/out/write.
// Writes bench/out/write-results.json.
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareTools, createLog, findGnuTime, formatTable, have, median, sh, writeLibraryRaw } from './harness.mjs';

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
const RUNS_FOR = { bench: Number(argValue('--runs') ?? 9) };
const count = Number(argValue('--count') ?? 30000);
const only = argValue('--only')?.split(',');
const outDir = join(repo, 'bench', 'out');
const BENCH_IMAGE_SIZE = 4 * GiB;
const RAW_BYTES = 512 * MiB;
const LIMITS = { bench: 1.0, convert: 1.2, 'convert-c': 0.7 };
const RSS_LIMIT_KIB = 150 * 1024;

const log = createLog('write-bench');

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
const gnuTime = findGnuTime(log);

// Room for one 2 GiB bench image per tool, a 512 MiB source and two outputs.
const workDir = argValue('--dir') ?? (freeBytes('/dev/shm') > 5 * GiB ? '/dev/shm/qcow2kit-write-bench' : join(outDir, 'write'));
mkdirSync(workDir, { recursive: true });
mkdirSync(outDir, { recursive: true });
log(`work directory: ${workDir}`);

// --- measuring -----------------------------------------------------------------------------------
/** Times both sides of a case, keeping each run's stdout. */
function compare(name, sides, options) {
  return compareTools(name, sides, { runs: RUNS_FOR[name] ?? runs, limit: LIMITS[name] ?? null, log, measureOptions: { gnuTime, timeFile: join(workDir, '.time') }, ...options });
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
  return compare(
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

function sourceRaw() {
  const path = join(workDir, 'libs-512m.raw');
  if (!existsSync(path) || lstatSync(path).size !== RAW_BYTES) {
    log('building the 512 MiB raw source from system libraries ...');
    writeLibraryRaw(path, RAW_BYTES, log);
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
  const row = await compare(
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

console.log(
  formatTable({
    title: `qcow2kit vs qemu-img, write path: median of ${runs} alternating runs (bench: ${RUNS_FOR.bench}), work files in ${workDir}`,
    results,
    rssLimitKiB: RSS_LIMIT_KIB,
    okColumn: 'output ok',
    ok: (r) => r.sameOutput && r.clean,
    extraLines: (r) => [
      ...(r.runRatio === undefined
        ? []
        : [`            "Run completed in": ours ${median(r.oursRunSeconds).toFixed(3)} s, qemu-img ${median(r.qemuRunSeconds).toFixed(3)} s, ratio ${r.runRatio.toFixed(2)}`]),
      ...(r.checkOutput ? [`            qemu-img check of our output: ${r.checkOutput.split('\n')[0]}`] : []),
    ],
    footer: `targets: ratio <= limit, ours peak RSS <= ${RSS_LIMIT_KIB / 1024} MiB; output ok = same content as qemu-img's and qemu-img check clean`,
  }),
);

const report = {
  date: new Date().toISOString(),
  runs,
  benchRuns: RUNS_FOR.bench,
  count,
  node: process.version,
  qemu: sh('qemu-img', ['--version']).split('\n')[0],
  cpus: os.cpus().length,
  loadAverageAtEnd: os.loadavg(),
  workDir,
  peakRssSource: gnuTime ? 'GNU time %M' : '/proc VmHWM polling',
  params: { benchImageSize: BENCH_IMAGE_SIZE, rawBytes: RAW_BYTES },
  limits: { ratio: LIMITS, peakRssKiB: RSS_LIMIT_KIB },
  results,
};
writeFileSync(join(outDir, 'write-results.json'), JSON.stringify(report, null, 2) + '\n');
log(`wrote ${join(outDir, 'write-results.json')}`);
if (workDir.startsWith('/dev/shm/')) rmSync(join(workDir, 'libs-512m.raw'), { force: true });
process.exitCode = results.some((r) => r.error) ? 1 : 0;
