import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Qcow2Error } from '../errors.js';
import { buildQcow2 } from '../format/qcow2/qcow2-builder.test.helper.js';
import { openImageFile } from '../node.js';
import { parseUlong, runBenchCommand, type BenchImage, type BenchOpener } from './cmd-bench.js';
import { CliError } from './cli-error.js';
import { createCaptureIO, main } from './main.js';

class FakeImage implements BenchImage {
  readonly size: number;
  writes = 0;
  reads = 0;
  flushes = 0;
  closed = 0;
  constructor(size = 1 << 20) {
    this.size = size;
  }
  async read(dst: Uint8Array, offset: number): Promise<void> {
    if (offset + dst.byteLength > this.size) throw new Qcow2Error('INVALID_ARGUMENT', 'out of range');
    this.reads++;
  }
  async write(): Promise<void> {
    this.writes++;
  }
  async flush(): Promise<void> {
    this.flushes++;
  }
  async close(): Promise<void> {
    this.closed++;
  }
}

function opener(image = new FakeImage()): BenchOpener & { calls: Array<{ path: string; format?: string | undefined; readOnly: boolean }>; image: FakeImage } {
  const calls: Array<{ path: string; format?: string | undefined; readOnly: boolean }> = [];
  const fn: BenchOpener = async (path, o) => {
    calls.push({ path, ...o });
    return image;
  };
  return Object.assign(fn, { calls, image });
}

/** Runs the command the way main does, returning exit code and output. */
async function bench(argv: string[], open = opener()): Promise<{ code: number; out: string; err: string }> {
  const io = createCaptureIO();
  let code: number;
  try {
    code = await runBenchCommand(argv, io, { open, now: fakeClock() });
  } catch (e) {
    if (!(e instanceof CliError)) throw e;
    io.stderr.write(`qcow2kit: ${e.message.split('\n').join('\nqcow2kit: ')}\n`);
    code = e.exitCode;
  }
  return { code, out: io.stdoutText(), err: io.stderrText() };
}

function fakeClock(): () => number {
  let t = 0;
  return () => (t += 1234.5);
}

describe('bench options (qemu-img 7.2 texts)', () => {
  it('prints the two lines of qemu-img bench with its defaults', async () => {
    const open = opener();
    const r = await bench(['disk.img'], open);
    assert.equal(r.code, 0);
    assert.equal(r.out, 'Sending 75000 read requests, 4096 bytes each, 64 in parallel (starting at offset 0, step size 4096)\nRun completed in 1.234 seconds.\n');
    assert.equal(open.image.reads, 75000);
    assert.deepEqual(open.calls, [{ path: 'disk.img', format: undefined, readOnly: true }]);
    assert.equal(open.image.closed, 1);
  });

  it('takes qemu-img number syntax: 0x, octal, sizes with suffixes and fractions', async () => {
    const open = opener();
    const r = await bench(['-w', '-c', '010', '-d', '0x2', '-s', '1.5k', '-S', '2k', '-o', '0x10', '--pattern=0xff', '-f', 'qcow2', 'x'], open);
    assert.equal(r.out.split('\n')[0], 'Sending 8 write requests, 1536 bytes each, 2 in parallel (starting at offset 16, step size 2048)');
    assert.equal(open.image.writes, 8);
    assert.deepEqual(open.calls, [{ path: 'x', format: 'qcow2', readOnly: false }]);
  });

  it('prints the flush line and flushes', async () => {
    const open = opener();
    const r = await bench(['-w', '-c', '100', '-d', '10', '--flush-interval=10', 'x'], open);
    assert.equal(r.out.split('\n')[1], 'Sending flush every 10 requests');
    assert.equal(open.image.flushes, 10);
  });

  it('-q still prints (qemu-img bench ignores it for its own lines)', async () => {
    const r = await bench(['-q', '-c', '1', 'x']);
    assert.match(r.out, /^Sending 1 read requests/);
  });

  it('rejects bad values with qemu-img messages and exit 1', async () => {
    const cases: Array<[string[], string]> = [
      [['-c', 'x', 'f'], 'Invalid request count specified'],
      [['-c', '-1', 'f'], 'Invalid request count specified'],
      [['-c', '5k', 'f'], 'Invalid request count specified'],
      [['-c', '', 'f'], 'Invalid request count specified'],
      [['-c', '3000000000', 'f'], 'Invalid request count specified'],
      [['-d', 'x', 'f'], 'Invalid queue depth specified'],
      [['-s', 'x', 'f'], 'Invalid buffer size specified. You may use k, M, G, T, P or E suffixes for\nqcow2kit: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.'],
      [['-s', '3G', 'f'], 'Invalid buffer size specified. Must be between 0 and 2147483647.'],
      [['-S', 'x', 'f'], 'Invalid step_size specified. You may use k, M, G, T, P or E suffixes for\nqcow2kit: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.'],
      [['-o', '-5', 'f'], 'Invalid offset specified. You may use k, M, G, T, P or E suffixes for\nqcow2kit: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.'],
      [['-o', '8E', 'f'], 'Invalid offset specified. Must be between 0 and 9223372036854775807.'],
      [['--pattern=300', 'f'], 'Invalid pattern byte specified'],
      [['--pattern=-1', 'f'], 'Invalid pattern byte specified'],
      [['--flush-interval=x', 'f'], 'Invalid flush interval specified'],
      [['-t', 'bogus', 'f'], 'Invalid cache mode'],
      [['-i', 'bogus', 'f'], 'Invalid aio option: bogus'],
      [['-c', '100', '--flush-interval=10', 'f'], '--flush-interval is only available in write tests'],
      [['-w', '-c', '100', '--flush-interval=10', 'f'], "Flush interval can't be smaller than depth"],
      [['-w', '-U', 'f'], "Could not open 'f': force-share=on can only be used with read-only images"],
      [['-n', 'f'], "Could not open 'f': aio=native was specified, but it requires cache.direct=on, which was not specified."],
      [['-i', 'native', '-t', 'writeback', 'f'], "Could not open 'f': aio=native was specified, but it requires cache.direct=on, which was not specified."],
      [['--image-opts', 'f'], '--image-opts is not supported'],
      [['--image-opts', '-f', 'qcow2', 'f'], '--image-opts and --format are mutually exclusive'],
      [['-d', '0', 'f'], 'Invalid queue depth specified'],
    ];
    for (const [argv, message] of cases) {
      const r = await bench(argv);
      assert.equal(r.code, 1, argv.join(' '));
      assert.equal(r.err, `qcow2kit: ${message}\n`, argv.join(' '));
      assert.equal(r.out, '', argv.join(' '));
    }
  });

  it('accepts what qemu-img accepts', async () => {
    for (const argv of [
      ['-c', ' +5', 'f'],
      ['-c', '-0', 'f'],
      ['-c', '0', '-d', '0', 'f'],
      ['-t', 'none', '-n', '-c', '1', 'f'],
      ['-t', 'directsync', '-i', 'native', '-c', '1', 'f'],
      ['-i', 'io_uring', '-i', 'threads', '-c', '1', 'f'],
      ['-U', '-c', '1', 'f'],
      ['-w', '-c', '3', '-d', '1', '--flush-interval=0', 'f'],
      ['-w', '-c', '3', '-d', '1', '--fl=100', '--no-drain', 'f'],
    ]) {
      const r = await bench(argv);
      assert.equal(r.code, 0, `${argv.join(' ')}: ${r.err}`);
    }
  });

  it('reports the first bad option in command-line order, like getopt', async () => {
    const r1 = await bench(['-c', 'x', '-Z', 'f']);
    assert.equal(r1.err, 'qcow2kit: Invalid request count specified\n');
    for (const [argv, message] of [
      [['-Z', '-c', 'x', 'f'], "unrecognized option '-Z'"],
      [[], 'Expecting one image file name'],
      [['a', 'b'], 'Expecting one image file name'],
    ] as const) {
      const io = createCaptureIO();
      assert.equal(await main(['bench', ...argv], io), 1);
      assert.equal(io.stderrText(), `qcow2kit: ${message}\nTry 'qcow2kit --help' for more information\n`);
    }
  });

  it('a failing request prints the header, then "Failed request: Input/output error"', async () => {
    const open = opener(new FakeImage(65536));
    const r = await bench(['-c', '3', '-o', '64k', 'f'], open);
    assert.equal(r.code, 1);
    assert.equal(r.out, 'Sending 3 read requests, 4096 bytes each, 64 in parallel (starting at offset 65536, step size 4096)\n');
    assert.equal(r.err, 'qcow2kit: Failed request: Input/output error\n');
    assert.equal(open.image.closed, 1);
  });
});

