#!/usr/bin/env node
// Benchmark: `check` and `check -r all` of qcow2kit against qemu-img on hostile images
// (issue #4: a check must never hang, whatever the image claims).
//
//   node bench/check-bench.mjs [--quick] [--runs N] [--only NAME[,NAME...]] [--keep]
//
// Builds its images in bench/out/check/ with a seeded generator (no qemu needed to build):
//   l1-512     64 GiB, 512 B clusters: a 2M-entry (16 MiB) L1 table, 4% of whose entries point
//              at random clusters of the file (the L1 table itself included), L2 "tables" full of
//              random entries, a refcount table with bogus, unaligned and past-EOF refblocks
//   l1-64k     4 TiB, 64 KiB clusters: 5% of 8192 L1 entries at random clusters of a 96 MiB file
//              whose clusters are random L2 entries, the same kind of refcount table
//   shared     64 GiB, 512 B clusters, repairable: 125k L1 entries sharing 16384 L2 tables whose
//              entries share data clusters (COPIED flags wrong everywhere), some refcount table
//              entries pointing at data clusters (the refcount structure must be rebuilt)
//   quiet      64 GiB, 512 B clusters: 512k of the 2M L1 entries share 4096 empty L2 tables
//              whose refcounts are right: nothing to report but 512k L2 tables to read
//              (qemu-img needs minutes on it: its checks are slow here, not ours)
//   reftable   64 GiB, 512 B clusters: a sane L1 but a 1 MiB refcount table (131072 entries)
//              mostly pointing at random clusters (shared, unaligned, past EOF)
// Each tool runs on its own fresh copy; check -r all is followed by `qemu-img check` on both
// results. Reports the median wall time, ratio ours/qemu-img and whether exit codes and
// stdout agree. Writes bench/out/check/results.json.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, openSync, closeSync, writeSync, writeFileSync, rmSync } from 'node:fs';
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
const runs = Number(argValue('--runs') ?? (quick ? 1 : 3));
const only = argValue('--only')?.split(',');
const outDir = join(repo, 'bench', 'out', 'check', quick ? 'quick' : '');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** xorshift32: reproducible images. */
function prng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s;
  };
}

/**
 * A qcow2 v3 image in memory: header, refcount table, refcount blocks, L1 table, then `fill`
 * bytes of random L2-like entries. Hostility knobs: `bogusL1` (share of L1 entries pointing at
 * random clusters), `bogusReftable` (share of refcount table entries replaced by bogus ones).
 */
