/**
 * Interop suite for the read path (issue #2): every image here is made by qemu-img/qemu-io at test
 * time, then qcow2kit must agree with QEMU on it:
 *   (a) `convert -O raw` output is byte-identical to `qemu-img convert -O raw`;
 *   (b) `info --output=json` deep-equals qemu-img's, filename fields aside;
 *   (c) `map --output=json` deep-equals qemu-img's;
 * plus snapshot content and listing, qemu-io style reads, `compare`, and clean one-line errors on
 * images QEMU itself refuses. All commands run with the image's directory as working directory
 * and relative names, as a user would type them.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  check,
  createLuksQcow2,
  diffFiles,
  must,
  parseJson,
  patchFile,
  qcow2kit,
  qemuImg,
  qemuIo,
  qemuIoWrite,
  randomBytes,
  readAt,
  requireQemu,
  stackTraceLines,
  tempDir,
  withoutFilenames,
  withoutTimings,
  writeMixedRawFile,
  writeRawFile,
  type RunResult,
} from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** What to compare for one image, beyond convert/info/map which always run. */
interface Checks {
  /** Snapshots (name or id) whose content `convert -l` must reproduce. */
  snapshots?: readonly string[];
  /** Compare `snapshot -l` output. */
  snapshotList?: boolean;
  /** Also compare `info --backing-chain --output=json`. */
  backingChain?: boolean;
  /** Extra `map` ranges to compare: [start, length]. */
  mapRanges?: ReadonlyArray<readonly [number, number]>;
  /** qemu-io commands whose first output line (and exit code) `qcow2kit io -r -c` must match. */
  ioFirstLine?: readonly string[];
  /** qemu-io commands whose whole output, timing lines aside, must match. */
  ioFull?: readonly string[];
}

/** Runs the same qemu-img command line through both tools in `dir`. */
async function both(dir: string, args: readonly string[]): Promise<{ qemu: RunResult; ours: RunResult }> {
  const qemu = await qemuImg(args, { cwd: dir });
  const ours = await qcow2kit(args, { cwd: dir });
  return { qemu, ours };
}

let outputSeq = 0;

/** (a): `convert -O raw [extra] image` through both tools gives byte-identical files. */
async function sameConvert(dir: string, image: string, extra: readonly string[] = []): Promise<void> {
  const n = outputSeq++;
  const qOut = `out-${n}.qemu.raw`;
  const kOut = `out-${n}.ours.raw`;
  check(await qemuImg(['convert', '-O', 'raw', ...extra, image, qOut], { cwd: dir }));
  check(await qcow2kit(['convert', '-O', 'raw', ...extra, image, kOut], { cwd: dir }));
  const diff = await diffFiles(join(dir, qOut), join(dir, kOut));
  assert.equal(diff, undefined, `convert -O raw ${extra.join(' ')} ${image}: ${diff ?? ''}`);
  await Promise.all([rm(join(dir, qOut)), rm(join(dir, kOut))]);
}

/** (b) and (c): both tools print the same JSON (filename fields aside). */
async function sameJson(dir: string, args: readonly string[]): Promise<void> {
  const { qemu, ours } = await both(dir, args);
  check(qemu);
  check(ours);
  const what = `qcow2kit ${args.join(' ')}`;
  const q = withoutFilenames(parseJson(qemu.stdout, `qemu-img ${args.join(' ')}`));
  const k = withoutFilenames(parseJson(ours.stdout, what));
  assert.deepEqual(k, q, `${what} differs from qemu-img`);
}

