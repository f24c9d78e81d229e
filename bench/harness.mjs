// Shared parts of the benchmarks that time qcow2kit against qemu-img (bench/run.mjs,
// bench/write-bench.mjs): running and measuring a command, alternating the two tools, the
// figures of a case and the table they print.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, lstatSync, openSync, readFileSync, readdirSync, writeSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';

const MiB = 1024 * 1024;

/** A logger that prefixes its lines with `[tag]` on stderr. */
export function createLog(tag) {
  return (msg) => process.stderr.write(`[${tag}] ${msg}\n`);
}

/** Runs a command to completion; throws on failure; returns its stdout. */
export function sh(cmd, cmdArgs, opts = {}) {
  const r = spawnSync(cmd, cmdArgs, { stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 * MiB, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')}: exit ${r.status}\n${r.stdout ?? ''}${r.stderr ?? ''}`);
  return r.stdout?.toString() ?? '';
}

/** True when `cmd` is on the PATH. */
export function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * GNU time's path, installed from Debian when missing and we are root; undefined without it
 * (peak RSS then comes from polling /proc and CPU time is not known).
 */
export function findGnuTime(log) {
  if (existsSync('/usr/bin/time')) return '/usr/bin/time';
  if (process.getuid?.() === 0 && have('apt-get')) {
    log('installing GNU time (Debian package "time") for peak-memory and CPU figures');
    spawnSync('sh', ['-c', 'apt-get install -y -qq time >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq time >/dev/null)'], { stdio: 'inherit' });
    if (existsSync('/usr/bin/time')) return '/usr/bin/time';
  }
  log('GNU time not found: peak RSS comes from polling /proc/PID/status (VmHWM), CPU time is not measured');
  return undefined;
}

/**
 * Runs `cmd`; resolves wall seconds, peak RSS (KiB), CPU seconds (user + sys, NaN without GNU
 * time) and stdout. `stdoutPath` sends stdout to a file instead of keeping it.
 */
export function measure(cmd, cmdArgs, { gnuTime, timeFile, stdoutPath } = {}) {
  return new Promise((resolve, reject) => {
    const [file, argv] = gnuTime ? [gnuTime, ['-f', '%M %U %S', '-o', timeFile, cmd, ...cmdArgs]] : [cmd, cmdArgs];
    const out = stdoutPath === undefined ? 'pipe' : openSync(stdoutPath, 'w');
    let stdout = '';
    let stderr = '';
    let hwm = 0;
    const t0 = performance.now();
    const child = spawn(file, argv, { stdio: ['ignore', out, 'pipe'] });
    if (typeof out === 'number') closeSync(out);
    child.stdout?.on('data', (b) => (stdout += b));
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

/** The value at fraction `q` (0..1) of the sorted values, interpolated. */
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  return lo + 1 < s.length ? s[lo] + (s[lo + 1] - s[lo]) * (at - lo) : s[lo];
}

export const median = (xs) => quantile(xs, 0.5);

/**
 * Share of the last 10 s in which some task waited for a CPU (Linux pressure stall information,
 * /proc/pressure/cpu "some avg10", in %); undefined where the kernel has none. Other tenants of
 * a shared machine show here, and they make single runs swing.
 */
export function cpuPressure() {
  try {
    const m = /^some avg10=([\d.]+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Times the two sides of a case, `{ ours: [cmd, args], qemu: [cmd, args] }`, alternating them
 * `runs` times after one untimed warm-up each. `prepare(side)` runs before every run, untimed;
 * `after(side, result)` after it (may add fields); `verify()` once at the end (its fields join
 * the row). Returns the row of the case: medians, ratio, spread, CPU and peak memory.
 */
export async function compareTools(name, sides, { runs, limit = null, measureOptions = {}, log, prepare = () => {}, after = () => {}, verify } = {}) {
  log(`${name}: warm-up`);
  for (const key of ['ours', 'qemu']) {
    prepare(key);
    after(key, await measure(...sides[key], measureOptions));
  }
  const res = { ours: [], qemu: [] };
  const pressure = [];
  for (let i = 0; i < runs; i++) {
    pressure.push(cpuPressure());
    for (const key of i % 2 === 0 ? ['ours', 'qemu'] : ['qemu', 'ours']) {
      prepare(key);
      const r = await measure(...sides[key], measureOptions);
      after(key, r);
      res[key].push(r);
    }
    log(`${name}: run ${i + 1}/${runs}: ours ${res.ours.at(-1).seconds.toFixed(2)} s, qemu-img ${res.qemu.at(-1).seconds.toFixed(2)} s`);
  }
  pressure.push(cpuPressure());
  const seconds = (key) => res[key].map((r) => r.seconds);
  const cpu = (key) => res[key].map((r) => r.cpuSeconds);
  const row = {
    name,
    runs,
    oursSeconds: seconds('ours'),
    qemuSeconds: seconds('qemu'),
    oursMedian: median(seconds('ours')),
    qemuMedian: median(seconds('qemu')),
    ratio: median(seconds('ours')) / median(seconds('qemu')),
    // The middle half of the runs: where it is wide, the median moved with other load.
    oursQuartiles: [quantile(seconds('ours'), 0.25), quantile(seconds('ours'), 0.75)],
    qemuQuartiles: [quantile(seconds('qemu'), 0.25), quantile(seconds('qemu'), 0.75)],
    oursCpuSeconds: cpu('ours'),
    qemuCpuSeconds: cpu('qemu'),
    cpuRatio: median(cpu('ours')) / median(cpu('qemu')),
    cpuPressure: pressure.filter((p) => p !== undefined),
    loadAverage: os.loadavg(),
    oursPeakRssKiB: Math.max(...res.ours.map((r) => r.rssKiB)),
    qemuPeakRssKiB: Math.max(...res.qemu.map((r) => r.rssKiB)),
    limitRatio: limit,
  };
  if (res.ours[0]?.runSeconds !== undefined) {
    row.oursRunSeconds = res.ours.map((r) => r.runSeconds);
    row.qemuRunSeconds = res.qemu.map((r) => r.runSeconds);
    row.runRatio = median(row.oursRunSeconds) / median(row.qemuRunSeconds);
  }
  if (verify) Object.assign(row, verify());
  return row;
}

/**
 * The table both benchmarks print: one line per case, then its spread, CPU time and other
 * load; `extraLines(row)` adds a case's own lines. `okColumn` names the last column and
 * `ok(row)` fills it.
 */
export function formatTable({ title, results, rssLimitKiB, okColumn, ok, extraLines = () => [], footer }) {
  const mib = (kib) => (kib / 1024).toFixed(0);
  const s = (x) => x.toFixed(3);
  const lines = [title, '', `case        ours (s)  qemu-img (s)  ratio  limit  ours RSS (MiB)  qemu RSS (MiB)  ${okColumn}`];
  let busiest = 0;
  for (const r of results) {
    if (r.error || r.skipped) {
      lines.push(`${r.name.padEnd(10)}  ${r.error ? `error: ${r.error}` : `skipped: ${r.skipped}`}`);
      continue;
    }
    const withinTarget = (r.limitRatio === null || r.ratio <= r.limitRatio) && r.oursPeakRssKiB <= rssLimitKiB;
    const okValue = ok(r);
    lines.push(
      [
        r.name.padEnd(10),
        s(r.oursMedian).padStart(9),
        s(r.qemuMedian).padStart(13),
        r.ratio.toFixed(2).padStart(6),
        (r.limitRatio === null ? '-' : r.limitRatio.toFixed(1)).padStart(6),
        mib(r.oursPeakRssKiB).padStart(15),
        mib(r.qemuPeakRssKiB).padStart(15),
        (okValue === undefined ? '-' : String(okValue)).padStart(okColumn.length),
        withinTarget ? '' : '  <- over target',
      ].join(' '),
    );
    const pressure = r.cpuPressure.length > 0 ? `; cpu pressure ${Math.min(...r.cpuPressure).toFixed(0)}-${Math.max(...r.cpuPressure).toFixed(0)}%` : '';
    lines.push(`            middle half of runs: ours ${s(r.oursQuartiles[0])}-${s(r.oursQuartiles[1])} s, qemu-img ${s(r.qemuQuartiles[0])}-${s(r.qemuQuartiles[1])} s${pressure}`);
    if (Number.isFinite(r.cpuRatio)) {
      lines.push(`            CPU (user+sys): ours ${s(median(r.oursCpuSeconds))} s, qemu-img ${s(median(r.qemuCpuSeconds))} s, ratio ${r.cpuRatio.toFixed(2)}`);
    }
    lines.push(...extraLines(r));
    busiest = Math.max(busiest, ...r.cpuPressure);
  }
  lines.push('', footer);
  if (busiest >= 10) {
    lines.push(`note: other work was running on this machine (cpu pressure up to ${busiest.toFixed(0)}%); single runs swing, compare the medians of several runs`);
  }
  return lines.join('\n');
}

/** Regular files under the library directories, sorted, concatenated up to `bytes`. */
export function writeLibraryRaw(path, bytes, log) {
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
  // /usr/lib holds the first directory too: each file once.
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
