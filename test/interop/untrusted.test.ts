/**
 * `--untrusted`: images from uploads and guests name other files (backing files, external data
 * files) and carry guessable headers. With --untrusted no file named by the image is opened, no
 * format is probed and metadata memory is capped; `info --untrusted` reports what an upload
 * checker needs.
 *
 * How "never opened" is shown: the named files are FIFOs with no writer. Opening a FIFO for
 * reading blocks until a writer appears, so a tool that opens one hangs and is killed by the
 * time limit. Control runs without --untrusted hang on the same images, which proves the
 * detector works. Where strace is available, a second test traces open(2) calls on real host
 * files as well.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { cliPath, createLuksQcow2, must, parseJson, patchFile, qcow2kit, requireQemu, run, stackTraceLines, tempDir, type RunResult } from './helpers.js';

/** A command that must finish on its own (it would hang on a FIFO it opened). */
const FINISHES_MS = 60_000;
/** A control command that is expected to hang on a FIFO. */
const HANGS_MS = 8_000;

interface Report {
  format: string;
  'format-signature': string;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'data-file'?: string;
  'external-data-file'?: boolean;
  encrypted: boolean;
  'encryption-format'?: string;
  'unknown-incompatible-features'?: string[];
  dirty: boolean;
  corrupt: boolean;
  'open-error'?: string;
  safe: boolean;
  reasons: string[];
}

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed: ${r.stderr?.toString() ?? ''}`);
}

/** Runs qcow2kit and requires that it finished by itself, without a stack trace. */
async function finishes(args: readonly string[], cwd: string): Promise<RunResult> {
  const r = await qcow2kit(args, { cwd, timeoutMs: FINISHES_MS });
  assert.equal(r.timedOut, false, `${r.command} hung: it opened a FIFO named by the image`);
  assert.deepEqual(stackTraceLines(r.stderr), [], `${r.command}: stack trace:\n${r.stderr}`);
  return r;
}

async function hangs(args: readonly string[], cwd: string): Promise<void> {
  const r = await qcow2kit(args, { cwd, timeoutMs: HANGS_MS });
  assert.equal(r.timedOut, true, `control ${r.command} was expected to block on the FIFO but exited ${r.code}:\n${r.stderr}`);
}

function reportOf(r: RunResult): Report {
  const json = parseJson(r.stdout, r.command) as { 'untrusted-report'?: Report };
  assert.ok(json['untrusted-report'] !== undefined, `${r.command}: no untrusted-report in\n${r.stdout}`);
  return json['untrusted-report'];
}

/** Add an external data file name extension and set the incompatible "data file" bit. */
async function addDataFileExtension(path: string, name: string): Promise<void> {
  const bytes = new Uint8Array(await readFile(path));
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = v.getUint32(100);
  while (v.getUint32(off) !== 0) off += 8 + Math.ceil(v.getUint32(off + 4) / 8) * 8;
  const text = new TextEncoder().encode(name);
  v.setUint32(off, 0x44415441);
  v.setUint32(off + 4, text.byteLength);
  bytes.fill(0, off + 8, off + 16 + Math.ceil(text.byteLength / 8) * 8);
  bytes.set(text, off + 8);
  bytes[79] = (bytes[79] ?? 0) | 4;
  await writeFile(path, bytes);
}

/** Two images naming FIFOs: an overlay (backing file) and one with an external data file. */
async function fifoImages(t: TestContext): Promise<string> {
  const dir = await tempDir(t, 'qcow2kit-untrusted-');
  mkfifo(join(dir, 'backing.fifo'));
  // -u: qemu-img itself must not open the FIFO while creating the overlay.
  await must('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', join(dir, 'backing.fifo'), '-F', 'raw', 'overlay.qcow2', '1M'], { cwd: dir });
  await must('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=data.fifo', 'datafile.qcow2', '1M'], { cwd: dir });
  await must('qemu-io', ['-c', 'write -P 0x5a 0 64k', 'datafile.qcow2'], { cwd: dir });
  // The data file becomes a FIFO only now that the image is written.
  await rm(join(dir, 'data.fifo'));
  mkfifo(join(dir, 'data.fifo'));
  return dir;
}

describe('--untrusted never opens a file named by the image', () => {
  test('info --untrusted reports the backing file without opening it', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await fifoImages(t);
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'overlay.qcow2'], dir);
    assert.equal(r.code, 0, r.stderr);
    const report = reportOf(r);
    assert.equal(report['backing-filename'], join(dir, 'backing.fifo'));
    assert.equal(report['backing-filename-format'], 'raw');
    assert.equal(report.safe, false);
    assert.deepEqual(report.reasons, ['backing-file']);
  });

  test('info --untrusted reports the data file without opening it; plain info opens it', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await fifoImages(t);
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'datafile.qcow2'], dir);
    assert.equal(r.code, 0, r.stderr);
    const report = reportOf(r);
    assert.equal(report['data-file'], 'data.fifo');
    assert.equal(report['external-data-file'], true);
    assert.deepEqual(report.reasons, ['data-file']);
    // Control: qemu-img's info opens the data file, so ours does too without --untrusted.
    await hangs(['info', 'datafile.qcow2'], dir);
  });

  test('map and convert --untrusted refuse what the image names instead of opening it', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await fifoImages(t);
    // The map of an image with a data file needs no byte of the data file.
    const map = await finishes(['map', '--untrusted', '-f', 'qcow2', '--output=json', 'datafile.qcow2'], dir);
    assert.equal(map.code, 0, map.stderr);
    assert.match(map.stdout, /"start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 0/);
    // Reading guest data would need it: refused.
    const conv = await finishes(['convert', '--untrusted', '-f', 'qcow2', '-O', 'raw', 'datafile.qcow2', 'out.raw'], dir);
    assert.equal(conv.code, 1);
    assert.match(conv.stderr, /Refusing to access data file 'data\.fifo': the image is untrusted/);
    // An overlay needs its backing file for map: refused, not opened.
    const ov = await finishes(['map', '--untrusted', '-f', 'qcow2', 'overlay.qcow2'], dir);
    assert.equal(ov.code, 1);
    assert.match(ov.stderr, /Could not open 'overlay\.qcow2':.*Refusing to open backing file/);
    // Controls: the same commands without --untrusted open the FIFOs.
    await hangs(['map', '--output=json', 'datafile.qcow2'], dir);
    await hangs(['map', 'overlay.qcow2'], dir);
  });

  test('convert --untrusted -l SNAPSHOT opens the snapshot without opening the data file', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t, 'qcow2kit-untrusted-');
    const img = join(dir, 'snap.qcow2');
    await must('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', img, '1M']);
    await must('qemu-io', ['-c', 'write -P 7 0 8k', img]);
    await must('qemu-img', ['snapshot', '-c', 's1', img]);
    // Name a data file afterwards (QEMU would not create snapshots with one): what an uploader can do.
    await addDataFileExtension(img, 'data.fifo');
    mkfifo(join(dir, 'data.fifo'));
    const r = await finishes(['convert', '--untrusted', '-f', 'qcow2', '-l', 's1', '-O', 'raw', 'snap.qcow2', 'out.raw'], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Refusing to access data file 'data\.fifo': the image is untrusted/);
    await hangs(['convert', '-f', 'qcow2', '-l', 's1', '-O', 'raw', 'snap.qcow2', 'out.raw'], dir);
  });

  test('check --untrusted needs no dependency and probes nothing', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await fifoImages(t);
    const ok = await finishes(['check', '--untrusted', '-f', 'qcow2', 'datafile.qcow2'], dir);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /No errors were found on the image/);
    const noFormat = await finishes(['check', '--untrusted', 'datafile.qcow2'], dir);
    assert.equal(noFormat.code, 1);
    assert.match(noFormat.stderr, /--untrusted requires the image format/);
  });

  test('strace: no open(2) of host files named by the image', async (t) => {
    if (!requireQemu(t)) return;
    const probe = spawnSync('strace', ['-f', '-qq', '-e', 'trace=openat', '-o', '/dev/null', 'true']);
    if (probe.error !== undefined || probe.status !== 0) {
      t.skip('strace is not available or not permitted here');
      return;
    }
    const dir = await tempDir(t, 'qcow2kit-untrusted-');
    const secret = join(dir, 'host-secret.raw');
    await writeFile(secret, new Uint8Array(1 << 20).fill(0x42));
    await must('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', secret, '-F', 'raw', 'overlay.qcow2'], { cwd: dir });
    await must('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${secret}`, 'datafile.qcow2', '1M'], { cwd: dir });
    const traced = async (args: readonly string[]): Promise<string> => {
      const trace = join(dir, 'trace.txt');
      const r = await run('strace', ['-f', '-qq', '-e', 'trace=open,openat,openat2', '-o', trace, process.execPath, cliPath, ...args], { cwd: dir, timeoutMs: FINISHES_MS });
      assert.equal(r.timedOut, false);
      return readFile(trace, 'utf8');
    };
    for (const args of [
      ['info', '--untrusted', '-f', 'qcow2', 'overlay.qcow2'],
      ['info', '--untrusted', '-f', 'qcow2', 'datafile.qcow2'],
      ['map', '--untrusted', '-f', 'qcow2', 'datafile.qcow2'],
      ['convert', '--untrusted', '-f', 'qcow2', '-O', 'raw', 'datafile.qcow2', 'out.raw'],
      ['check', '--untrusted', '-f', 'qcow2', 'overlay.qcow2'],
    ]) {
      const trace = await traced(args);
      assert.ok(trace.includes(args[args.length - 1] === 'out.raw' ? 'datafile.qcow2' : args[args.length - 1]!), `trace of ${args.join(' ')} does not show the image being opened`);
      assert.ok(!trace.includes('host-secret.raw'), `${args.join(' ')} opened the host file:\n${trace.split('\n').filter((l) => l.includes('host-secret')).join('\n')}`);
    }
    // Control: without --untrusted the same trace shows the host file.
    assert.ok((await traced(['map', 'overlay.qcow2'])).includes('host-secret.raw'), 'control: map without --untrusted should open the backing file');
  });
});