/** Same stdout and exit code from `qemu-io -r ARGS` and `qcow2kit io -r ARGS`. */
async function sameIo(dir: string, image: string, cmd: string, firstLineOnly: boolean): Promise<void> {
  const qemu = await qemuIo(['-r', '-c', cmd, image], { cwd: dir });
  const ours = await qcow2kit(['io', '-r', '-c', cmd, image], { cwd: dir });
  const pick = (r: RunResult): string[] => {
    const lines = withoutTimings(r.stdout);
    return firstLineOnly ? lines.slice(0, 1) : lines;
  };
  assert.ok(pick(qemu).length > 0, `qemu-io printed nothing for ${cmd}: ${qemu.stderr}`);
  assert.deepEqual(pick(ours), pick(qemu), `io -c '${cmd}' output (stderr: ${ours.stderr.trim()})`);
  assert.equal(ours.code, qemu.code, `io -c '${cmd}' exit code (stderr: ${ours.stderr.trim()})`);
}

/** Runs every comparison for one image as subtests of `t`. */
async function sameAsQemu(t: TestContext, dir: string, image: string, c: Checks = {}): Promise<void> {
  await t.test('convert -O raw', () => sameConvert(dir, image));
  await t.test('info --output=json', () => sameJson(dir, ['info', '--output=json', image]));
  await t.test('map --output=json', () => sameJson(dir, ['map', '--output=json', image]));
  if (c.backingChain === true) {
    await t.test('info --backing-chain --output=json', () =>
      sameJson(dir, ['info', '--backing-chain', '--output=json', image]),
    );
  }
  for (const [start, len] of c.mapRanges ?? []) {
    await t.test(`map --start-offset ${start} --max-length ${len}`, () =>
      sameJson(dir, ['map', '--output=json', '--start-offset', String(start), '--max-length', String(len), image]),
    );
  }
  for (const snap of c.snapshots ?? []) {
    await t.test(`convert -l ${snap}`, () => sameConvert(dir, image, ['-l', snap]));
  }
  if (c.snapshotList === true) {
    await t.test('snapshot -l', async () => {
      const { qemu, ours } = await both(dir, ['snapshot', '-l', image]);
      check(qemu);
      check(ours);
      assert.equal(ours.stdout, qemu.stdout);
    });
  }
  for (const cmd of c.ioFirstLine ?? []) {
    await t.test(`io -c '${cmd}'`, () => sameIo(dir, image, cmd, true));
  }
  for (const cmd of c.ioFull ?? []) {
    await t.test(`io -c '${cmd}' (full output)`, () => sameIo(dir, image, cmd, false));
  }
}

/** `qemu-img create -f qcow2 [-o opts] [-b backing -F fmt] name size`. */
async function create(
  dir: string,
  name: string,
  size: number | string,
  opts: { o?: string; backing?: string; backingFmt?: string } = {},
): Promise<string> {
  const args = ['create', '-q', '-f', 'qcow2'];
  if (opts.o !== undefined) args.push('-o', opts.o);
  if (opts.backing !== undefined) args.push('-b', opts.backing, '-F', opts.backingFmt ?? 'qcow2');
  args.push(name, String(size));
  await must('qemu-img', args, { cwd: dir });
  return name;
}

async function io(dir: string, image: string, cmds: readonly string[]): Promise<void> {
  await qemuIoWrite(image, cmds, { cwd: dir });
}

/** A typical mix of writes: patterns, an unaligned write, zero writes, a discard, the last bytes. */
function mixedWrites(size: number, cluster: number): string[] {
  return [
    `write -P 0x11 0 ${cluster}`,
    `write -P 0x22 ${cluster + 1536} 10k`,
    `write -P 0x33 ${4 * cluster} ${4 * cluster}`,
    `write -z ${5 * cluster} ${cluster}`,
    `discard ${6 * cluster} ${cluster}`,
    `write -z ${10 * cluster} ${2 * cluster}`,
    `write -P 0x44 ${size - 1024} 1024`,
  ];
}

