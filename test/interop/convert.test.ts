/**
 * Interop suite for `convert -O raw`: images made by qemu-img/qemu-io at test time are converted by
 * both tools with the same command line, and we require the same bytes, the same file size, the
 * same holes (sparse detection, -S), the same progress output and the same messages and exit codes.
 * Commands run in the image directory with relative names, as a user would type them.
 */
import assert from 'node:assert/strict';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  check,
  diffFiles,
  fileHoles,
  must,
  qcow2kit,
  qemuImg,
  qemuIoWrite,
  randomBytes,
  requireQemu,
  stackTraceLines,
  tempDir,
  writeMixedRawFile,
  writeRawFile,
  type RunResult,
} from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Our messages say "qcow2kit:" where qemu-img says "qemu-img:". */
function normalize(text: string): string {
  return text.replace(/^qcow2kit: /gm, 'qemu-img: ').replace(/'qcow2kit --help'/g, "'qemu-img --help'");
}

/** Same exit code, stdout and stderr (program name aside), and no stack trace. */
function assertSameResult(qemu: RunResult, ours: RunResult, what: string): void {
  assert.deepEqual(stackTraceLines(ours.stderr), [], `${what}: stack trace:\n${ours.stderr}`);
  assert.deepEqual(
    { code: ours.code, stdout: ours.stdout, stderr: normalize(ours.stderr) },
    { code: qemu.code, stdout: qemu.stdout, stderr: qemu.stderr },
    what,
  );
}

let seq = 0;

/**
 * Runs `convert ARGS... OUT` with both tools into separate outputs and requires the same result,
 * the same bytes and the same allocation (holes) of the outputs. `prepare` may create the output
 * first (for -n).
 */
async function sameConvert(
  dir: string,
  args: readonly string[],
  opts: { prepare?: (out: string) => Promise<void>; sameHoles?: boolean } = {},
): Promise<void> {
  const n = seq++;
  const qOut = `conv-${n}.qemu.raw`;
  const kOut = `conv-${n}.ours.raw`;
  if (opts.prepare) {
    await opts.prepare(join(dir, qOut));
    await opts.prepare(join(dir, kOut));
  }
  const qemu = await qemuImg(['convert', ...args, qOut], { cwd: dir });
  const ours = await qcow2kit(['convert', ...args, kOut], { cwd: dir });
  assertSameResult(qemu, ours, `convert ${args.join(' ')}`);
  check(qemu);
  const diff = await diffFiles(join(dir, qOut), join(dir, kOut));
  assert.equal(diff, undefined, `convert ${args.join(' ')}: ${diff ?? ''}`);
  if (opts.sameHoles !== false) {
    // Both files live on the same file system, so equal sparse semantics give equal holes.
    assert.deepEqual(await fileHoles(join(dir, kOut)), await fileHoles(join(dir, qOut)), `holes of convert ${args.join(' ')}`);
  }
  await Promise.all([rm(join(dir, qOut)), rm(join(dir, kOut))]);
}

/** A qcow2 image with every kind of cluster qemu-io can make, in a fresh directory. */
async function mixedImage(t: TestContext, opts: string[] = []): Promise<string> {
  const dir = await tempDir(t);
  await must('qemu-img', ['create', '-f', 'qcow2', ...opts, 'img.qcow2', '48M'], { cwd: dir });
  await qemuIoWrite(join(dir, 'img.qcow2'), [
    'write -P 0xab 0 1M',
    'write -P 0 2M 1M', // data clusters holding zeros: sparse detection makes them holes
    'write -z 4M 1M', // zero clusters
    'write -P 0x11 6M 3M',
    'write -P 0x22 6295552 512', // a single sector inside data
    'write -P 0 7348224 6k', // zero run inside data, longer than 4k
    'write -P 0 8396800 2k', // shorter than 4k: stays data
    'write -P 0x33 12582400 1k', // crosses a cluster boundary
    'write -P 0x44 20974592 5k',
    'discard 6M 64k',
    'write -P 0x55 47M 1M', // last cluster
  ]);
  return dir;
}

