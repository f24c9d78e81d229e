/**
 * Interop suite for `commit` and `rebase`: backing chains made by qemu-img/qemu-io at test time
 * (mixed cluster sizes, compressed clusters, extended L2, raw layers) are copied twice; qemu-img
 * runs a command on one copy and qcow2kit the same command on the other. Every image of the two
 * copies must then compare equal with `qemu-img compare` (through its own chain), name the same
 * backing file and format, and pass `qemu-img check`; messages and exit codes must match, and
 * so must progress output where qemu-img's is deterministic.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  check,
  must,
  parseJson,
  qcow2kit,
  qemuImg,
  qemuIo,
  qemuIoWrite,
  randomBytes,
  requireQemu,
  stackTraceLines,
  tempDir,
  writeMixedRawFile,
  writeRawFile,
  type RunResult,
} from './helpers.js';

const MiB = 1024 * 1024;

function normalize(text: string): string {
  return text.replace(/^qcow2kit: /gm, 'qemu-img: ').replace(/'qcow2kit --help'/g, "'qemu-img --help'");
}

/** How a command's stdout is compared. */
type StdoutCheck = 'exact' | 'progress';

/** A commit -p progress run: starts at 0, ends at 100 and a newline (its steps depend on timing). */
function assertProgressShape(stdout: string, trailer: string, what: string): void {
  assert.match(stdout, /^ {4}\(0\.00\/100%\)\r/, `${what}: progress starts at 0`);
  assert.ok(stdout.endsWith(`    (100.00/100%)\r\n${trailer}`), `${what}: progress ends at 100:\n${JSON.stringify(stdout.slice(-80))}`);
  for (const line of stdout.slice(0, stdout.length - trailer.length - 1).split('\r').filter((l) => l !== '')) {
    assert.match(line, /^ {4}\(\d{1,3}\.\d\d\/100%\)$/, `${what}: progress line`);
  }
}

/**
 * Runs `args` with qemu-img in a copy of `chain` and with qcow2kit in another copy, then compares
 * results and every image. Returns qemu-img's result.
 */
async function sameOnCopies(t: TestContext, chain: string, args: readonly string[], stdout: StdoutCheck = 'exact'): Promise<RunResult> {
  // Each case cleans up at once: a test runs many cases and disks here are small.
  const root = await mkdtemp(join(tmpdir(), 'qcow2kit-chain-'));
  try {
    return await compareOnCopies(root, chain, args, stdout);
  } finally {
    if (process.env['QCOW2KIT_KEEP_TMP'] === '1') t.diagnostic(`kept ${root}`);
    else await rm(root, { recursive: true, force: true });
  }
}

async function compareOnCopies(root: string, chain: string, args: readonly string[], stdout: StdoutCheck): Promise<RunResult> {
  const q = join(root, 'q');
  const o = join(root, 'o');
  await cp(chain, q, { recursive: true });
  await cp(chain, o, { recursive: true });
  const qemu = await qemuImg(args, { cwd: q });
  const ours = await qcow2kit(args, { cwd: o });
  const what = args.join(' ');
  assert.deepEqual(stackTraceLines(ours.stderr), [], `${what}: stack trace:\n${ours.stderr}`);
  assert.deepEqual({ code: ours.code, stderr: normalize(ours.stderr) }, { code: qemu.code, stderr: qemu.stderr }, what);
  if (stdout === 'exact') assert.equal(ours.stdout, qemu.stdout, `${what}: stdout`);
  else assertProgressShape(ours.stdout, qemu.stdout.slice(qemu.stdout.lastIndexOf('\n', qemu.stdout.length - 2) + 1), what);

  for (const rel of await listImages(q)) {
    const qi = join(q, rel);
    const oi = join(o, rel);
    const cmp = await qemuImg(['compare', qi, oi]);
    assert.deepEqual([cmp.code, cmp.stdout], [0, 'Images are identical.\n'], `${what}: ${rel} differs from qemu-img's:\n${cmp.stdout}${cmp.stderr}`);
    const [iq, io] = await Promise.all([qi, oi].map(async (p) => parseJson(check(await qemuImg(['info', '--output=json', p])).stdout, p) as Record<string, unknown>));
    for (const key of ['format', 'virtual-size', 'backing-filename', 'backing-filename-format']) {
      assert.deepEqual(io![key], iq![key], `${what}: ${rel}: ${key}`);
    }
    if (io!['format'] === 'qcow2') {
      // What each layer itself allocates (qemu-io's map looks at one layer only). Not for
      // extended L2 images: QEMU allocates only the subclusters a write touches, our write
      // path allocates the whole cluster (same content; a library difference, reported).
      const extendedL2 = (iq!['format-specific'] as { data?: { 'extended-l2'?: boolean } } | undefined)?.data?.['extended-l2'] === true;
      if (!extendedL2) {
        const [mq, mo] = await Promise.all([qi, oi].map(async (p) => check(await qemuIo(['-r', '-c', 'map', p])).stdout));
        assert.equal(mo, mq, `${what}: ${rel}: allocation in the layer`);
      }
      const c = await qemuImg(['check', oi]);
      assert.equal(c.code, 0, `${what}: qemu-img check ${rel}:\n${c.stdout}${c.stderr}`);
    }
  }
  return qemu;
}