/** qcow2 image with random content copied from a raw file, then qemu-io writes on top. */
async function fromRaw(dir: string, name: string, size: number, seed: number, o: string): Promise<string> {
  const raw = `${name}.src.raw`;
  await writeRawFile(join(dir, raw), size, [
    { offset: 0, data: randomBytes(seed, Math.min(size, 300 * KiB)) },
    { offset: Math.floor(size / 2), data: randomBytes(seed + 1, Math.min(size / 4, 200 * KiB)) },
  ]);
  await must('qemu-img', ['convert', '-O', 'qcow2', '-o', o, raw, name], { cwd: dir });
  await rm(join(dir, raw));
  return name;
}

describe('read path: qcow2kit matches qemu-img on images QEMU writes', () => {
  test('v3 header, 64 KiB clusters: data, zero clusters, discard', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'v3.qcow2', 4 * MiB);
    await io(dir, img, mixedWrites(4 * MiB, 64 * KiB));
    await sameAsQemu(t, dir, img, {
      mapRanges: [[65536, 300000], [1000, 1]],
      ioFirstLine: ['read -P 0x11 0 64k', 'read -P 0x12 0 64k', 'read -P 0x33 256k 256k', 'read -P 0 320k 64k'],
      ioFull: ['read -v 66000 100', 'map', 'alloc 0 4M', 'alloc 64k 64k'],
    });
  });

  test('v2 header (compat=0.10): data, zero writes, discard, snapshots', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'v2.qcow2', 4 * MiB, { o: 'compat=0.10' });
    await io(dir, img, mixedWrites(4 * MiB, 64 * KiB));
    await must('qemu-img', ['snapshot', '-c', 'first', img], { cwd: dir });
    await io(dir, img, ['write -P 0x55 0 100k', 'write -z 256k 64k']);
    await sameAsQemu(t, dir, img, {
      snapshots: ['first', '1'],
      snapshotList: true,
      ioFirstLine: ['read -P 0x55 0 100k'],
    });
  });

  for (const cluster of [512, 4 * KiB, 64 * KiB, 2 * MiB]) {
    test(`cluster size ${cluster}: random data, patterns, zeros`, async (t) => {
      if (!requireQemu(t)) return;
      const dir = await tempDir(t);
      const size = Math.max(8 * MiB, 16 * cluster);
      const img = await fromRaw(dir, `cs${cluster}.qcow2`, size, cluster, `cluster_size=${cluster}`);
      await io(dir, img, mixedWrites(size, cluster));
      await sameAsQemu(t, dir, img, { ioFirstLine: [`read -P 0x11 0 ${cluster}`] });
    });
  }

  test('odd virtual size: 1000000-byte qcow2', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'odd.qcow2', 1000000);
    await io(dir, img, ['write -P 0x61 0 4k', 'write -P 0x62 999000 1000']);
    await sameAsQemu(t, dir, img);
  });

  test('odd virtual size: 1000000-byte raw image, and as a backing file', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await writeRawFile(join(dir, 'odd.raw'), 1000000, [{ offset: 0, data: randomBytes(7, 1000000) }]);
    await t.test('raw image', (t2) => sameAsQemu(t2, dir, 'odd.raw'));
    const img = await create(dir, 'over-odd.qcow2', 2 * MiB, { backing: 'odd.raw', backingFmt: 'raw' });
    await io(dir, img, ['write -P 0x07 960k 128k', 'write -P 0x08 1500k 4k']);
    await t.test('overlay', (t2) => sameAsQemu(t2, dir, img, { backingChain: true, ioFull: ['read -v 999990 20'] }));
  });

  test('odd virtual size: 5G+512 qcow2 written near the end', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const size = 5 * GiB + 512;
    const img = await create(dir, 'big.qcow2', size);
    await io(dir, img, [
      'write -P 0x71 0 64k',
      `write -P 0x72 ${4 * GiB - 4096} 8k`,
      `write -P 0x73 ${size - 4096} 4096`,
      `write -z ${2 * GiB} 1M`,
    ]);
    await sameAsQemu(t, dir, img, { mapRanges: [[4 * GiB, GiB + 512]], ioFirstLine: [`read -P 0x73 ${size - 512} 512`] });
  });

  for (const type of ['zlib', 'zstd'] as const) {
    for (const cluster of [512, 4 * KiB, 64 * KiB, 2 * MiB]) {
      test(`compressed ${type}, cluster size ${cluster}`, async (t) => {
        if (!requireQemu(t)) return;
        const dir = await tempDir(t);
        // Not a multiple of the cluster size: the last cluster is partial (zero-padded by QEMU).
        await writeMixedRawFile(join(dir, 'src.raw'), 3 * MiB + 12345, 1000 + cluster);
        const img = `c-${type}-${cluster}.qcow2`;
        await must(
          'qemu-img',
          ['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type},cluster_size=${cluster}`, 'src.raw', img],
          { cwd: dir },
        );
        await sameAsQemu(t, dir, img, { ioFull: ['read -v 100 64'] });
      });
    }
  }

  test('compressed clusters written by qemu-io into a fresh image (zstd, 64k)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'cw.qcow2', 2 * MiB, { o: 'compression_type=zstd' });
    await io(dir, img, ['write -c -P 0x21 0 64k', 'write -c -P 0x22 128k 128k', 'write -P 0x23 64k 64k']);
    await sameAsQemu(t, dir, img, { ioFirstLine: ['read -P 0x22 128k 128k'] });
  });

  test('extended L2 entries over a backing file (64k clusters, 4k writes)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const base = await fromRaw(dir, 'base.qcow2', 2 * MiB, 41, 'cluster_size=65536');
    const img = await create(dir, 'ext.qcow2', 3 * MiB, { o: 'extended_l2=on,cluster_size=65536', backing: base });
    await io(dir, img, [
      'write -P 0x5a 4k 4k',
      'write -P 0x5b 68k 8k',
      'write -z 12k 4k',
      'write -z 128k 64k',
      'write -P 0x5c 200k 2k',
      'write -z 300k 2k',
      'discard 192k 64k',
      'write -P 0x5d 2040k 16k',
    ]);
    await sameAsQemu(t, dir, img, {
      backingChain: true,
      ioFirstLine: ['read -P 0x5a 4k 4k', 'read -P 0 12k 4k'],
      ioFull: ['map', 'alloc 0 128k'],
    });
  });

  test('extended L2 entries without backing file (32k clusters, 1k subclusters, compressed)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'ext32.qcow2', 2 * MiB, { o: 'extended_l2=on,cluster_size=32768' });
    await io(dir, img, [
      'write -P 0x31 1k 1k',
      'write -P 0x32 3k 5k',
      'write -z 32k 2k',
      'write -c -P 0x33 256k 32k',
      'write -P 0x34 100000 3000',
      'discard 3k 1k',
    ]);
    await sameAsQemu(t, dir, img, { ioFull: ['map'] });
  });

  test('external data file', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'df.qcow2', 4 * MiB, { o: 'data_file=df.data' });
    await io(dir, img, mixedWrites(4 * MiB, 64 * KiB));
    await sameAsQemu(t, dir, img, { ioFirstLine: ['read -P 0x33 256k 256k'] });
  });

  test('external data file with data_file_raw', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'dfr.qcow2', 4 * MiB, { o: 'data_file=dfr.data,data_file_raw=on' });
    await io(dir, img, mixedWrites(4 * MiB, 64 * KiB));
    await sameAsQemu(t, dir, img);
  });

  test('backing chain of depth 4: raw <- 4k <- 512 <- 2M clusters, top larger', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await writeRawFile(join(dir, 'base.raw'), 3 * MiB, [
      { offset: 0, data: randomBytes(1, 3 * MiB) },
      { offset: MiB, data: new Uint8Array(256 * KiB) }, // zeros in the raw base: data, not holes
    ]);
    await create(dir, 'l1.qcow2', 3 * MiB, { o: 'cluster_size=4096', backing: 'base.raw', backingFmt: 'raw' });
    await io(dir, 'l1.qcow2', ['write -P 0x01 0 4k', 'write -P 0x02 10k 20k', 'write -z 64k 64k', 'discard 512k 8k']);
    await create(dir, 'l2.qcow2', 3 * MiB, { o: 'cluster_size=512', backing: 'l1.qcow2' });
    await io(dir, 'l2.qcow2', ['write -P 0x03 2k 1k', 'write -P 0x04 12k 513', 'write -z 0 512', 'write -z 2M 100k']);
    await create(dir, 'top.qcow2', 6 * MiB, { o: 'cluster_size=2M', backing: 'l2.qcow2' });
    await io(dir, 'top.qcow2', ['write -P 0x05 2M 4k', 'write -P 0x06 5M 64k', 'write -z 1M 64k']);
    await sameAsQemu(t, dir, 'top.qcow2', {
      backingChain: true,
      mapRanges: [[0, 3 * MiB]],
      ioFirstLine: ['read -P 0x03 2k 1k', 'read -P 0 3M 1M'],
      ioFull: ['map', 'alloc 0 6M', 'read -v 12k 520'],
    });
    await t.test('compare with its raw conversion (identical) and with a lower layer (differs)', async () => {
      check(await qemuImg(['convert', '-O', 'raw', 'top.qcow2', 'top.raw'], { cwd: dir }));
      for (const args of [
        ['compare', 'top.qcow2', 'top.raw'],
        ['compare', '-f', 'qcow2', '-F', 'raw', 'top.qcow2', 'top.raw'],
        ['compare', 'top.qcow2', 'l2.qcow2'],
        ['compare', 'l1.qcow2', 'base.raw'],
      ]) {
        const { qemu, ours } = await both(dir, args);
        assert.equal(ours.stdout, qemu.stdout, `${args.join(' ')} stdout (stderr: ${ours.stderr.trim()})`);
        assert.equal(ours.code, qemu.code, `${args.join(' ')} exit code`);
      }
    });
  });

  test('backing chain of depth 3: zstd-compressed qcow2 <- 4k <- extended L2', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await writeMixedRawFile(join(dir, 'src.raw'), 2 * MiB, 77);
    await must('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'src.raw', 'base.qcow2'], {
      cwd: dir,
    });
    await create(dir, 'mid.qcow2', 2 * MiB, { o: 'cluster_size=4096', backing: 'base.qcow2' });
    await io(dir, 'mid.qcow2', ['write -P 0x41 60k 8k', 'write -z 1M 4k']);
    await create(dir, 'top.qcow2', 2 * MiB, { o: 'extended_l2=on', backing: 'mid.qcow2' });
    await io(dir, 'top.qcow2', ['write -P 0x42 62k 4k', 'write -z 128k 2k', 'write -P 0x43 1M 2k']);
    await sameAsQemu(t, dir, 'top.qcow2', { backingChain: true });
  });

  test('overlay larger than its backing file', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await create(dir, 'small.qcow2', MiB + 4096, { o: 'cluster_size=4096' });
    await io(dir, 'small.qcow2', ['write -P 0xab 0 64k', `write -P 0xac ${MiB} 4k`]);
    const img = await create(dir, 'large.qcow2', 4 * MiB, { backing: 'small.qcow2' });
    await io(dir, img, ['write -P 0xcd 8k 4k', 'write -P 0xce 3M 4k']);
    await sameAsQemu(t, dir, img, {
      backingChain: true,
      ioFirstLine: ['read -P 0xac 1M 4k', 'read -P 0 1028k 60k'],
    });
  });

  test('internal snapshots: content and listing', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'snap.qcow2', 4 * MiB);
    await io(dir, img, ['write -P 0x01 0 1M', 'write -P 0x02 2M 128k']);
    await must('qemu-img', ['snapshot', '-c', 's1', img], { cwd: dir });
    await io(dir, img, ['write -P 0x03 64k 64k', 'write -z 2M 64k', 'discard 512k 64k', 'write -P 0x04 3M 64k']);
    await must('qemu-img', ['snapshot', '-c', 's2', img], { cwd: dir });
    await io(dir, img, ['write -P 0x05 0 4k', 'discard 3M 64k']);
    await sameAsQemu(t, dir, img, { snapshots: ['s1', 's2', '1', '2'], snapshotList: true });
  });

  test('combination: compressed base + overlay with compressed clusters + snapshots', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await writeMixedRawFile(join(dir, 'src.raw'), 3 * MiB, 5);
    await must('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=4096', 'src.raw', 'base.qcow2'], {
      cwd: dir,
    });
    const img = await create(dir, 'top.qcow2', 4 * MiB, { backing: 'base.qcow2' });
    await io(dir, img, ['write -c -P 0x61 0 64k', 'write -P 0x62 100k 4k']);
    await must('qemu-img', ['snapshot', '-c', 'before', img], { cwd: dir });
    await io(dir, img, ['write -c -P 0x63 1M 128k', 'write -z 2M 64k', 'write -P 0x64 0 4k']);
    await must('qemu-img', ['snapshot', '-c', 'after', img], { cwd: dir });
    await io(dir, img, ['discard 1M 64k', 'write -P 0x65 3M 1M']);
    await sameAsQemu(t, dir, img, { snapshots: ['before', 'after'], snapshotList: true, backingChain: true });
  });

  test('lazy refcounts with the dirty bit set: readable', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'dirty.qcow2', 2 * MiB, { o: 'lazy_refcounts=on' });
    await io(dir, img, ['write -P 0x77 0 128k']);
    await patchFile(join(dir, img), 79, Uint8Array.of(0x01)); // incompatible bit 0: dirty
    await sameAsQemu(t, dir, img);
  });

  test('corrupt bit set: read-only use still works', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'corrupt.qcow2', 2 * MiB);
    await io(dir, img, ['write -P 0x78 0 128k']);
    await patchFile(join(dir, img), 79, Uint8Array.of(0x02)); // incompatible bit 1: corrupt
    await sameAsQemu(t, dir, img);
  });
});