describe('convert -O raw matches qemu-img', () => {
  test('mixed data, zero, discarded and unallocated clusters: same bytes and same holes', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    await sameConvert(dir, ['-O', 'raw', 'img.qcow2']);
    await sameConvert(dir, ['img.qcow2']); // -O raw is the default
  });

  test('an image starting with a hole (qemu allocates the first block of a new raw file)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await must('qemu-img', ['create', '-f', 'qcow2', 'img.qcow2', '16M'], { cwd: dir });
    await qemuIoWrite(join(dir, 'img.qcow2'), ['write -P 0x11 6M 3M', 'write -P 0 7348224 6k']);
    await sameConvert(dir, ['img.qcow2']);
    await must('qemu-img', ['create', '-f', 'qcow2', 'tiny.qcow2', '1536'], { cwd: dir });
    await sameConvert(dir, ['tiny.qcow2']);
    await must('qemu-img', ['create', '-f', 'qcow2', 'empty.qcow2', '0'], { cwd: dir });
    await sameConvert(dir, ['empty.qcow2']);
  });

  test('small clusters and extended L2 (subclusters)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t, ['-o', 'cluster_size=4k']);
    await sameConvert(dir, ['-O', 'raw', 'img.qcow2']);
    const dir2 = await mixedImage(t, ['-o', 'extended_l2=on,cluster_size=128k']);
    await sameConvert(dir2, ['-O', 'raw', 'img.qcow2']);
  });

  test('-S sizes: 0 (fully allocated), 512, 1k, 64k, 16M', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    for (const s of ['0', '512', '1k', '3k', '64k', '16M']) await sameConvert(dir, ['-S', s, 'img.qcow2']);
  });

  test('-m and -W do not change the result', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    await sameConvert(dir, ['-m', '1', 'img.qcow2']);
    await sameConvert(dir, ['-m', '16', '-W', 'img.qcow2']);
  });

  test('compressed clusters (zlib and zstd)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await writeMixedRawFile(join(dir, 'mixed.raw'), 24 * MiB, 7);
    await must('qemu-img', ['convert', '-c', '-O', 'qcow2', 'mixed.raw', 'z.qcow2'], { cwd: dir });
    await must('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'mixed.raw', 'zs.qcow2'], { cwd: dir });
    await sameConvert(dir, ['z.qcow2']);
    await sameConvert(dir, ['zs.qcow2']);
  });

  test('backing chains are flattened, including a backing file shorter than the overlay', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await must('qemu-img', ['create', '-f', 'qcow2', 'base.qcow2', '16M'], { cwd: dir });
    await qemuIoWrite(join(dir, 'base.qcow2'), ['write -P 0x61 0 8M', 'write -P 0x62 12M 4M']);
    await must('qemu-img', ['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2', '24M'], { cwd: dir });
    await qemuIoWrite(join(dir, 'mid.qcow2'), ['write -P 0x71 1M 1M', 'write -z 3M 1M', 'write -P 0x72 20M 1M']);
    await must('qemu-img', ['create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2', '24M'], { cwd: dir });
    await qemuIoWrite(join(dir, 'top.qcow2'), ['write -P 0x81 5M 64k', 'discard 1M 64k']);
    await sameConvert(dir, ['top.qcow2']);
    await sameConvert(dir, ['mid.qcow2']);
  });

  test('several sources are concatenated, odd-sized raw files padded to whole sectors', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    await writeRawFile(join(dir, 'odd.raw'), 1000, [{ offset: 0, data: randomBytes(3, 1000) }]);
    await writeRawFile(join(dir, 'sparse.raw'), 5 * MiB, [{ offset: 3 * MiB, data: randomBytes(4, 4096) }], { sparse: true });
    await sameConvert(dir, ['-f', 'raw', 'odd.raw', 'odd.raw', 'sparse.raw']);
    await sameConvert(dir, ['img.qcow2', 'img.qcow2']);
  });

  test('-n into an existing larger file keeps its size and tail', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    const garbage = randomBytes(9, 50 * MiB);
    // Holes differ with the fs's punch-hole support (qemu punches, we may write zeros): bytes only.
    await sameConvert(dir, ['-n', 'img.qcow2'], { prepare: (out) => writeRawFile(out, garbage.length, [{ offset: 0, data: garbage }]), sameHoles: false });
    await sameConvert(dir, ['-n', '--target-is-zero', 'img.qcow2'], { prepare: (out) => writeRawFile(out, 48 * MiB, [], { sparse: true }) });
  });

  test('an existing output file is truncated first', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    const junk = randomBytes(10, 60 * MiB);
    await sameConvert(dir, ['img.qcow2'], { prepare: (out) => writeRawFile(out, junk.length, [{ offset: 0, data: junk }]) });
  });

  test('-l reads an internal snapshot, by name, id or snapshot.id/snapshot.name', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    await must('qemu-img', ['snapshot', '-c', 'before', 'img.qcow2'], { cwd: dir });
    await qemuIoWrite(join(dir, 'img.qcow2'), ['write -P 0x99 0 5M', 'discard 20M 1M']);
    await must('qemu-img', ['snapshot', '-c', 'after', 'img.qcow2'], { cwd: dir });
    for (const l of ['before', '1', 'after', '2', 'snapshot.name=before', 'snapshot.id=2', 'snapshot.id=1,snapshot.name=before']) {
      await sameConvert(dir, ['-l', l, 'img.qcow2']);
    }
  });

  test('-p prints the same progress lines (data-weighted, 1% steps)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    await sameConvert(dir, ['-p', 'img.qcow2']);
    await sameConvert(dir, ['-p', '-S', '0', 'img.qcow2']);
    await sameConvert(dir, ['-p', '-q', 'img.qcow2']);
    // Many 2 MiB chunks: progress crosses many 1% steps.
    await must('qemu-img', ['create', '-f', 'qcow2', 'big.qcow2', '256M'], { cwd: dir });
    await qemuIoWrite(join(dir, 'big.qcow2'), ['write -P 1 0 100M', 'write -P 2 130M 3M', 'write -P 3 200M 17M']);
    await sameConvert(dir, ['-p', 'big.qcow2']);
  });
});