/** Runs `fn` over `items`, a few at a time. */
async function pool<T>(items: readonly T[], fn: (item: T) => Promise<void>, width = 3): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

async function listImages(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...(await listImages(join(dir, e.name), `${prefix}${e.name}/`)));
    else if (/\.(qcow2|raw)$/.test(e.name)) out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

/**
 * Chain A in `dir`: base.qcow2 (10 MiB, 16 KiB clusters, mostly compressed) <- mid.qcow2
 * (20 MiB, 4 KiB clusters) <- top.qcow2 (30 MiB, 64 KiB clusters), and nb.qcow2 (25 MiB,
 * 512-byte clusters, compressed) sharing part of base's content.
 */
async function chainA(dir: string): Promise<void> {
  const p = (n: string): string => join(dir, n);
  await writeMixedRawFile(p('src.raw'), 10 * MiB, 11);
  await must('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=16k', p('src.raw'), p('base.qcow2')]);
  await must('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=512', p('src.raw'), p('nb.qcow2')]);
  await must('qemu-img', ['resize', p('nb.qcow2'), '25M']);
  await qemuIoWrite(p('nb.qcow2'), ['write -P 0x21 1M 64k', 'write -P 0x22 12M 1M', 'write -z 300k 200k']);
  await must('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', p('mid.qcow2'), '20M']);
  await qemuIoWrite(p('mid.qcow2'), ['write -P 2 1M 1M', 'write -c -P 0x12 3M 64k', 'write -P 2 15M 1M', 'write -z 4M 512k', 'discard 6M 64k', 'write -P 0x13 9539584 3k']);
  await must('qemu-img', ['create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', p('top.qcow2'), '30M']);
  await qemuIoWrite(p('top.qcow2'), ['write -P 3 3M 1M', 'write -z 5M 64k', 'write -c -P 0x31 7M 128k', 'write -P 3 25M 1M', 'write -P 0x32 9444352 1k', 'discard 8M 64k']);
}

/**
 * Chain B in `dir`: base.raw (6 MiB, random) <- mid.qcow2 (12 MiB, 4 KiB clusters, compressed
 * clusters) <- top.qcow2 (16 MiB, 128 KiB clusters with extended L2), and nb.qcow2 (512-byte
 * clusters, compressed copy of base.raw with a change).
 */
async function chainB(dir: string): Promise<void> {
  const p = (n: string): string => join(dir, n);
  await writeRawFile(p('base.raw'), 6 * MiB, [{ offset: 0, data: randomBytes(5, 6 * MiB) }]);
  await must('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.raw', '-F', 'raw', p('mid.qcow2'), '12M']);
  await qemuIoWrite(p('mid.qcow2'), ['write -c -P 5 0 64k', 'write -c -P 6 7M 128k', 'write -P 7 2M 3k', 'write -z 3M 8k', 'write -P 8 11M 1M']);
  await must('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', '-b', 'mid.qcow2', '-F', 'qcow2', p('top.qcow2'), '16M']);
  await qemuIoWrite(p('top.qcow2'), ['write -P 9 1k 2k', 'write -z 5M 12k', 'write -P 10 7M 4k', 'write -P 11 15M 100k', 'write -c -P 12 9M 128k']);
  await must('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=512', p('base.raw'), p('nb.qcow2')]);
  await qemuIoWrite(p('nb.qcow2'), ['write -P 13 1M 64k']);
}