function hostile({ clusterBits, size, fileBytes, bogusL1, bogusReftable, reftableClusters, seed, l2Clusters, quiet = false }) {
  const rnd = prng(seed);
  const cs = 2 ** clusterBits;
  const l2Entries = cs / 8;
  const l1Size = Math.ceil(size / (cs * l2Entries));
  const l1Bytes = Math.ceil((l1Size * 8) / cs) * cs;
  const refcountOrder = 4;
  const perBlock = (cs * 8) >> refcountOrder;
  const nClusters = fileBytes / cs;
  const nBlocks = Math.ceil(nClusters / perBlock);
  const rtClusters = Math.max(reftableClusters, Math.ceil((nBlocks * 8) / cs));
  // Layout: 0 header, 1.. reftable, then refblocks, then L1, then the random region.
  const reftableAt = cs;
  const refblocksAt = reftableAt + rtClusters * cs;
  const l1At = refblocksAt + nBlocks * cs;
  const randomAt = l1At + l1Bytes;
  if (randomAt >= fileBytes) throw new Error('file too small for the layout');
  const buf = new Uint8Array(fileBytes);
  const v = new DataView(buf.buffer);
  const u64 = (at, hi, lo) => { v.setUint32(at, hi >>> 0); v.setUint32(at + 4, lo >>> 0); };
  const randomCluster = () => (rnd() % nClusters) * cs;
  // Header.
  v.setUint32(0, 0x514649fb); v.setUint32(4, 3);
  v.setUint32(20, clusterBits);
  u64(24, Math.floor(size / 2 ** 32), size >>> 0);
  v.setUint32(36, l1Size);
  u64(40, 0, l1At);
  u64(48, 0, reftableAt);
  v.setUint32(56, rtClusters);
  v.setUint32(96, refcountOrder);
  v.setUint32(100, 104);
  // Refcount blocks: every cluster of the file has refcount 1 (the random region leaks).
  for (let c = 0; c < nClusters; c++) v.setUint16(refblocksAt + c * 2, 1);
  for (let b = 0; b < nBlocks; b++) u64(reftableAt + b * 8, 0, refblocksAt + b * cs);
  const rtEntries = (rtClusters * cs) / 8;
  for (let i = 0; i < rtEntries; i++) {
    if (rnd() / 2 ** 32 >= bogusReftable) continue;
    const kind = rnd() % 8;
    if (kind < 5) u64(reftableAt + i * 8, 0, randomCluster()); // shared with anything
    else if (kind === 5) u64(reftableAt + i * 8, 0, randomCluster() + 512 * (1 + (rnd() % 3)) % cs); // unaligned
    else u64(reftableAt + i * 8, 0, fileBytes + (rnd() % 4096) * cs); // past the end
  }
  // Repairable variant: L2 tables only in the first `l2Clusters` clusters of the random region,
  // data only after them; nothing overlaps metadata, everything is shared and flagged wrong.
  const firstData = randomAt / cs + (l2Clusters ?? 0);
  const pick = l2Clusters === undefined ? randomCluster : () => (randomAt / cs + (rnd() % l2Clusters)) * cs;
  const pickData = l2Clusters === undefined ? randomCluster : () => (firstData + (rnd() % (nClusters - firstData))) * cs;
  if (l2Clusters !== undefined) {
    for (let i = 0; i < rtEntries; i++) {
      const e = v.getUint32(reftableAt + i * 8 + 4);
      if (e >= refblocksAt + nBlocks * cs || (e !== 0 && e < refblocksAt)) u64(reftableAt + i * 8, 0, pickData());
    }
  }
  // L1: random clusters of the file (overlapping the L1 table, the refcount structure, ...).
  for (let i = 0; i < l1Size; i++) {
    if (rnd() / 2 ** 32 >= bogusL1) continue;
    const l2 = pick();
    u64(l1At + i * 8, !quiet && (rnd() & 1) ? 0x80000000 : 0, l2);
    // Quiet: the refcounts are right, so a plain check only walks (and finds nothing).
    if (quiet) v.setUint16(refblocksAt + (l2 / cs) * 2, v.getUint16(refblocksAt + (l2 / cs) * 2) + 1);
  }
  if (quiet) {
    for (let c = 0; c < l2Clusters; c++) v.setUint16(refblocksAt + (randomAt / cs + c) * 2, v.getUint16(refblocksAt + (randomAt / cs + c) * 2) - 1);
    return buf;
  }
  // Random region: L2-like entries, half empty, most of the rest plausible data clusters.
  for (let at = randomAt; at < fileBytes; at += 8) {
    if (l2Clusters !== undefined) {
      if (at >= firstData * cs) break;
      if (rnd() % 4 === 0) u64(at, (rnd() & 1) ? 0x80000000 : 0, pickData());
      continue;
    }
    const r = rnd() % 16;
    if (r < 8) continue;
    if (r < 14) u64(at, 0x80000000, randomCluster());
    else if (r === 14) u64(at, 0x40000000 | (rnd() & 0x3fffff), rnd()); // compressed
    else u64(at, rnd() & 0x3f000000, rnd() & ~0x1ff); // reserved bits / anything
  }
  return buf;
}

const IMAGES = {
  'l1-512': () => hostile({ clusterBits: 9, size: (quick ? 4 : 64) * GiB, fileBytes: (quick ? 8 : 32) * MiB, bogusL1: quick ? 0.5 : 0.04, bogusReftable: 0.3, reftableClusters: 8, seed: 1 }),
  'l1-64k': () => hostile({ clusterBits: 16, size: (quick ? 256 : 4096) * GiB, fileBytes: (quick ? 16 : 96) * MiB, bogusL1: quick ? 0.6 : 0.05, bogusReftable: 0.3, reftableClusters: 1, seed: 2 }),
  shared: () => hostile({ clusterBits: 9, size: (quick ? 4 : 64) * GiB, fileBytes: (quick ? 8 : 48) * MiB, bogusL1: quick ? 0.9 : 0.06, bogusReftable: 0.05, reftableClusters: 8, seed: 4, l2Clusters: quick ? 2048 : 16384 }),
  quiet: () => hostile({ clusterBits: 9, size: (quick ? 4 : 64) * GiB, fileBytes: (quick ? 8 : 32) * MiB, bogusL1: quick ? 1 : 0.25, bogusReftable: 0, reftableClusters: 8, seed: 5, l2Clusters: 4096, quiet: true }),
  reftable: () => hostile({ clusterBits: 9, size: (quick ? 4 : 64) * GiB, fileBytes: (quick ? 8 : 32) * MiB, bogusL1: 0.02, bogusReftable: 0.9, reftableClusters: quick ? 256 : 2048, seed: 3 }),
};

