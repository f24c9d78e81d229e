/**
 * Interop suite for `measure`: the same command line through qemu-img 7.2 and qcow2kit must give
 * the same output (JSON and human), the same messages and the same exit code, for a spread of
 * sizes and creation options and for source images made by qemu-img/qemu-io at test time.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  compressibleBytes,
  must,
  parseJson,
  qcow2kit,
  qemuImg,
  qemuIoWrite,
  randomBytes,
  requireQemu,
  stackTraceLines,
  tempDir,
  writeRawFile,
  type RunResult,
} from './helpers.js';

const MiB = 1024 * 1024;

function normalize(text: string): string {
  return text.replace(/^qcow2kit: /gm, 'qemu-img: ').replace(/'qcow2kit --help'/g, "'qemu-img --help'");
}

function assertSameResult(qemu: RunResult, ours: RunResult, what: string): void {
  assert.deepEqual(stackTraceLines(ours.stderr), [], `${what}: stack trace:\n${ours.stderr}`);
  assert.deepEqual(
    { code: ours.code, stdout: ours.stdout, stderr: normalize(ours.stderr) },
    { code: qemu.code, stdout: qemu.stdout, stderr: qemu.stderr },
    what,
  );
}

/** Runs `measure ARGS` with both tools (in `cwd`) and requires the same result; returns qemu's. */
async function sameMeasure(args: readonly string[], cwd?: string): Promise<RunResult> {
  const opts = cwd === undefined ? {} : { cwd };
  const [qemu, ours] = await Promise.all([qemuImg(['measure', ...args], opts), qcow2kit(['measure', ...args], opts)]);
  assertSameResult(qemu, ours, `measure ${args.join(' ')}`);
  return qemu;
}

/** Runs `fn` over `items`, a few at a time. */
async function pool<T>(items: readonly T[], fn: (item: T) => Promise<void>, width = 4): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

const SIZES = ['0', '1', '1000', '65536', '1M', '100M', '1G', '3G', '1T', '64T', '1P', '4P', '9223372036854775807'];
const OPTIONS = [
  '',
  'cluster_size=512',
  'cluster_size=4k',
  'cluster_size=2M',
  'extended_l2=on',
  'cluster_size=16k,extended_l2=on',
  'refcount_bits=1',
  'refcount_bits=64',
  'refcount_bits=8,cluster_size=1k',
  'compat=0.10',
  'preallocation=full',
  'preallocation=metadata,cluster_size=8k',
  'preallocation=falloc,extended_l2=on,cluster_size=2M,refcount_bits=2',
];

