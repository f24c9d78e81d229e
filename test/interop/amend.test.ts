/**
 * Interop suite for `amend`: each case builds an image with qemu-img/qemu-io, copies it, runs
 * `qemu-img amend` on one copy and ours on the other, and requires the same exit code and
 * messages (program name aside). After a successful amend ours must be clean under
 * `qemu-img check`, read the same as the original (active state and every snapshot), and show
 * the same `qemu-img info` format-specific data as qemu-img's result.
 */
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { check, must, parseJson, qcow2kit, qemuImg, readAt, requireQemu, stackTraceLines, tempDir, type RunResult } from './helpers.js';

function normalize(text: string): string {
  return text.replace(/^qcow2kit: /gm, 'qemu-img: ').replace(/'qcow2kit /g, "'qemu-img ");
}

interface Twin {
  dir: string;
  ours: RunResult;
  qemu: RunResult;
}

/** Run `amend ARGS` on two copies of `image` (in `dir`); compare exit code and output. */
async function amendBoth(dir: string, image: string, args: readonly string[], opts: { sameStdout?: boolean } = {}): Promise<Twin> {
  await copyFile(join(dir, image), join(dir, 'ours.qcow2'));
  await copyFile(join(dir, image), join(dir, 'qemu.qcow2'));
  const qemu = await qemuImg(['amend', ...args, 'qemu.qcow2'], { cwd: dir });
  const ours = await qcow2kit(['amend', ...args, 'ours.qcow2'], { cwd: dir });
  assert.deepEqual(stackTraceLines(ours.stderr), [], `stack trace:\n${ours.stderr}`);
  const strip = (s: string): string => s.replace(/(ours|qemu)\.qcow2/g, 'IMG');
  assert.equal(ours.code, qemu.code, `exit code for amend ${args.join(' ')}\nours: ${ours.stderr}\nqemu: ${qemu.stderr}`);
  assert.equal(strip(normalize(ours.stderr)), strip(qemu.stderr), `stderr for amend ${args.join(' ')}`);
  if (opts.sameStdout !== false) assert.equal(ours.stdout, qemu.stdout, `stdout for amend ${args.join(' ')}`);
  return { dir, ours, qemu };
}

async function formatSpecific(dir: string, image: string): Promise<unknown> {
  const info = parseJson(check(await qemuImg(['info', '--output=json', image], { cwd: dir })).stdout, 'info') as Record<string, unknown>;
  return info['format-specific'];
}

async function snapshotIds(dir: string, image: string): Promise<string[]> {
  const info = parseJson(check(await qemuImg(['info', '--output=json', image], { cwd: dir })).stdout, 'info') as { snapshots?: { id: string }[] };
  return (info.snapshots ?? []).map((s) => s.id);
}

/** Same content as `original`, in the active state and in every snapshot. */
async function assertSameContent(dir: string, image: string, original: string): Promise<void> {
  check(await qemuImg(['compare', original, image], { cwd: dir }));
  for (const id of await snapshotIds(dir, original)) {
    check(await qemuImg(['convert', '-O', 'raw', '-l', `snapshot.id=${id}`, original, `orig-${id}.raw`], { cwd: dir }));
    check(await qemuImg(['convert', '-O', 'raw', '-l', `snapshot.id=${id}`, image, `new-${id}.raw`], { cwd: dir }));
    check(await qemuImg(['compare', '-f', 'raw', '-F', 'raw', `orig-${id}.raw`, `new-${id}.raw`], { cwd: dir }));
  }
}

/** A successful amend: check clean, content kept, format-specific info as qemu-img's. */
async function assertGoodResult(twin: Twin, original: string, opts: { content?: boolean } = {}): Promise<void> {
  const { dir } = twin;
  assert.equal(twin.ours.code, 0, twin.ours.stderr);
  const c = await qemuImg(['check', 'ours.qcow2'], { cwd: dir });
  assert.equal(c.code, 0, `qemu-img check on ours:\n${c.stdout}${c.stderr}`);
  if (opts.content !== false) await assertSameContent(dir, 'ours.qcow2', original);
  assert.deepEqual(await formatSpecific(dir, 'ours.qcow2'), await formatSpecific(dir, 'qemu.qcow2'));
}

async function setup(t: TestContext): Promise<string | undefined> {
  if (!requireQemu(t)) return undefined;
  return tempDir(t, 'qcow2kit-amend-');
}

async function io(dir: string, image: string, ...cmds: string[]): Promise<void> {
  await must('qemu-io', [...cmds.flatMap((c) => ['-c', c]), image], { cwd: dir });
}

async function img(dir: string, ...args: string[]): Promise<void> {
  await must('qemu-img', args, { cwd: dir });
}

describe('amend: compat', () => {
  test('v2 -> v3 upgrade with a snapshot: byte-identical to qemu-img, same progress', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', '-o', 'compat=0.10', 'a.qcow2', '64M');
    await io(dir, 'a.qcow2', 'write -P 1 0 1M', 'write -P 2 5M 64k');
    await img(dir, 'snapshot', '-c', 's1', 'a.qcow2');
    await io(dir, 'a.qcow2', 'write -P 3 0 64k');
    const twin = await amendBoth(dir, 'a.qcow2', ['-p', '-o', 'compat=1.1']);
    await assertGoodResult(twin, 'a.qcow2');
    const [ours, qemu] = [await readAt(join(dir, 'ours.qcow2'), 0, 4 << 20), await readAt(join(dir, 'qemu.qcow2'), 0, 4 << 20)];
    assert.deepEqual(ours, qemu);
  });

  for (const backing of [false, true]) {
    test(`v3 -> v2 downgrade expands zero clusters (${backing ? 'with' : 'without'} backing file, snapshot sharing L2)`, async (t) => {
      const dir = await setup(t);
      if (dir === undefined) return;
      await img(dir, 'create', '-f', 'qcow2', 'base.qcow2', '64M');
      await io(dir, 'base.qcow2', 'write -P 9 0 4M');
      if (backing) await img(dir, 'create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'a.qcow2');
      else await img(dir, 'create', '-f', 'qcow2', 'a.qcow2', '64M');
      // Allocated zero clusters (64k), unallocated zero clusters (1M), data kept by a snapshot.
      await io(dir, 'a.qcow2', 'write -P 1 0 256k', 'write -z 64k 64k', 'write -z 1M 128k', 'write -P 2 2M 64k');
      await img(dir, 'snapshot', '-c', 's1', 'a.qcow2');
      await io(dir, 'a.qcow2', 'write -z -u 3M 64k', 'write -z 2M 64k');
      const twin = await amendBoth(dir, 'a.qcow2', ['-o', 'compat=0.10']);
      // qemu-img 7.2 zeroes a shared preallocated zero cluster in place (damaging s1): compare with the original.
      await assertGoodResult(twin, 'a.qcow2');
    });
  }

  test('downgrade with the L2 table shared by the active L1 and a snapshot', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', 'base.qcow2', '64M');
    await io(dir, 'base.qcow2', 'write -P 9 0 1M');
    await img(dir, 'create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'a.qcow2');
    await io(dir, 'a.qcow2', 'write -z 0 128k', 'write -P 1 128k 64k');
    await img(dir, 'snapshot', '-c', 's1', 'a.qcow2');
    const twin = await amendBoth(dir, 'a.qcow2', ['-p', '-o', 'compat=0.10']);
    await assertGoodResult(twin, 'a.qcow2');
  });

  test('downgrade refusals', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', '-o', 'refcount_bits=8', 'r8.qcow2', '1M');
    await amendBoth(dir, 'r8.qcow2', ['-o', 'compat=0.10']);
    await img(dir, 'create', '-f', 'qcow2', '-o', 'data_file=d.raw', 'df.qcow2', '1M');
    await amendBoth(dir, 'df.qcow2', ['-o', 'compat=0.10']);
    await img(dir, 'create', '-f', 'qcow2', '-o', 'extended_l2=on', 'x.qcow2', '1M');
    await amendBoth(dir, 'x.qcow2', ['-o', 'compat=0.10']);
    await img(dir, 'create', '-f', 'qcow2', '-o', 'compression_type=zstd', 'z.qcow2', '1M');
    await io(dir, 'z.qcow2', 'write -c -P 3 0 64k');
    await amendBoth(dir, 'z.qcow2', ['-o', 'compat=0.10']);
    await img(dir, 'create', '-f', 'qcow2', 's.qcow2', '1M');
    await img(dir, 'snapshot', '-c', 's1', 's.qcow2');
    await img(dir, 'resize', 's.qcow2', '2M');
    await amendBoth(dir, 's.qcow2', ['-o', 'compat=0.10']);
    // Refcount width and downgrade together: the width is changed first, then refused for v2.
    await img(dir, 'create', '-f', 'qcow2', 'v3.qcow2', '1M');
    await amendBoth(dir, 'v3.qcow2', ['-o', 'compat=0.10,refcount_bits=8']);
  });

  test('zstd without compressed clusters downgrades', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', '-o', 'compression_type=zstd', 'z.qcow2', '1M');
    await io(dir, 'z.qcow2', 'write -P 3 0 64k');
    await assertGoodResult(await amendBoth(dir, 'z.qcow2', ['-o', 'compat=0.10']), 'z.qcow2');
  });
});