async function chainDir(t: TestContext, build: (dir: string) => Promise<void>): Promise<string> {
  const dir = await tempDir(t, 'qcow2kit-chain-src-');
  await build(dir);
  return dir;
}

type Case = readonly string[] | { args: readonly string[]; stdout?: StdoutCheck; code?: number };

/** Runs the cases on copies of `chain`, a few at a time. */
async function cases(t: TestContext, chain: string, list: readonly Case[]): Promise<void> {
  await pool(list, async (c) => {
    const { args, stdout = 'exact', code } = 'args' in c ? c : { args: c as readonly string[] };
    const r = await sameOnCopies(t, chain, args, stdout);
    if (code !== undefined) assert.equal(r.code, code, `${args.join(' ')}: exit code`);
  });
}

describe('commit matches qemu-img', () => {
  test('into the backing file, emptying the overlay; -d; -q', async (t) => {
    if (!requireQemu(t)) return;
    const a = await chainDir(t, chainA);
    assert.equal((await sameOnCopies(t, a, ['commit', 'top.qcow2'])).stdout, 'Image committed.\n');
    await cases(t, a, [['commit', '-d', 'top.qcow2'], ['commit', '-q', 'mid.qcow2'], ['commit', '-f', 'qcow2', '-t', 'none', 'top.qcow2']]);
  });

  test('-b: into a base further down (grows it; implies -d), also from another directory', async (t) => {
    if (!requireQemu(t)) return;
    const a = await chainDir(t, chainA);
    await cases(t, a, [['commit', '-b', 'base.qcow2', 'top.qcow2'], ['commit', '-b', 'mid.qcow2', 'top.qcow2']]);
    const outer = await tempDir(t, 'qcow2kit-chain-outer-');
    await cp(a, join(outer, 'sub'), { recursive: true });
    await cases(t, outer, [['commit', '-b', 'base.qcow2', 'sub/top.qcow2'], ['commit', 'sub/top.qcow2']]);
  });

  test('chains with raw layers, extended L2 and compressed clusters', async (t) => {
    if (!requireQemu(t)) return;
    const b = await chainDir(t, chainB);
    await cases(t, b, [['commit', 'top.qcow2'], ['commit', '-b', 'base.raw', 'top.qcow2'], ['commit', 'mid.qcow2']]);
  });

  test('-p progress, and errors', async (t) => {
    if (!requireQemu(t)) return;
    const a = await chainDir(t, chainA);
    await cases(t, a, [
      { args: ['commit', '-p', 'top.qcow2'], stdout: 'progress', code: 0 },
      { args: ['commit', '-p', '-b', 'base.qcow2', 'top.qcow2'], stdout: 'progress', code: 0 },
      ...[
        ['commit', '-b', 'nonexistent', 'top.qcow2'],
        ['commit', '-b', 'top.qcow2', 'top.qcow2'],
        ['commit', 'base.qcow2'],
        ['commit', '-p', 'base.qcow2'],
        ['commit'],
        ['commit', 'a', 'b'],
        ['commit', '-t', 'foo', 'top.qcow2'],
        ['commit', '-r', 'x', 'top.qcow2'],
        ['commit', 'nonexistent.qcow2'],
        ['commit', '-Z', 'top.qcow2'],
        ['commit', 'src.raw'],
      ].map((args) => ({ args, code: 1 })),
    ]);
  });
});