describe('convert errors match qemu-img', () => {
  const cases: readonly (readonly string[])[] = [
    [],
    ['img.qcow2'],
    ['-O', 'qcow3', 'img.qcow2', 'x.raw'],
    ['-S', '100', 'img.qcow2', 'x.raw'],
    ['-S', '17M', 'img.qcow2', 'x.raw'],
    ['-S', 'abc', 'img.qcow2', 'x.raw'],
    ['-m', '0', 'img.qcow2', 'x.raw'],
    ['-m', '17', 'img.qcow2', 'x.raw'],
    ['-m', '08', 'img.qcow2', 'x.raw'],
    ['-Z', 'img.qcow2', 'x.raw'],
    ['-f'],
    ['missing.qcow2', 'x.raw'],
    ['-f', 'qcow2', 'plain.raw', 'x.raw'],
    ['-f', 'bogus', 'img.qcow2', 'x.raw'],
    ['-n', 'img.qcow2', 'missing.raw'],
    ['-n', 'img.qcow2', 'plain.raw'],
    ['-l', 'nosuch', 'img.qcow2', 'x.raw'],
    ['-l', 'snapshot.name=nosuch', 'img.qcow2', 'x.raw'],
    ['-l', 'snapshot.id=1,snapshot.name=other', 'img.qcow2', 'x.raw'],
    ['-l', 'snapshot.foo=bar', 'img.qcow2', 'x.raw'],
    ['-l', 'snap', 'img.qcow2', 'img.qcow2', 'x.raw'],
    ['-l', 'snap', 'plain.raw', 'x.raw'],
    ['-t', 'bogus', 'img.qcow2', 'x.raw'],
    ['-T', 'bogus', 'img.qcow2', 'x.raw'],
    ['--target-is-zero', 'img.qcow2', 'x.raw'],
    ['-C', '-S', '4k', 'img.qcow2', 'x.raw'],
    ['-c', 'img.qcow2', 'x.raw'],
    ['-B', 'base', 'img.qcow2', 'x.raw'],
    ['img.qcow2', 'img.qcow2'],
    ['-n', 'img.qcow2', 'img.qcow2'],
    ['img.qcow2', 'nodir/x.raw'],
    ['img.qcow2', 'adir'],
    ['-p', 'missing.qcow2', 'x.raw'],
  ];

  test('messages and exit codes', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await must('qemu-img', ['create', '-f', 'qcow2', 'img.qcow2', '4M'], { cwd: dir });
    await qemuIoWrite(join(dir, 'img.qcow2'), ['write -P 7 0 1M']);
    await must('qemu-img', ['snapshot', '-c', 'snap', 'img.qcow2'], { cwd: dir });
    await writeRawFile(join(dir, 'plain.raw'), MiB, [{ offset: 0, data: randomBytes(5, MiB) }]);
    await mkdir(join(dir, 'adir'));
    for (const args of cases) {
      const qemu = await qemuImg(['convert', ...args], { cwd: dir });
      await rm(join(dir, 'x.raw'), { force: true });
      const ours = await qcow2kit(['convert', ...args], { cwd: dir });
      await rm(join(dir, 'x.raw'), { force: true });
      assertSameResult(qemu, ours, `convert ${args.join(' ')}`);
    }
    // The failed conversions left the sources alone.
    assert.equal((await stat(join(dir, 'plain.raw'))).size, MiB);
    check(await qemuImg(['check', 'img.qcow2'], { cwd: dir }));
  });
});