describe('--untrusted never probes a format', () => {
  test('a raw upload carrying a qcow2 header is reported, not interpreted', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await fifoImages(t);
    // What a guest can write into its raw disk: a qcow2 header naming a host file.
    await copyFile(join(dir, 'overlay.qcow2'), join(dir, 'disk.raw'));
    const noFormat = await finishes(['info', '--untrusted', '--output=json', 'disk.raw'], dir);
    assert.equal(noFormat.code, 1);
    assert.match(noFormat.stderr, /--untrusted requires the image format \(-f qcow2 or -f raw\)/);

    const r = await finishes(['info', '--untrusted', '-f', 'raw', '--output=json', 'disk.raw'], dir);
    assert.equal(r.code, 0, r.stderr);
    const info = parseJson(r.stdout, r.command) as { format: string; 'backing-filename'?: string };
    assert.equal(info.format, 'raw');
    assert.equal(info['backing-filename'], undefined);
    const report = reportOf(r);
    assert.equal(report['format-signature'], 'qcow2');
    assert.deepEqual(report.reasons, ['format-mismatch']);
    const map = await finishes(['map', '--untrusted', '-f', 'raw', 'disk.raw'], dir);
    assert.equal(map.code, 0, map.stderr);
    // Control: probing takes the guest's header at its word and follows its backing file.
    await hangs(['map', 'disk.raw'], dir);
  });
});