describe('parseUlong (qemu_strtoul base 0)', () => {
  it('parses like C strtoul', () => {
    assert.equal(parseUlong('10', 100, 'x'), 10);
    assert.equal(parseUlong('0x1F', 100, 'x'), 31);
    assert.equal(parseUlong('017', 100, 'x'), 15);
    assert.equal(parseUlong('  +7', 100, 'x'), 7);
    assert.equal(parseUlong('-0', 100, 'x'), 0);
    for (const bad of ['08', '0x', '7 ', '', '-1', '1e3', '101', '99999999999999999999999']) {
      assert.throws(() => parseUlong(bad, 100, 'bad'), CliError, bad);
    }
  });
});

describe('bench on real files', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'qcow2kit-bench-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the pattern into a qcow2 image through main', async () => {
    const path = join(dir, 'a.qcow2');
    await writeFile(path, buildQcow2({ size: 1 << 20, clusterBits: 16 }));
    const io = createCaptureIO();
    const code = await main(['bench', '-w', '-c', '40', '-d', '4', '-s', '8k', '-S', '16k', '--pattern=0x5a', path], io);
    assert.equal(code, 0, io.stderrText());
    assert.match(io.stdoutText(), /^Sending 40 write requests, 8192 bytes each, 4 in parallel \(starting at offset 0, step size 16384\)\nRun completed in \d+\.\d{3} seconds\.\n$/);
    const image = await openImageFile(path);
    try {
      const buf = new Uint8Array(1 << 20);
      await image.read(buf, 0);
      // 40 requests of 8k every 16k: the first 8k of each of the first 40 16k blocks.
      for (let off = 0; off < buf.length; off += 8192) {
        const want = off % 16384 === 0 && off / 16384 < 40 ? 0x5a : 0;
        assert.equal(buf[off], want, `offset ${off}`);
        assert.equal(buf[off + 8191], want, `offset ${off + 8191}`);
      }
    } finally {
      await image.close();
    }
  });

  it('reads a raw file and refuses a read past its end', async () => {
    const path = join(dir, 'b.raw');
    await writeFile(path, new Uint8Array(1 << 16));
    let io = createCaptureIO();
    assert.equal(await main(['bench', '-f', 'raw', '-c', '100', path], io), 0, io.stderrText());
    io = createCaptureIO();
    assert.equal(await main(['bench', '-f', 'raw', '-c', '1', '-o', '64k', path], io), 1);
    assert.equal(io.stderrText(), 'qcow2kit: Failed request: Input/output error\n');
    io = createCaptureIO();
    assert.equal(await main(['bench', '-c', '1', join(dir, 'missing')], io), 1);
    assert.match(io.stderrText(), /^qcow2kit: Could not open '.*missing': /);
    assert.equal((await readFile(path)).length, 1 << 16);
  });
});