function writeImage(path, bytes) {
  const fd = openSync(path, 'w');
  try { writeSync(fd, bytes); } finally { closeSync(fd); }
}

/** Run in `dir` on `img.qcow2`, stdout and stderr to files there (outputs can be gigabytes). */
function timed(dir, cmd, argv) {
  const out = openSync(join(dir, 'out'), 'w');
  const err = openSync(join(dir, 'err'), 'w');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, argv, { cwd: dir, stdio: ['ignore', out, err], env: { ...process.env, LC_ALL: 'C', TZ: 'UTC' } });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  closeSync(out);
  closeSync(err);
  return { ms, code: r.status };
}

/** Same stdout and stderr, the program name in messages aside. */
function sameOutput(qDir, kDir) {
  const norm = (f) => `<(sed 's/^qcow2kit: /qemu-img: /' '${f}')`;
  const script = `cmp -s '${join(qDir, 'out')}' '${join(kDir, 'out')}' && cmp -s '${join(qDir, 'err')}' ${norm(join(kDir, 'err'))}`;
  return spawnSync('bash', ['-c', script]).status === 0;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

mkdirSync(outDir, { recursive: true });
const results = [];
for (const [name, build] of Object.entries(IMAGES)) {
  if (only !== undefined && !only.includes(name)) continue;
  // Bump the suffix when the generator or the parameters change: images are kept between runs.
  const src = join(outDir, `${name}-v2.qcow2`);
  if (!existsSync(src)) writeImage(src, build());
  for (const mode of ['check', 'check -r all']) {
    const extra = mode === 'check' ? [] : ['-r', 'all'];
    const times = { qemu: [], ours: [] };
    let agree = true;
    let after = '';
    for (let r = 0; r < runs; r++) {
      const qDir = join(outDir, 'q');
      const kDir = join(outDir, 'k');
      mkdirSync(qDir, { recursive: true });
      mkdirSync(kDir, { recursive: true });
      const q = join(qDir, 'img.qcow2');
      const k = join(kDir, 'img.qcow2');
      copyFileSync(src, q);
      copyFileSync(src, k);
      const qr = timed(qDir, 'qemu-img', ['check', ...extra, 'img.qcow2']);
      const kr = timed(kDir, cli, ['check', ...extra, 'img.qcow2']);
      times.qemu.push(qr.ms);
      times.ours.push(kr.ms);
      agree &&= qr.code === kr.code && sameOutput(qDir, kDir);
      if (extra.length > 0) {
        const aq = spawnSync('qemu-img', ['check', q], { stdio: 'ignore' }).status;
        const ak = spawnSync('qemu-img', ['check', k], { stdio: 'ignore' }).status;
        after = `qemu-img check after: qemu ${aq}, ours ${ak}`;
        agree &&= aq === ak;
      }
      if (r === runs - 1) {
        results.push({ image: name, mode, qemuMs: Math.round(median(times.qemu)), oursMs: Math.round(median(times.ours)), exit: `${qr.code}/${kr.code}`, agree, after });
      }
      if (!args.includes('--keep')) {
        rmSync(qDir, { recursive: true });
        rmSync(kDir, { recursive: true });
      }
    }
    const last = results[results.length - 1];
    const ratio = (last.oursMs / last.qemuMs).toFixed(2);
    console.log(`${name.padEnd(9)} ${mode.padEnd(13)} qemu-img ${String(last.qemuMs).padStart(6)} ms  qcow2kit ${String(last.oursMs).padStart(6)} ms  x${ratio}  exit ${last.exit}  ${last.agree ? 'same output' : 'OUTPUT DIFFERS'}  ${last.after}`);
    last.ratio = Number(ratio);
  }
}
writeFileSync(join(outDir, 'results.json'), JSON.stringify(results, null, 2));