describe('info --untrusted reports what an upload checker needs', () => {
  const qcow2 = async (t: TestContext, opts: string[] = []): Promise<{ dir: string; path: string }> => {
    const dir = await tempDir(t, 'qcow2kit-untrusted-');
    await must('qemu-img', ['create', '-q', '-f', 'qcow2', ...opts, 'img.qcow2', '4M'], { cwd: dir });
    return { dir, path: join(dir, 'img.qcow2') };
  };
  const incompat = (lo: number): Uint8Array => new Uint8Array([0, 0, 0, 0, 0, 0, 0, lo]);

  test('a clean image is safe', async (t) => {
    if (!requireQemu(t)) return;
    const { dir } = await qcow2(t);
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'img.qcow2'], dir);
    assert.equal(r.code, 0, r.stderr);
    const report = reportOf(r);
    assert.equal(report.safe, true);
    assert.deepEqual(report.reasons, []);
    assert.equal(report.dirty, false);
    assert.equal(report.corrupt, false);
    assert.equal(report.encrypted, false);
  });

  test('unknown incompatible features, named from the image feature table or by bit', async (t) => {
    if (!requireQemu(t)) return;
    const { dir, path } = await qcow2(t);
    await patchFile(path, 72, incompat(0x20));
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'img.qcow2'], dir);
    // The image cannot be opened (as with qemu-img), but the report says why.
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Could not open 'img\.qcow2': Unsupported qcow2 feature\(s\): Unknown incompatible feature: 20/);
    const report = reportOf(r);
    assert.deepEqual(report['unknown-incompatible-features'], ['bit 5']);
    assert.deepEqual(report.reasons, ['unknown-incompatible-features']);
  });

  test('dirty and corrupt bits', async (t) => {
    if (!requireQemu(t)) return;
    const { dir, path } = await qcow2(t, ['-o', 'lazy_refcounts=on']);
    await patchFile(path, 72, incompat(0x03));
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'img.qcow2'], dir);
    assert.equal(r.code, 0, r.stderr);
    const report = reportOf(r);
    assert.equal(report.dirty, true);
    assert.equal(report.corrupt, true);
    assert.deepEqual([...report.reasons].sort(), ['corrupt', 'dirty']);
  });

  test('encryption', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t, 'qcow2kit-untrusted-');
    await createLuksQcow2(dir, 'img.qcow2', '4M');
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'img.qcow2'], dir);
    const report = reportOf(r);
    assert.equal(report.encrypted, true);
    assert.equal(report['encryption-format'], 'luks');
    assert.ok(report.reasons.includes('encrypted'), JSON.stringify(report));
  });

  test('human output lists the report after the usual lines', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await fifoImages(t);
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', 'overlay.qcow2'], dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^image: overlay\.qcow2\n/);
    assert.match(r.stdout, /\nUntrusted report:\n(?: {4}.+\n)+$/);
    assert.match(r.stdout, /\n {4}reasons: backing-file\n/);
    assert.match(r.stdout, / {4}backing filename: .*backing\.fifo\n/);
  });
});

