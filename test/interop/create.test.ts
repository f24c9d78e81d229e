/**
 * Interop suite for `create`: both tools run the same command line in twin directories (so
 * relative names stored in headers are the same), and we require the same exit code, stdout
 * and stderr (program name aside), byte-identical image and data files, `qemu-img check`
 * clean on ours, and the same `qemu-img info --output=json`. `actual-size` (st_blocks) also
 * counts the file system's own extent blocks, which depend on how fragmented the file came
 * out, so instead of it the image files' data and hole runs are compared (except where
 * qemu-img reserves space with fallocate and we cannot).
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  check,
  diffFiles,
  fileHoles,
  parseJson,
  qcow2kit,
  qemuImg,
  requireQemu,
  stackTraceLines,
  tempDir,
  withoutFilenames,
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

let seq = 0;

/** Fresh twin directories holding the same backing files. */
async function twins(root: string): Promise<{ q: string; o: string }> {
  const n = seq++;
  const q = join(root, `q${n}`);
  const o = join(root, `o${n}`);
  for (const d of [q, o]) {
    await mkdir(join(d, 'sub'), { recursive: true });
    for (const f of await readdir(join(root, 'fixtures'))) await copyFile(join(root, 'fixtures', f), join(d, f));
  }
  return { q, o };
}

async function filesIn(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) for (const f of await filesIn(join(dir, e.name))) out.push(join(e.name, f));
    else out.push(e.name);
  }
  return out.sort();
}

interface CreateCase {
  args: readonly string[];
  /** Compare the image file's data and hole runs too (not where qemu-img fallocates). */
  sameHoles?: boolean;
  /** The backing file does not exist (-u), so check and info cannot open the image. */
  unopenable?: boolean;
}