describe('amend: lazy refcounts', () => {
  test('on, off, and off on a dirty image', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', 'a.qcow2', '64M');
    await io(dir, 'a.qcow2', 'write -P 1 0 128k');
    await assertGoodResult(await amendBoth(dir, 'a.qcow2', ['-o', 'lazy_refcounts=on']), 'a.qcow2');
    await img(dir, 'create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'd.qcow2', '64M');
    const crashed = await qemuImg(['info', 'd.qcow2'], { cwd: dir });
    check(crashed);
    await must('qemu-io', ['-c', 'write -P 1 0 128k', '-c', 'abort', 'd.qcow2'], { cwd: dir }).catch(() => undefined);
    await copyFile(join(dir, 'd.qcow2'), join(dir, 'dirty.qcow2'));
    // The original is dirty: compare contents with a repaired copy.
    await img(dir, 'check', '-r', 'all', 'd.qcow2');
    await assertGoodResult(await amendBoth(dir, 'dirty.qcow2', ['-o', 'lazy_refcounts=off']), 'd.qcow2');
    await assertGoodResult(await amendBoth(dir, 'dirty.qcow2', ['-o', 'compat=0.10']), 'd.qcow2');
  });

  test('v2 refuses lazy_refcounts=on', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', '-o', 'compat=0.10', 'a.qcow2', '1M');
    await amendBoth(dir, 'a.qcow2', ['-o', 'lazy_refcounts=on']);
    await assertGoodResult(await amendBoth(dir, 'a.qcow2', ['-o', 'compat=1.1,lazy_refcounts=on']), 'a.qcow2');
  });
});