/** A failure as QEMU and users want it: non-zero exit, one line on stderr, no stack trace. */
function assertCleanFailure(r: RunResult, what: string, qemu?: RunResult): void {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.notEqual(r.code, 0, `${what} should fail; stdout: ${r.stdout.slice(0, 500)}`);
  assert.equal(r.timedOut, false, `${what} timed out`);
  assert.equal(r.signal, null, `${what} was killed by ${r.signal ?? ''}`);
  assert.deepEqual(stackTraceLines(r.stderr), [], `${what} printed a stack trace:\n${r.stderr}`);
  assert.equal(lines.length, 1, `${what} should print exactly one line on stderr, got:\n${r.stderr}`);
  if (qemu !== undefined) assert.equal(r.code, qemu.code, `${what}: exit code differs from qemu-img's`);
}

/**
 * For each command: qemu-img must refuse it (checked, so the case really is one QEMU refuses) and
 * qcow2kit must refuse it cleanly with the same exit code. `oursOnly` commands are not run through
 * qemu-img (it does not terminate on them) and just have to fail cleanly.
 */
async function refused(
  t: TestContext,
  dir: string,
  commands: ReadonlyArray<readonly string[]>,
  opts: { oursOnly?: ReadonlyArray<readonly string[]>; mention?: RegExp } = {},
): Promise<void> {
  for (const args of commands) {
    await t.test(args.join(' '), async () => {
      const qemu = await qemuImg(args, { cwd: dir, timeoutMs: 30_000 });
      assert.notEqual(qemu.code, 0, `qemu-img ${args.join(' ')} was expected to fail`);
      const ours = await qcow2kit(args, { cwd: dir, timeoutMs: 30_000 });
      assertCleanFailure(ours, `qcow2kit ${args.join(' ')}`, qemu);
      if (opts.mention !== undefined) assert.match(ours.stderr, opts.mention);
    });
  }
  for (const args of opts.oursOnly ?? []) {
    await t.test(`${args.join(' ')} (qcow2kit only)`, async () => {
      const ours = await qcow2kit(args, { cwd: dir, timeoutMs: 30_000 });
      assertCleanFailure(ours, `qcow2kit ${args.join(' ')}`);
      if (opts.mention !== undefined) assert.match(ours.stderr, opts.mention);
    });
  }
}