/** The image name in `args`: the first operand after the options. */
function imageName(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-f' || a === '-o' || a === '-b' || a === '-F') i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

async function sameCreate(t: TestContext, root: string, c: CreateCase): Promise<void> {
  const { q, o } = await twins(root);
  const what = `create ${c.args.join(' ')}`;
  const qr = await qemuImg(['create', ...c.args], { cwd: q });
  const or = await qcow2kit(['create', ...c.args], { cwd: o });
  assertSameResult(qr, or, what);
  const files = await filesIn(q);
  assert.deepEqual(await filesIn(o), files, `${what}: files left behind`);
  for (const f of files) {
    const diff = await diffFiles(join(q, f), join(o, f));
    assert.equal(diff, undefined, `${what}: ${f}: ${diff}`);
  }
  const img = imageName(c.args);
  if (qr.code !== 0 || img === undefined || !img.endsWith('.qcow2') || !files.includes(img) || c.unopenable === true) return;
  const checked = check(await qemuImg(['check', '--output=json', img], { cwd: o }));
  const report = parseJson(checked.stdout, 'check') as Record<string, unknown>;
  assert.equal(report['check-errors'], 0, what);
  assert.equal(report['corruptions'], undefined, `${what}: ${checked.stdout}`);
  assert.equal(report['leaks'], undefined, `${what}: ${checked.stdout}`);
  const info = async (dir: string): Promise<Record<string, unknown>> => {
    const r = check(await qemuImg(['info', '--output=json', img], { cwd: dir }));
    const j = withoutFilenames(parseJson(r.stdout, 'info')) as Record<string, unknown>;
    delete j['actual-size'];
    return j;
  };
  assert.deepEqual(await info(o), await info(q), `${what}: info`);
  if (c.sameHoles !== false) assert.deepEqual(await fileHoles(join(o, img)), await fileHoles(join(q, img)), `${what}: data and holes`);
  t.diagnostic(`${what}: same`);
}

/**
 * `-f qcow2 -o OPTS img.qcow2 SIZE`, with the image file's holes compared unless it is
 * preallocated: fallocate is qemu-img's alone, and how file systems report fallocated ranges
 * varies; the bytes themselves are compared anyway.
 */
function qcow2(options: string, size: string, extra: readonly string[] = []): CreateCase {
  const preallocated = /preallocation=(falloc|full)/.test(options) && !/data_file=/.test(options);
  return { args: ['-f', 'qcow2', ...(options === '' ? [] : ['-o', options]), ...extra, 'img.qcow2', size], sameHoles: !preallocated };
}

describe('create (interop with qemu-img 7.2)', () => {
  /** A temporary directory with the backing files the cases use; undefined when skipping. */
  const setup = async (t: TestContext): Promise<string | undefined> => {
    if (!requireQemu(t)) return undefined;
    const root = await tempDir(t, 'qcow2kit-create-');
    await mkdir(join(root, 'fixtures'));
    check(await qemuImg(['create', '-q', '-f', 'qcow2', join(root, 'fixtures', 'base.qcow2'), '3M']));
    check(await qemuImg(['create', '-q', '-f', 'raw', join(root, 'fixtures', 'base.raw'), '1000000']));
    return root;
  };

  const groups: Record<string, CreateCase[]> = {
    'compat, sizes and the refcount table': [
      qcow2('', '1M'),
      qcow2('', '0'),
      qcow2('', '1000'),
      qcow2('', '3G'),
      qcow2('compat=0.10', '65537'),
      qcow2('compat=v3', '1M'),
      qcow2('cluster_size=2M', '1P'),
      qcow2('cluster_size=512', '127G'),
    ],
    'cluster sizes and refcount widths, with and without preallocation': [
      ...[512, 1024, 2048, 4096].map((cs) => qcow2(`cluster_size=${cs}`, '10M')),
      ...[1, 2, 4, 8, 16, 32, 64].map((bits) => qcow2(`cluster_size=4096,refcount_bits=${bits},preallocation=metadata`, '9M')),
      ...[1, 8, 64].map((bits) => qcow2(`cluster_size=512,refcount_bits=${bits},preallocation=metadata`, '2M')),
      qcow2('cluster_size=1024,refcount_bits=64,preallocation=metadata', '6M'),
      qcow2('cluster_size=512,preallocation=falloc', '4M'),
      qcow2('cluster_size=2M,preallocation=metadata', '5000M'),
      qcow2('cluster_size=128k,preallocation=metadata,refcount_bits=32', '2G'),
    ],
    'preallocation modes and odd sizes': [
      ...['off', 'metadata', 'falloc', 'full'].flatMap((p) => [qcow2(`preallocation=${p}`, '1000'), qcow2(`preallocation=${p}`, '6M')]),
      qcow2('preallocation=metadata', '2G'),
      qcow2('preallocation=falloc', '0'),
      qcow2('preallocation=full,cluster_size=16k', '3M'),
    ],
    'features: lazy refcounts, extended L2, zstd': [
      qcow2('lazy_refcounts=on', '1M'),
      qcow2('lazy_refcounts=on,preallocation=metadata', '3M'),
      qcow2('extended_l2=on', '1G'),
      qcow2('extended_l2=on,preallocation=metadata', '5000'),
      qcow2('extended_l2=on,cluster_size=16k,preallocation=falloc', '3M'),
      qcow2('compression_type=zstd', '1M'),
      qcow2('compression_type=zstd,lazy_refcounts=on,extended_l2=on,refcount_bits=4', '1M'),
    ],
    'external data files': [
      qcow2('data_file=img.data', '1M'),
      qcow2('data_file=img.data,preallocation=metadata', '3000'),
      qcow2('data_file=img.data,preallocation=falloc', '2M'),
      qcow2('data_file=img.data,preallocation=full', '2M'),
      qcow2('data_file=img.data,data_file_raw=on', '5M'),
      qcow2('data_file=img.data,data_file_raw=on,extended_l2=on', '70000'),
      qcow2('data_file=sub/img.data,cluster_size=512', '1M'),
    ],
    'backing files': [
      { args: ['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'img.qcow2'] },
      qcow2('', '2M', ['-b', 'base.raw', '-F', 'raw']),
      { args: ['-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'img.qcow2'] },
      { args: ['-f', 'qcow2', '-b', '../base.qcow2', '-F', 'qcow2', 'sub/img.qcow2'] },
      qcow2('compat=0.10', '1M', ['-b', 'base.qcow2', '-F', 'qcow2']),
      qcow2('extended_l2=on,preallocation=metadata', '3M', ['-b', 'base.qcow2', '-F', 'qcow2']),
      { ...qcow2('', '1M', ['-u', '-b', 'missing.qcow2', '-F', 'qcow2']), unopenable: true },
      qcow2('backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=512', '1M'),
      { ...qcow2('', '1M', ['-u', '-b', 'x'.repeat(300), '-F', 'vmdk']), unopenable: true },
    ],
    'raw images': [
      { args: ['img.raw', '1M'] },
      { args: ['-f', 'raw', 'img.raw', '1000'] },
      { args: ['-f', 'raw', '-o', 'preallocation=full', 'img.raw', '3M'] },
      { args: ['-f', 'raw', '-o', 'preallocation=falloc', 'img.raw', '3M'], sameHoles: false },
      { args: ['-f', 'raw', '-o', 'preallocation=metadata', 'img.raw', '1M'] },
      { args: ['-f', 'raw', '-o', 'preallocation=bad', 'img.raw', '1M'] },
      { args: ['-f', 'raw', '-o', 'size=1.5k', 'img.raw'] },
    ],
    'validation messages': [
      ...[
        'compat=0.10,lazy_refcounts=on',
        'compat=0.10,extended_l2=on',
        'compat=0.10,refcount_bits=8',
        'compat=0.10,data_file=d.raw',
        'compat=v2,compression_type=zstd',
        'data_file_raw=on',
        'data_file=d.raw,data_file_raw=on,backing_file=base.qcow2,backing_fmt=qcow2',
        'preallocation=metadata,backing_file=base.qcow2,backing_fmt=qcow2',
        'cluster_size=1000',
        'cluster_size=4M',
        'cluster_size=256',
        'extended_l2=on,cluster_size=8k',
        'refcount_bits=3',
        'refcount_bits=128',
        'refcount_bits=0',
        'refcount_bits=-1',
        'refcount_bits=abc',
        'refcount_bits=99999999999999999999',
        'cluster_size=abc',
        'foo=bar',
        'lazy_refcounts=maybe',
        'lazy_refcounts=yes',
        'nolazy_refcounts',
        'compat=foo',
        'preallocation=bad',
        'compression_type=lz4',
        'backing_fmt=qcow2',
        'backing_file=base.qcow2,backing_fmt=foo',
        'extent_size_hint=8G',
        'size=2M',
        'lazy_refcounts=on,,',
        'cluster_size=4k,cluster_size=8k',
        'data_file=nodir/d.raw',
      ].map((opts) => qcow2(opts, '1M')),
      { args: ['-f', 'qcow2', '-o', 'lazy_refcounts=on,', 'img.qcow2', '1M'] },
      { args: ['-f', 'qcow2', 'img.qcow2'] },
      { args: ['-f', 'qcow2', '-b', 'base.qcow2', 'img.qcow2'] },
      { args: ['-f', 'qcow2', '-u', '-b', 'base.qcow2', 'img.qcow2', '1M'] },
      { args: ['-f', 'qcow2', '-b', 'missing', '-F', 'qcow2', 'img.qcow2'] },
      { args: ['-f', 'qcow2', '-b', 'base.raw', '-F', 'qcow2', 'img.qcow2'] },
      { args: ['-f', 'qcow2', '-b', 'img.qcow2', '-F', 'qcow2', 'img.qcow2'] },
      { args: ['-f', 'qcow2', '-F', 'qcow2', 'img.qcow2', '1M'] },
      { args: ['-f', 'raw', '-b', 'base.qcow2', '-F', 'qcow2', 'img.raw', '1M'] },
      { args: ['-f', 'qcow2', 'img.qcow2', '1M', 'extra'] },
      { args: ['-f', 'qcow2'] },
      { args: ['-f', 'qcow2', 'img.qcow2', '1x'] },
      { args: ['-f', 'qcow2', 'img.qcow2', '9E'] },
      { args: ['-f', 'qcow2', 'img.qcow2', '0x10k'] },
      { args: ['-f', 'qcow2', 'img.qcow2', '9007199254740993'] },
      { args: ['-f', 'qcow2', 'img.qcow2', '9223372036854775807'] },
      { args: ['-f', 'qcow2', '-o', 'cluster_size=2M', 'img.qcow2', '7E'] },
      { args: ['-f', 'qcow2', '-o', 'cluster_size=512', '-u', '-b', 'b'.repeat(377), '-F', 'qcow2', 'img.qcow2', '1M'] },
      { args: ['-f', 'qcow2', '-u', '-b', 'b'.repeat(1024), '-F', 'qcow2', 'img.qcow2', '1M'] },
      { args: ['-f', 'qcow2', '-o', 'help'] },
      { args: ['-f', 'qcow2', '-o', 'cluster_size=4k,?', 'img.qcow2'] },
      { args: ['-f', 'raw', '-o', 'help'] },
      { args: ['-f', 'raw', '-o', 'help', 'img.raw'] },
      { args: ['-q', '-f', 'qcow2', 'img.qcow2', '1M'] },
    ],
  };

  for (const [name, cases] of Object.entries(groups)) {
    test(name, async (t) => {
      const root = await setup(t);
      if (root === undefined) return;
      for (const c of cases) await sameCreate(t, root, c);
    });
  }
});