describe('amend: refcount_bits', () => {
  async function richImage(dir: string, bits: number): Promise<void> {
    await img(dir, 'create', '-f', 'qcow2', '-o', `refcount_bits=${bits}`, 'a.qcow2', '64M');
    await io(dir, 'a.qcow2', 'write -P 1 0 1M', 'write -c -P 2 4M 64k', 'write -c -P 3 4160k 64k');
    if (bits > 2) {
      await img(dir, 'snapshot', '-c', 's1', 'a.qcow2');
      await io(dir, 'a.qcow2', 'write -P 4 0 64k');
    }
  }
  for (const [from, to] of [[16, 1], [16, 64], [64, 2], [2, 16], [16, 8]] as const) {
    test(`${from} -> ${to} bits`, async (t) => {
      const dir = await setup(t);
      if (dir === undefined) return;
      await richImage(dir, from);
      const twin = await amendBoth(dir, 'a.qcow2', ['-o', `refcount_bits=${to}`], { sameStdout: true });
      if (twin.qemu.code === 0) await assertGoodResult(twin, 'a.qcow2');
    });
  }

  test('-p prints progress from 0 to 100', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await richImage(dir, 16);
    const twin = await amendBoth(dir, 'a.qcow2', ['-p', '-o', 'refcount_bits=4']);
    await assertGoodResult(twin, 'a.qcow2');
  });
});