describe('measure matches qemu-img', () => {
  test('--size: a spread of sizes and qcow2 options, JSON', async (t) => {
    if (!requireQemu(t)) return;
    // Every size with the default options, every option set with a few sizes.
    await pool(SIZES, async (size) => {
      const r = await sameMeasure(['--output=json', '-O', 'qcow2', '--size', size]);
      if (r.code === 0) parseJson(r.stdout, `measure --size ${size}`);
    });
    const withOptions = OPTIONS.slice(1).flatMap((o) => ['1000', '1G', '1P'].map((size) => ['--output=json', '-O', 'qcow2', '-o', o, '--size', size]));
    await pool(withOptions, async (args) => void (await sameMeasure(args)));
  });

  test('--size: human output, raw output format, defaults', async (t) => {
    if (!requireQemu(t)) return;
    for (const size of ['0', '1000', '1G', '9223372036854775807']) {
      await sameMeasure(['--size', size]);
      await sameMeasure(['--output=json', '--size', size]);
      await sameMeasure(['-O', 'qcow2', '--size', size]);
    }
    await sameMeasure(['-O', 'raw', '-o', 'preallocation=full,nocow=on,extent_size_hint=1M', '--size', '1G']);
    await sameMeasure(['-O', 'qcow2', '-o', 'size=5G', '--size', '1G']);
    await sameMeasure(['-O', 'qcow2', '-o', 'cluster_size=4k', '-o', 'cluster_size=8k', '--size', '1G']);
    await sameMeasure(['-O', 'qcow2', '--size', '1G', '--size', '2G']);
    await sameMeasure(['-O', 'qcow2', '-o', 'encryption=on,compression_type=zstd,lazy_refcounts=on', '--size', '1G']);
  });

  test('errors: messages and exit codes', async (t) => {
    if (!requireQemu(t)) return;
    const cases: string[][] = [
      [],
      ['-f', 'qcow2'],
      ['-l', 'snap'],
      ['--size', '1G', 'file.qcow2'],
      ['a', 'b'],
      ['--size', '-1'],
      ['--size', '1x'],
      ['--size', '8E'],
      ['--size', '1G', '-O', 'foo'],
      ['--size', '1G', '-O', 'vmdk'],
      ['--size', '1G', '-O', 'bochs'],
      ['--size', '1G', '--output=xml'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=1000'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=abc'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'compat=v3'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'compat=0.10,refcount_bits=8'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=3'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=abc'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'preallocation=foo'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'extended_l2=maybe'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'extended_l2=on,cluster_size=4k'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'encrypt.format=luks'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'help'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'foo=bar'],
      ['--size', '1G', '-O', 'qcow2', '-o', ',x'],
      ['--size', '1G', '-O', 'raw', '-o', 'cluster_size=4k'],
      ['--size', '1P', '-O', 'qcow2', '-o', 'cluster_size=512'],
      ['nonexistent.qcow2'],
    ];
    await pool(cases, async (args) => {
      const r = await sameMeasure(args);
      assert.equal(r.code, 1, `measure ${args.join(' ')} fails`);
    });
  });

  test('a getopt error prints glibc\'s message, then the help, and exits 0', async (t) => {
    if (!requireQemu(t)) return;
    const qemu = await qemuImg(['measure', '--foo']);
    const ours = await qcow2kit(['measure', '--foo']);
    assert.equal(ours.code, qemu.code);
    assert.equal(ours.stderr, qemu.stderr);
    assert.match(ours.stdout, /^qcow2kit version .*\nusage: qcow2kit /);
  });

  test('from source images: allocated ranges, chains, snapshots, bitmaps', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t);
    const p = (name: string): string => join(dir, name);
    await must('qemu-img', ['create', '-f', 'qcow2', p('a.qcow2'), '100M']);
    await qemuIoWrite(p('a.qcow2'), ['write -P 1 0 1M', 'write -z 2M 1M', 'write -P 2 5000k 3k', 'write -c -P 3 10M 128k', 'write -P 4 98M 1536k', 'discard 98M 64k']);
    await must('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'a.qcow2', '-F', 'qcow2', p('over.qcow2'), '120M']);
    await qemuIoWrite(p('over.qcow2'), ['write -P 5 1M 12k', 'write -z 0 4k', 'write -P 6 110M 1M']);
    await must('qemu-img', ['create', '-f', 'qcow2', '-o', 'compat=0.10', p('v2.qcow2'), '10M']);
    await qemuIoWrite(p('v2.qcow2'), ['write -P 7 64k 64k']);
    await must('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', p('ext.qcow2'), '30M']);
    await qemuIoWrite(p('ext.qcow2'), ['write -P 8 4k 8k', 'write -P 8 1M 300k', 'write -z 2M 128k']);
    // A dense raw file (Node cannot see a raw file's holes, so only dense ones match).
    await writeRawFile(p('dense.raw'), 3 * MiB + 512, [
      { offset: 0, data: randomBytes(1, MiB) },
      { offset: MiB, data: compressibleBytes(2, 2 * MiB + 512) },
    ]);
    // Bitmaps and a snapshot taken before the image grew.
    await must('qemu-img', ['create', '-f', 'qcow2', p('bm.qcow2'), '50M']);
    await qemuIoWrite(p('bm.qcow2'), ['write -P 9 0 2M']);
    await must('qemu-img', ['snapshot', '-c', 's1', p('bm.qcow2')]);
    await must('qemu-img', ['resize', p('bm.qcow2'), '80M']);
    await qemuIoWrite(p('bm.qcow2'), ['write -P 10 70M 3M']);
    await must('qemu-img', ['bitmap', '--add', p('bm.qcow2'), 'b1']);
    await must('qemu-img', ['bitmap', '--add', '-g', '4k', p('bm.qcow2'), 'a-longer-bitmap-name']);

    const sources = ['a.qcow2', 'over.qcow2', 'v2.qcow2', 'ext.qcow2', 'dense.raw', 'bm.qcow2'];
    const extras = [[], ['-o', 'cluster_size=512'], ['-o', 'cluster_size=2M,refcount_bits=64'], ['-o', 'extended_l2=on'], ['-o', 'compat=0.10'], ['-o', 'backing_file=x'], ['-o', 'preallocation=full']];
    await pool(sources.flatMap((src) => extras.map((extra) => ['--output=json', '-O', 'qcow2', ...extra, src])), async (args) => {
      const r = await sameMeasure(args, dir);
      assert.equal(r.code, 0, `measure ${args.join(' ')}`);
    });
    await pool(sources, async (src) => {
      await sameMeasure([src], dir);
      await sameMeasure(['-O', 'qcow2', src], dir);
    });
    // (A qcow2 file read as raw has holes where clusters were discarded: see dense.raw.)
    await sameMeasure(['-O', 'qcow2', '-f', 'raw', 'dense.raw'], dir);
    await sameMeasure(['-O', 'qcow2', '-f', 'qcow2', 'dense.raw'], dir);
    await sameMeasure(['--output=json', '-O', 'qcow2', '-l', 's1', 'bm.qcow2'], dir);
    await sameMeasure(['--output=json', '-O', 'qcow2', '-l', 'snapshot.name=s1', 'bm.qcow2'], dir);
    await sameMeasure(['--output=json', '-O', 'qcow2', '-l', 'snapshot.id=1', 'bm.qcow2'], dir);
    await sameMeasure(['-O', 'qcow2', '-l', 'nosuch', 'bm.qcow2'], dir);
    await sameMeasure(['-O', 'qcow2', '-l', 'snapshot.id=2', 'bm.qcow2'], dir);
    await sameMeasure(['-O', 'qcow2', '-l', 'snapshot.foo=1', 'bm.qcow2'], dir);
    await sameMeasure(['-l', 's1', 'dense.raw'], dir);
    // The bitmaps line needs a v3 source and v3 output.
    const withBitmaps = await sameMeasure(['-O', 'qcow2', 'bm.qcow2'], dir);
    assert.match(withBitmaps.stdout, /^bitmaps size: [1-9]\d*$/m);
  });
});