describe('rebase matches qemu-img', () => {
  test('safe mode: onto another image, onto a layer of the chain, detached; with progress', async (t) => {
    if (!requireQemu(t)) return;
    const a = await chainDir(t, chainA);
    await cases(t, a, [
      ['rebase', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-p', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-p', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-p', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-p', '-b', '', 'top.qcow2'],
      ['rebase', '-b', 'nb.qcow2', '-F', 'qcow2', 'mid.qcow2'],
      ['rebase', '-b', 'src.raw', '-F', 'raw', 'mid.qcow2'],
      // The image read as raw: a different content, the same for both tools.
      ['rebase', '-b', 'base.qcow2', '-F', 'raw', 'top.qcow2'],
    ]);
  });

  test('from another directory: names relative to the image', async (t) => {
    if (!requireQemu(t)) return;
    const outer = await tempDir(t, 'qcow2kit-chain-outer-');
    await cp(await chainDir(t, chainA), join(outer, 'sub'), { recursive: true });
    await cases(t, outer, [
      ['rebase', '-p', '-b', 'nb.qcow2', '-F', 'qcow2', 'sub/top.qcow2'],
      // qemu-img looks for 'sub/base.qcow2' relative to sub/ in the chain, misses it, and
      // compares everything: same progress here.
      ['rebase', '-p', '-b', 'base.qcow2', '-F', 'qcow2', 'sub/top.qcow2'],
      ['rebase', '-b', 'nonexistent', '-F', 'qcow2', 'sub/top.qcow2'],
    ]);
  });

  test('chains with raw layers, extended L2 and compressed clusters', async (t) => {
    if (!requireQemu(t)) return;
    const b = await chainDir(t, chainB);
    // Progress on extended L2 overlays is left out: QEMU splits unallocated runs where a
    // cluster has allocated subclusters, which changes the number of steps.
    await cases(t, b, [
      ['rebase', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-b', 'base.raw', '-F', 'raw', 'top.qcow2'],
      ['rebase', '-b', '', 'top.qcow2'],
      ['rebase', '-p', '-b', 'nb.qcow2', '-F', 'qcow2', 'mid.qcow2'],
      ['rebase', '-b', 'mid.qcow2', '-F', 'qcow2', 'nb.qcow2'],
    ]);
  });

  test('unsafe mode only rewrites the reference', async (t) => {
    if (!requireQemu(t)) return;
    const a = await chainDir(t, chainA);
    await cases(t, a, [
      ['rebase', '-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-u', '-p', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-u', '-b', '', 'top.qcow2'],
    ]);
    // A missing old backing file is no obstacle with -u.
    const moved = await tempDir(t, 'qcow2kit-chain-moved-');
    await cp(join(a, 'top.qcow2'), join(moved, 'top.qcow2'));
    await cp(join(a, 'nb.qcow2'), join(moved, 'nb.qcow2'));
    await sameOnCopies(t, moved, ['rebase', '-u', '-b', 'nb.qcow2', '-F', 'qcow2', 'top.qcow2']);
  });

  test('errors: backing format required, missing files, bad options', async (t) => {
    if (!requireQemu(t)) return;
    const a = await chainDir(t, chainA);
    const list = [
      // Safe mode copies first, then fails to write the header: content stays the same.
      ['rebase', '-b', 'nb.qcow2', 'top.qcow2'],
      ['rebase', '-p', '-b', 'nb.qcow2', 'top.qcow2'],
      ['rebase', '-u', '-b', 'nb.qcow2', 'top.qcow2'],
      ['rebase', '-u', '-p', '-b', 'foo', 'top.qcow2'],
      ['rebase', '-b', 'nonexistent', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-p', '-b', 'nonexistent', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', '-b', 'nb.qcow2', '-F', 'foo', 'top.qcow2'],
      ['rebase', '-F', 'qcow2', 'top.qcow2'],
      ['rebase', 'top.qcow2'],
      ['rebase', '-b', 'nb.qcow2'],
      ['rebase', '-t', 'foo', '-b', 'x', 'top.qcow2'],
      ['rebase', '-T', 'foo', '-b', 'x', 'top.qcow2'],
      ['rebase', '-u', '-b', 'x', '-F', 'raw', 'src.raw'],
      ['rebase', '-u', '-b', 'x', '-F', 'raw', '-f', 'raw', 'src.raw'],
      ['rebase', '-b', 'x', '-F', 'raw', 'nonexistent.qcow2'],
      ['rebase', '-u', '-b', 'x'.repeat(1100), '-F', 'raw', 'top.qcow2'],
      ['rebase', '-Z', 'top.qcow2'],
    ];
    await cases(t, a, list.map((args) => ({ args, code: 1 })));
  });
});