describe('amend: size and data file', () => {
  test('grow and shrink', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', 'a.qcow2', '64M');
    await io(dir, 'a.qcow2', 'write -P 1 0 1M', 'write -P 2 60M 1M');
    const grown = await amendBoth(dir, 'a.qcow2', ['-o', 'size=128M']);
    await assertGoodResult(grown, 'a.qcow2');
    const shrunk = await amendBoth(dir, 'a.qcow2', ['-o', 'size=32M']);
    await assertGoodResult(shrunk, 'a.qcow2', { content: false });
    check(await qemuImg(['compare', 'ours.qcow2', 'qemu.qcow2'], { cwd: dir }));
    await amendBoth(dir, 'a.qcow2', ['-o', 'size=1000']);
  });

  test('data_file and data_file_raw', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', '-o', 'data_file=d.raw,data_file_raw=on', 'a.qcow2', '1M');
    await io(dir, 'a.qcow2', 'write -P 1 0 64k');
    await assertGoodResult(await amendBoth(dir, 'a.qcow2', ['-o', 'data_file_raw=off']), 'a.qcow2');
    await assertGoodResult(await amendBoth(dir, 'a.qcow2', ['-o', 'data_file=d.raw']), 'a.qcow2');
    await img(dir, 'create', '-f', 'qcow2', '-o', 'data_file=e.raw', 'b.qcow2', '1M');
    await amendBoth(dir, 'b.qcow2', ['-o', 'data_file_raw=on']);
    await img(dir, 'create', '-f', 'qcow2', 'c.qcow2', '1M');
    await amendBoth(dir, 'c.qcow2', ['-o', 'data_file=x.raw']);
  });
});

describe('amend: refused options and arguments', () => {
  test('same messages and exit codes as qemu-img', async (t) => {
    const dir = await setup(t);
    if (dir === undefined) return;
    await img(dir, 'create', '-f', 'qcow2', '-b', 'a-base.qcow2', '-F', 'qcow2', 'a.qcow2', '64M').catch(async () => undefined);
    await img(dir, 'create', '-f', 'qcow2', 'a-base.qcow2', '64M');
    await img(dir, 'create', '-f', 'qcow2', '-b', 'a-base.qcow2', '-F', 'qcow2', 'a.qcow2', '64M');
    const cases = [
      'cluster_size=4096', 'extended_l2=on', 'preallocation=full', 'compression_type=zstd', 'encryption=on',
      'encrypt.format=luks', 'encrypt.new-secret=x', 'backing_file=other', 'backing_file=a-base.qcow2',
      'backing_file=a-base.qcow2,backing_fmt=qcow2', 'backing_fmt=raw', 'foo=bar', 'compat=2', 'refcount_bits=3',
      'refcount_bits=0', 'refcount_bits=128', 'lazy_refcounts=maybe', 'size=abc', 'cluster_size=1k,foo=1', 'help',
    ];
    for (const o of cases) await amendBoth(dir, 'a.qcow2', ['-o', o]);
    for (const args of [['-o', 'compat=1.1', '-t', 'foo'], ['-f', 'qcow2', '-o', 'help'], ['-o', '']]) {
      await amendBoth(dir, 'a.qcow2', args);
    }
    const noOpts = await qcow2kit(['amend', 'a.qcow2'], { cwd: dir });
    const qemuNoOpts = await qemuImg(['amend', 'a.qcow2'], { cwd: dir });
    assert.deepEqual({ code: noOpts.code, stderr: normalize(noOpts.stderr) }, { code: qemuNoOpts.code, stderr: qemuNoOpts.stderr });
  });
});