describe('read path: images QEMU refuses give one clean error line', () => {
  test('unknown incompatible feature bit', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'unknown.qcow2', MiB);
    await patchFile(join(dir, img), 72, Uint8Array.of(0x80)); // bit 63
    await refused(t, dir, [
      ['info', img],
      ['info', '--output=json', img],
      ['map', '--output=json', img],
      ['convert', '-O', 'raw', img, 'out.raw'],
    ]);
  });

  test('unknown incompatible feature bit named in the image feature table', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'named.qcow2', MiB);
    // Rename the feature-table entry of bit 4 to an unknown bit 5 with our own name, then set bit 5.
    const head = await readAt(join(dir, img), 0, 4096);
    const at = Buffer.from(head).indexOf('extended L2 entries');
    assert.ok(at > 2 && head[at - 2] === 0 && head[at - 1] === 4, 'feature table entry for bit 4 not found');
    const entry = new Uint8Array(47);
    entry[0] = 5;
    entry.set(new TextEncoder().encode('qcow2kit test feature'), 1);
    await patchFile(join(dir, img), at - 1, entry);
    await patchFile(join(dir, img), 79, Uint8Array.of(0x20));
    await refused(t, dir, [['info', img], ['convert', '-O', 'raw', img, 'out.raw']], {
      mention: /qcow2kit test feature/,
    });
  });

  test('encrypted image (LUKS)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await createLuksQcow2(dir, 'enc.qcow2', '1M');
    // qemu-img info and map work without the key; reading content needs it.
    await refused(t, dir, [['convert', '-O', 'raw', 'enc.qcow2', 'out.raw']]);
  });

  test('backing chain loop', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    await create(dir, 'a.qcow2', MiB);
    await create(dir, 'b.qcow2', MiB, { backing: 'a.qcow2' });
    await must('qemu-img', ['rebase', '-u', '-b', 'b.qcow2', '-F', 'qcow2', 'a.qcow2'], { cwd: dir });
    await create(dir, 'self.qcow2', MiB);
    await must('qemu-img', ['rebase', '-u', '-b', 'self.qcow2', '-F', 'qcow2', 'self.qcow2'], { cwd: dir });
    // qemu-img refuses a loop only with --backing-chain; its convert and map recurse until memory
    // runs out, so those are checked on our side only.
    await refused(t, dir, [['info', '--backing-chain', 'b.qcow2'], ['info', '--backing-chain', 'self.qcow2']], {
      oursOnly: [
        ['convert', '-O', 'raw', 'b.qcow2', 'out.raw'],
        ['convert', '-O', 'raw', 'self.qcow2', 'out.raw'],
        ['map', '--output=json', 'b.qcow2'],
        ['map', '--output=json', 'self.qcow2'],
      ],
    });
  });

  test('truncated header', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const img = await create(dir, 'short.qcow2', MiB);
    const head = await readAt(join(dir, img), 0, 50);
    await rm(join(dir, img));
    await writeRawFile(join(dir, img), 50, [{ offset: 0, data: head }]);
    await refused(t, dir, [
      ['info', img],
      ['info', '-f', 'qcow2', img],
      ['convert', '-O', 'raw', img, 'out.raw'],
    ]);
  });
});