/**
 * A raw file shaped like a disk of programs: short data runs at sector (not cluster) offsets,
 * with zero gaps shorter and longer than `-S`, so most clusters are only partly data.
 */
async function scatteredRawFile(path: string, size: number, seed: number): Promise<void> {
  const regions: { offset: number; data: Uint8Array }[] = [];
  let state = seed;
  const next = (n: number): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state % n;
  };
  for (let off = 0; off < size;) {
    const len = Math.min(size - off, (1 + next(40)) * 512);
    regions.push({ offset: off, data: randomBytes(seed + off, len) });
    // Gaps: sub-sector-run (1 KiB), around -S (3-5 KiB), a cluster or more.
    off += len + [1024, 3072, 4096, 5120, 70 * 1024, 300 * 1024][next(6)]!;
  }
  await writeRawFile(path, size, regions);
}

describe('convert -O qcow2 matches qemu-img byte for byte', () => {
  test('qcow2 source: cluster sizes, subclusters, compat 0.10, refcount widths', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await mixedImage(t);
    for (const o of ['', 'cluster_size=4096', 'cluster_size=512', 'cluster_size=2M', 'extended_l2=on', 'compat=0.10', 'refcount_bits=1', 'preallocation=metadata']) {
      await sameConvert(dir, ['-O', 'qcow2', ...(o === '' ? [] : ['-o', o]), 'img.qcow2']);
    }
  });

  test('raw source with partly filled clusters, every -S', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await scatteredRawFile(join(dir, 'src.raw'), 12 * MiB + 1536, 21);
    for (const s of ['512', '4k', '16k', '64k', '1M']) await sameConvert(dir, ['-O', 'qcow2', '-S', s, '-f', 'raw', 'src.raw']);
    for (const o of ['cluster_size=8192', 'cluster_size=1M', 'extended_l2=on,cluster_size=128k']) {
      await sameConvert(dir, ['-O', 'qcow2', '-o', o, '-f', 'raw', 'src.raw']);
    }
    await sameConvert(dir, ['-O', 'qcow2', '-S', '0', '-f', 'raw', 'src.raw']);
    // Compressed bytes come from a different zlib build: same content and a clean image.
    check(await qcow2kit(['convert', '-O', 'qcow2', '-c', '-f', 'raw', 'src.raw', 'c.qcow2'], { cwd: dir }));
    await must('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', 'src.raw', 'c.qcow2'], { cwd: dir });
    await must('qemu-img', ['check', 'c.qcow2'], { cwd: dir });
  });
});