describe('--untrusted caps metadata memory', () => {
  test('an image whose L1 table exceeds the untrusted limit is refused, and reading it costs the memory', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t, 'qcow2kit-untrusted-');
    // 512-byte clusters: 64 GiB of virtual disk need a 16 MiB L1 table (QEMU accepts up to 32 MiB).
    await must('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'big.qcow2', '64G'], { cwd: dir, timeoutMs: 300_000 });
    const r = await finishes(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'big.qcow2'], dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /L1 table needs 16777216 bytes, more than the untrusted-image limit of 8388608 bytes/);
    const report = reportOf(r);
    assert.deepEqual(report.reasons, ['metadata-limit']);
    // Control: the trusted path loads the table (qemu-img does the same).
    const plain = await qcow2kit(['info', 'big.qcow2'], { cwd: dir, timeoutMs: FINISHES_MS });
    assert.equal(plain.code, 0, plain.stderr);

    // Peak memory, where GNU time is there: the untrusted run stays well below the trusted one.
    const time = spawnSync('/usr/bin/time', ['-f', '%M', 'true']);
    if (time.status !== 0) return;
    const maxRssKiB = async (args: readonly string[]): Promise<number> => {
      const m = await run('/usr/bin/time', ['-f', 'maxrss=%M', process.execPath, cliPath, ...args], { cwd: dir, timeoutMs: FINISHES_MS });
      const hit = /maxrss=(\d+)/.exec(m.stderr);
      assert.ok(hit !== null, m.stderr);
      return Number(hit[1]);
    };
    const trusted = await maxRssKiB(['info', '--output=json', 'big.qcow2']);
    const untrusted = await maxRssKiB(['info', '--untrusted', '-f', 'qcow2', '--output=json', 'big.qcow2']);
    t.diagnostic(`max RSS: trusted ${trusted} KiB, untrusted ${untrusted} KiB`);
    assert.ok(untrusted + 8 * 1024 < trusted, `untrusted run used ${untrusted} KiB, trusted ${trusted} KiB`);
  });
});
