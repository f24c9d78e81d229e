/**
 * Interop suite for `check` (issue #4): images made by qemu-img/qemu-io, damaged by patching
 * bytes the way QEMU's iotests do (their qcow2.py / poke_file), then checked and repaired by both
 * tools. For every situation of iotests 039, 060, 061, 080, 108, 112, 138 and 261 reproduced
 * here, qcow2kit must print what qemu-img 7.2 prints (stdout exactly, stderr with the program
 * name swapped) and exit with the same code, before and after repair; and after our `-r all`,
 * `qemu-img check` must judge the image as it judges the image qemu-img repaired itself.
 * The few places where we deliberately do better than qemu-img 7.2 are tested as such.
 */
import assert from 'node:assert/strict';
import { copyFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { createLuksQcow2, must, patchFile, qcow2kit, qemuImg, readAt, requireQemu, tempDir, type RunResult } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Big-endian bytes of a u64 given as hex (exact for any value). */
function be64(hex: string): Uint8Array {
  const v = BigInt(`0x${hex}`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v);
  return out;
}

function be32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

function be16(n: number): Uint8Array {
  const out = new Uint8Array(2);
  new DataView(out.buffer).setUint16(0, n);
  return out;
}

async function peek64(path: string, offset: number): Promise<number> {
  const b = await readAt(path, offset, 8);
  return Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0));
}

async function peek32(path: string, offset: number): Promise<number> {
  const b = await readAt(path, offset, 4);
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0);
}

/** qcow2.py-style patch: write `bytes` at `offset` of the image. */
async function poke(dir: string, image: string, offset: number, bytes: Uint8Array): Promise<void> {
  await patchFile(join(dir, image), offset, bytes);
}

/** `qemu-img create -f qcow2 [-o opts] image size` then qemu-io commands, in `dir`. */
async function make(dir: string, image: string, size: string, opts = '', io: readonly string[] = []): Promise<void> {
  await must('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts === '' ? [] : ['-o', opts]), image, size], { cwd: dir });
  for (const c of io) await must('qemu-io', ['-c', c, image], { cwd: dir });
}

/** A qemu-io process killed after writing: lazy refcounts leave the dirty bit set (iotest 039). */
async function crashAfterWrite(dir: string, image: string): Promise<void> {
  await must('qemu-io', ['-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', image], { cwd: dir }).catch(() => undefined);
}

type Mode = 'check' | 'json' | 'leaks' | 'all';

const MODE_ARGS: Readonly<Record<Mode, readonly string[]>> = {
  check: [], json: ['--output=json'], leaks: ['-r', 'leaks'], all: ['-r', 'all'],
};

/** What both tools did for one mode. */
interface Compared {
  qemu: RunResult;
  ours: RunResult;
  /** For repairs: `qemu-img check` of the image qemu-img repaired, and of the one we repaired. */
  afterQemu?: RunResult;
  afterOurs?: RunResult;
}

function normalize(text: string, copy: string, image: string): string {
  return text.replaceAll(copy, image).replace(/^qemu-img: /gm, 'qcow2kit: ');
}

/**
 * Run `check` in `mode` with both tools (on separate copies when repairing) and assert identical
 * output and exit codes; for repairs also run `qemu-img check` on both results.
 */
async function compare(dir: string, image: string, mode: Mode): Promise<Compared> {
  const args = MODE_ARGS[mode];
  const repairing = mode === 'leaks' || mode === 'all';
  const qCopy = repairing ? `q-${mode}-${image}` : image;
  const kCopy = repairing ? `k-${mode}-${image}` : image;
  if (repairing) {
    await copyFile(join(dir, image), join(dir, qCopy));
    await copyFile(join(dir, image), join(dir, kCopy));
  }
  const qemu = await qemuImg(['check', ...args, qCopy], { cwd: dir });
  const ours = await qcow2kit(['check', ...args, kCopy], { cwd: dir });
  const what = `check ${args.join(' ')} ${image}`;
  assert.equal(normalize(ours.stdout, kCopy, image), normalize(qemu.stdout, qCopy, image), `${what}: stdout`);
  assert.equal(normalize(ours.stderr, kCopy, image), normalize(qemu.stderr, qCopy, image), `${what}: stderr`);
  assert.equal(ours.code, qemu.code, `${what}: exit code`);
  if (!repairing) return { qemu, ours };
  const afterQemu = await qemuImg(['check', qCopy], { cwd: dir });
  const afterOurs = await qemuImg(['check', kCopy], { cwd: dir });
  assert.equal(afterOurs.code, afterQemu.code, `qemu-img check after ${what}:\n${afterOurs.stdout}${afterOurs.stderr}`);
  // Where a repair puts things may differ (qemu-img rewrites persistent bitmaps on close).
  const verdict = (r: RunResult, copy: string): string => normalize(r.stdout, copy, image).replace(/^Image end offset: \d+\n/m, '');
  assert.equal(verdict(afterOurs, kCopy), verdict(afterQemu, qCopy), `qemu-img check after ${what}`);
  return { qemu, ours, afterQemu, afterOurs };
}

/** Expected exit codes per mode (checked on both tools, since they agree), and after repair. */
interface Expected {
  check: number;
  /** Also compare `--output=json`. */
  json?: boolean;
  leaks?: number;
  all?: number;
  /** `qemu-img check` exit code after `-r all` (default 0 when `all` is 0). */
  afterAll?: number;
}

async function agree(t: TestContext, dir: string, image: string, want: Expected): Promise<void> {
  await t.test('check', async () => {
    assert.equal((await compare(dir, image, 'check')).ours.code, want.check);
  });
  if (want.json === true) {
    await t.test('check --output=json', async () => {
      assert.equal((await compare(dir, image, 'json')).ours.code, want.check);
    });
  }
  if (want.leaks !== undefined) {
    await t.test('check -r leaks', async () => {
      assert.equal((await compare(dir, image, 'leaks')).ours.code, want.leaks);
    });
  }
  if (want.all !== undefined) {
    await t.test('check -r all', async () => {
      const r = await compare(dir, image, 'all');
      assert.equal(r.ours.code, want.all);
      assert.equal(r.afterOurs?.code, want.afterAll ?? (want.all === 0 ? 0 : r.afterQemu?.code));
    });
  }
}

/** A scenario: build and damage an image in `dir`, then say what both tools must answer. */
interface Scenario {
  name: string;
  build(dir: string, image: string): Promise<void>;
  want: Expected;
}

const L1 = 0x30000;
const L2 = 0x40000;
const REFTABLE = 0x10000;
const REFBLOCK = 0x20000;

function suite(title: string, scenarios: readonly Scenario[]): void {
  describe(title, () => {
    for (const s of scenarios) {
      test(s.name, async (t) => {
        if (!requireQemu(t)) return;
        const dir = await tempDir(t, 'qcow2kit-check-');
        await s.build(dir, 'img.qcow2');
        await agree(t, dir, 'img.qcow2', s.want);
      });
    }
  });
}

suite('clean images', [
  {
    name: 'data, zeros, compressed clusters and a snapshot',
    build: async (dir, img) => {
      await make(dir, img, '1G', '', ['write -c -P 1 0 64k', 'write -P 2 64k 64k', 'write -c -P 3 128k 64k', 'write -P 4 100M 1M', 'write -z 60M 1M']);
      await must('qemu-img', ['snapshot', '-c', 's1', img], { cwd: dir });
      await must('qemu-io', ['-c', 'write -P 5 0 128k', img], { cwd: dir });
    },
    want: { check: 0, json: true, leaks: 0, all: 0 },
  },
  {
    name: '1/800 clusters allocated: printf rounds the 0.125% tie to even',
    build: (dir, img) => make(dir, img, String(800 * 64 * KiB), '', ['write 0 64k']),
    want: { check: 0 },
  },
  {
    name: 'v2 image with 512-byte clusters',
    build: (dir, img) => make(dir, img, '64M', 'compat=0.10,cluster_size=512', ['write -P 1 0 300k']),
    want: { check: 0 },
  },
  {
    name: 'extended L2 entries',
    build: (dir, img) => make(dir, img, '64M', 'extended_l2=on,cluster_size=128k', ['write -P 1 0 4k', 'write -P 2 200k 64k', 'write -z 1M 128k']),
    want: { check: 0 },
  },
  {
    name: 'persistent bitmaps',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 1M']);
      await must('qemu-img', ['bitmap', '--add', img, 'b0'], { cwd: dir });
      await must('qemu-img', ['bitmap', '--add', '-g', '65536', img, 'b1'], { cwd: dir });
    },
    want: { check: 0, all: 0 },
  },
  {
    name: 'external data file',
    build: (dir, img) => make(dir, img, '16M', 'data_file=img.raw', ['write -P 1 0 1M']),
    want: { check: 0, all: 0 },
  },
]);

suite('iotest 039: lazy refcounts and the dirty bit', [
  {
    name: 'a writer killed with the dirty bit set',
    build: async (dir, img) => {
      await make(dir, img, '128M', 'lazy_refcounts=on');
      await crashAfterWrite(dir, img);
    },
    want: { check: 2, json: true, leaks: 1, all: 0 },
  },
]);

suite('iotest 060: overlapping and corrupt metadata', [
  {
    name: 'L2 reference into the L1 table (repair refused, image marked corrupt)',
    build: async (dir, img) => {
      await make(dir, img, '64M');
      await poke(dir, img, L1, be64('8000000000030000'));
    },
    want: { check: 2, leaks: 2, all: 1, afterAll: 2 },
  },
  {
    name: 'data cluster on the refcount block',
    build: async (dir, img) => {
      await make(dir, img, '64M');
      await truncate(join(dir, img), L2 + 64 * KiB);
      await poke(dir, img, L1, be64('8000000000040000'));
      await poke(dir, img, REFBLOCK + 8, be16(1));
      await poke(dir, img, L2, be64('8000000000020000'));
    },
    want: { check: 2, leaks: 1, all: 0 },
  },
  {
    name: 'data cluster on an inactive L2 table',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write -P 1 0 512']);
      await must('qemu-img', ['snapshot', '-c', 'foo', img], { cwd: dir });
      await must('qemu-io', ['-c', 'write -P 2 0 512', img], { cwd: dir });
      await poke(dir, img, 0x80000, be64('8000000000040000'));
    },
    want: { check: 2, leaks: 2, all: 0 },
  },
  {
    name: 'unaligned L2 table offset in the L1 table',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 64k']);
      await poke(dir, img, L1, be64('8000000000040200'));
    },
    want: { check: 2, leaks: 2, all: 2 },
  },
  {
    name: 'unaligned data cluster offset in an L2 table',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 64k']);
      await poke(dir, img, L2, be64('8000000000050200'));
    },
    want: { check: 2, leaks: 1, all: 2 },
  },
  {
    name: 'unaligned preallocated zero cluster (repaired into a zero cluster)',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 64k']);
      await poke(dir, img, L2, be64('8000000000050201'));
    },
    want: { check: 2, all: 0 },
  },
  {
    name: 'reserved bits in L1 and L2 entries',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 128k']);
      await poke(dir, img, L1, be64('8100000000040000'));
      await poke(dir, img, L2 + 8, be64('8000000000060002'));
    },
    want: { check: 2, leaks: 2, all: 2 },
  },
  {
    name: 'two guest clusters sharing one host cluster with refcount 1',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 64k']);
      await poke(dir, img, L2 + 8, be64('8000000000050000'));
    },
    want: { check: 2, json: true, leaks: 2, all: 0 },
  },
  {
    name: 'corrupt bit on a consistent image (cleared by a repair)',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 64k']);
      await poke(dir, img, 72, be64('2'));
    },
    want: { check: 0, leaks: 0, all: 0 },
  },
  {
    name: 'COPIED flag on a compressed cluster',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write -c -P 5 0 64k']);
      const e = await readAt(join(dir, img), L2, 8);
      e[0] = (e[0] ?? 0) | 0x80;
      await poke(dir, img, L2, e);
    },
    want: { check: 2, leaks: 2, all: 2 },
  },
  {
    name: 'leaked clusters and a refcount too high',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 64k']);
      await truncate(join(dir, img), 0x70000);
      await poke(dir, img, REFBLOCK + 12, be16(1));
      await poke(dir, img, REFBLOCK + 10, be16(3));
    },
    want: { check: 2, json: true, leaks: 0, all: 0 },
  },
]);

suite('iotest 061: images amend produced', [
  {
    // qemu-img 7.2's downgrade leaves COPIED set on clusters shared with the snapshot.
    name: 'downgraded to v2 with zero clusters and a snapshot, then upgraded again',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write -P 1 0 128k', 'write -z 64k 64k', 'write -z 1M 64k']);
      await must('qemu-img', ['snapshot', '-c', 's', img], { cwd: dir });
      await must('qemu-io', ['-c', 'write -z 0 64k', img], { cwd: dir });
      await must('qemu-img', ['amend', '-o', 'compat=0.10', img], { cwd: dir });
      await must('qemu-img', ['amend', '-o', 'compat=1.1', img], { cwd: dir });
    },
    want: { check: 2, leaks: 0, all: 0 },
  },
  {
    name: 'dirty image amended to lazy_refcounts=off',
    build: async (dir, img) => {
      await make(dir, img, '64M', 'lazy_refcounts=on');
      await crashAfterWrite(dir, img);
      await must('qemu-img', ['amend', '-o', 'lazy_refcounts=off', img], { cwd: dir });
    },
    want: { check: 0 },
  },
  {
    name: 'unknown compatible and autoclear bits (autoclear cleared by a repair)',
    build: async (dir, img) => {
      await make(dir, img, '64M', '', ['write 0 64k']);
      await poke(dir, img, 80, be64('8000000000000000'));
      await poke(dir, img, 88, be64('8000000000000001'));
    },
    want: { check: 0, leaks: 0, all: 0 },
  },
]);

suite('iotest 080: header input validation', [
  { name: 'huge header size', build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, 100, be32(0xffffffff)); }, want: { check: 1, all: 1 } },
  { name: 'huge refcount table size', build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, 56, be32(0xffffffff)); }, want: { check: 1, all: 1 } },
  { name: 'misaligned refcount table', build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, 48, be64('1234567890abcdef')); }, want: { check: 1, all: 1 } },
  { name: 'too many snapshots', build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, 60, be32(0x7fffffff)); }, want: { check: 1, all: 1 } },
  { name: 'invalid L1 table size', build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, 36, be32(0x7fffffff)); }, want: { check: 1, all: 1 } },
  { name: 'invalid backing file size', build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, 8, be64('1000')); await poke(d, i, 16, be32(0xffffffff)); }, want: { check: 1 } },
  {
    name: 'L2 entry with a huge physical offset',
    build: async (d, i) => { await make(d, i, '64M', '', ['write 0 512']); await poke(d, i, L2, be64('800000ffffff0000')); },
    want: { check: 2, leaks: 2, all: 2 },
  },
  {
    name: 'invalid snapshot L1 table offset',
    build: async (d, i) => {
      await make(d, i, '64M', '', ['write 0 512']);
      await must('qemu-img', ['snapshot', '-c', 'test', i], { cwd: d });
      await poke(d, i, 0x70000, be64('400200'));
    },
    want: { check: 2, leaks: 2, all: 2 },
  },
  {
    name: 'invalid snapshot L1 table size',
    build: async (d, i) => {
      await make(d, i, '64M', '', ['write 0 512']);
      await must('qemu-img', ['snapshot', '-c', 'test', i], { cwd: d });
      await poke(d, i, 0x70008, be32(0x10000000));
    },
    want: { check: 2, leaks: 2, all: 2 },
  },
]);

suite('iotest 108: repairs the on-disk refcount structure cannot do', [
  {
    name: 'no refcount table at all',
    build: async (d, i) => {
      await make(d, i, '64M', '', ['write -P 42 0 64k']);
      await poke(d, i, 0x30, be64('0'));
      await poke(d, i, 0x38, be32(0));
    },
    want: { check: 2, json: true, leaks: 1, all: 0 },
  },
  {
    name: 'unreferenced data cluster in a new refcount block area (512-byte clusters)',
    build: async (d, i) => {
      await make(d, i, '64M', 'cluster_size=512', ['write 0 0x1b200']);
      await poke(d, i, 0x1ccc8, be64('8000000000020000'));
      await truncate(join(d, i), 0x20200);
      await must('qemu-io', ['-f', 'raw', '-c', 'write -P 42 128k 512', i], { cwd: d });
    },
    want: { check: 2, all: 0 },
  },
  {
    name: 'refcount block beyond the image end, otherwise clean',
    build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, REFTABLE + 8, be64('100000')); await poke(d, i, REFBLOCK + 0x20, be16(1)); },
    want: { check: 2, leaks: 2, all: 0 },
  },
  {
    name: 'refcount block beyond the image end, unallocated',
    build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, REFTABLE + 8, be64('100000')); },
    want: { check: 2, leaks: 2, all: 0 },
  },
  {
    name: 'signed overflow after the refcount block',
    build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, REFTABLE + 8, be64('7fffffffffff0000')); },
    want: { check: 2, leaks: 2, all: 0 },
  },
  {
    name: 'unsigned overflow after the refcount block',
    build: async (d, i) => { await make(d, i, '64M'); await poke(d, i, REFTABLE + 8, be64('ffffffffffff0000')); },
    want: { check: 2, leaks: 2, all: 0 },
  },
]);

describe('iotest 108: where the rebuilt refcount table goes', () => {
  for (const holes of [false, true]) {
    test(holes ? 'into a hole left for it' : 'without growing the image', async (t) => {
      if (!requireQemu(t)) return;
      const dir = await tempDir(t, 'qcow2kit-check-');
      const img = 'img.qcow2';
      await make(dir, img, holes ? '9M' : '1M', 'cluster_size=512', holes ? ['write 0 8M', 'discard 0 512', 'discard 4096 1k'] : ['write 0 64k']);
      // Refcount of the header cluster 0: the refcount structure must be rebuilt.
      const refblock = await peek64(join(dir, img), await peek64(join(dir, img), 48));
      await poke(dir, img, refblock, be16(0));
      const r = await compare(dir, img, 'all');
      assert.equal(r.ours.code, 0);
      for (const field of [48, 56]) {
        const q = field === 48 ? await peek64(join(dir, `q-all-${img}`), field) : await peek32(join(dir, `q-all-${img}`), field);
        const k = field === 48 ? await peek64(join(dir, `k-all-${img}`), field) : await peek32(join(dir, `k-all-${img}`), field);
        assert.equal(k, q, `header field ${field} after the rebuild`);
      }
      assert.equal((await stat(join(dir, `k-all-${img}`))).size, (await stat(join(dir, `q-all-${img}`))).size);
    });
  }
});

suite('iotest 112: refcount widths', [
  ...[1, 2, 4, 8, 16, 32, 64].map((bits): Scenario => ({
    name: `refcount_bits=${bits} with compressed clusters${bits > 1 ? ' and a snapshot' : ''}`,
    build: async (d, i) => {
      await make(d, i, '64M', `refcount_bits=${bits}`, ['write -P 1 0 256k', 'write -c -P 3 1M 64k', 'write -c -P 4 1088k 64k']);
      if (bits > 1) {
        await must('qemu-img', ['snapshot', '-c', 's1', i], { cwd: d });
        await must('qemu-io', ['-c', 'write -P 2 0 64k', i], { cwd: d });
      }
    },
    want: { check: 0 },
  })),
  {
    name: 'too many references for 1-bit refcounts ("please use amend")',
    build: async (d, i) => { await make(d, i, '64M', 'refcount_bits=1', ['write 0 64k']); await poke(d, i, L2 + 8, be64('8000000000050000')); },
    want: { check: 2, leaks: 2, all: 2 },
  },
  {
    name: 'the same after amend to 2-bit refcounts',
    build: async (d, i) => {
      await make(d, i, '64M', 'refcount_bits=1', ['write 0 64k']);
      await poke(d, i, L2 + 8, be64('8000000000050000'));
      await must('qemu-img', ['amend', '-o', 'refcount_bits=2', i], { cwd: d });
    },
    want: { check: 2, leaks: 2, all: 0 },
  },
  {
    name: '64-bit refcount at its maximum',
    build: async (d, i) => {
      await make(d, i, '64M', 'refcount_bits=64', ['write 0 64k']);
      const rb = await peek64(join(d, i), await peek64(join(d, i), 48));
      await poke(d, i, rb + 5 * 8, be64('ffffffffffffffff'));
    },
    want: { check: 2, leaks: 0, all: 0 },
  },
]);

suite('iotest 138: a data cluster at 32 PB (2^32+ clusters)', [
  {
    name: 'bounded memory, clean failure',
    build: async (d, i) => {
      await make(d, i, '512', 'cluster_size=512', ['write 0 512']);
      await poke(d, i, 2048, be64('8080000000000000'));
    },
    want: { check: 2, json: true, leaks: 2, all: 2 },
  },
]);

/** Snapshot table entry length at `offset` (fixed part + extra data + id + name, padded). */
async function entrySize(path: string, offset: number): Promise<number> {
  const b = await readAt(path, offset, 40);
  const v = new DataView(b.buffer, b.byteOffset, 40);
  return Math.ceil((40 + v.getUint32(36) + v.getUint16(12) + v.getUint16(14)) / 8) * 8;
}

/** iotest 261's v2 template: entries without extra data, with 42 bytes of it, with only 8 bytes. */
async function v2Template(d: string, i: string): Promise<void> {
  await make(d, i, '64M', 'compat=0.10');
  for (const s of ['sn0', 'sn1', 'sn2']) await must('qemu-img', ['snapshot', '-c', s, i], { cwd: d });
  const path = join(d, i);
  let offset = await peek64(path, 64);
  const entries: Uint8Array[] = [];
  for (let n = 0; n < 3; n++) {
    const size = await entrySize(path, offset);
    entries.push(await readAt(path, offset, size));
    offset += size;
  }
  const rebuild = (e: Uint8Array, extra: Uint8Array): Uint8Array => {
    const v = new DataView(e.buffer, e.byteOffset, e.byteLength);
    const ids = e.subarray(40 + v.getUint32(36), 40 + v.getUint32(36) + v.getUint16(12) + v.getUint16(14));
    const out = new Uint8Array(Math.ceil((40 + extra.byteLength + ids.byteLength) / 8) * 8);
    out.set(e.subarray(0, 40));
    new DataView(out.buffer).setUint32(36, extra.byteLength);
    out.set(extra, 40);
    out.set(ids, 40 + extra.byteLength);
    return out;
  };
  const extra1 = new Uint8Array(42);
  extra1.set(entries[1]!.subarray(40, 56));
  extra1.set(new TextEncoder().encode('very important data'), 16);
  const table = [rebuild(entries[0]!, new Uint8Array(0)), rebuild(entries[1]!, extra1), rebuild(entries[2]!, entries[2]!.subarray(40, 48))];
  let at = await peek64(path, 64);
  for (const e of table) {
    await poke(d, i, at, e);
    at += e.byteLength;
  }
}

suite('iotest 261: snapshot table extra data and limits', [
  { name: 'v2 entries without, with unknown and with short extra data', build: v2Template, want: { check: 0 } },
  {
    name: 'botched v3 (entries missing the mandatory extra data)',
    build: async (d, i) => {
      await v2Template(d, i);
      await poke(d, i, 4, be32(3));
      await poke(d, i, 100, be32(0x68));
      await poke(d, i, 96, be32(4));
    },
    want: { check: 2, leaks: 2, all: 0 },
  },
  {
    name: 'too much unknown extra data (64 KiB, spilling into the next cluster)',
    build: async (d, i) => {
      await v2Template(d, i);
      await must('qemu-img', ['amend', '-o', 'compat=1.1', i], { cwd: d });
      await must('qemu-img', ['snapshot', '-c', 'sn3', i], { cwd: d });
      const path = join(d, i);
      let offset = await peek64(path, 64);
      for (let n = 0; n < 3; n++) offset += await entrySize(path, offset);
      await poke(d, i, offset + 36, be32(0x10000));
    },
    want: { check: 1, leaks: 1, all: 0 },
  },
  {
    name: 'more than 65536 snapshots',
    build: async (d, i) => {
      await make(d, i, '64M', 'compat=0.10');
      const path = join(d, i);
      await poke(d, i, 64, be64('100000'));
      await poke(d, i, 60, be32(0x20000));
      await truncate(join(d, i), MiB + 40 * 131072);
      // One of the snapshots to drop has an L1 table (two clusters before 1 MiB) and an L2 table.
      await poke(d, i, MiB + 40 * 65536, be64('e0000'));
      await poke(d, i, MiB + 40 * 65536 + 8, be32(1));
      await poke(d, i, MiB - 2 * 65536, be64('80000000000f0000'));
      const refblock = await peek64(path, await peek64(path, 48));
      for (let c = (MiB - 2 * 65536) / 65536; c < Math.ceil((MiB + 40 * 131072) / 65536); c++) await poke(d, i, refblock + c * 2, be16(1));
    },
    want: { check: 1, all: 0 },
  },
]);

/** A v3 image with one snapshot whose table is at 0x70000 (the layout iotest 080 pokes). */
async function withSnapshot(d: string, i: string): Promise<void> {
  await make(d, i, '64M', '', ['write 0 512']);
  await must('qemu-img', ['snapshot', '-c', 's1', i], { cwd: d });
  await must('qemu-io', ['-c', 'write 0 512', i], { cwd: d });
}

/** QEMU's BDRV_MAX_LENGTH (2^63 - 2^30) minus one 64 KiB cluster, as hex. */
const LAST_CLUSTER_BEFORE_MAX = '7fffffffbfff0000';

suite('broken snapshot tables (iotests 080 and 261, fuzz findings)', [
  {
    name: 'nb_snapshots 0x7fffffff at a valid offset (the corruption counter wraps like a C int)',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 60, be32(0x7fffffff)); },
    want: { check: 1, leaks: 1, all: 2, afterAll: 2 },
  },
  {
    name: 'nb_snapshots 0x20000 with the table past the end of the file',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 60, be32(0x20000)); await poke(d, i, 64, be64('10000000')); },
    want: { check: 1, leaks: 1, all: 0 },
  },
  {
    name: '65536 snapshots: a table larger than the file',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 60, be32(65536)); },
    want: { check: 1, leaks: 1, all: 2, afterAll: 2 },
  },
  {
    name: 'snapshot table past the end of the file',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 64, be64('10000000')); },
    want: { check: 2, json: true, leaks: 2, all: 0 },
  },
  {
    name: 'unaligned snapshot table offset',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 64, be64('70008')); },
    want: { check: 1, leaks: 1, all: 1 },
  },
  {
    name: 'snapshot table at 2^63: offset invalid',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 64, be64('8000000000000000')); },
    want: { check: 1, all: 1 },
  },
  {
    name: 'snapshot table near 2^63: reading it fails with EIO',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 64, be64('7fffffffffff0000')); },
    want: { check: 1, leaks: 1, all: 1 },
  },
  {
    name: 'snapshot table ending right at the largest readable offset (freeing it fails with EFBIG)',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 64, be64(LAST_CLUSTER_BEFORE_MAX)); await poke(d, i, 60, be32(1638)); },
    want: { check: 2, all: 3, afterAll: 3 },
  },
  {
    name: 'snapshot table one entry past the largest readable offset',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 64, be64(LAST_CLUSTER_BEFORE_MAX)); await poke(d, i, 60, be32(1639)); },
    want: { check: 1, all: 1 },
  },
  {
    name: 'extra data size 0xffffffff',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 0x70024, be32(0xffffffff)); },
    want: { check: 1, leaks: 1, all: 0 },
  },
  {
    name: 'extra data size 1 MiB, the table then overlapping the refcount check (repair refused)',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 0x70024, be32(0x100000)); },
    want: { check: 1, leaks: 1, all: 1, afterAll: 2 },
  },
  {
    name: 'snapshot L1 table at 2^63 - 64 KiB',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 0x70000, be64('7fffffffffff0000')); },
    want: { check: 1, leaks: 1, all: 1 },
  },
  {
    name: 'snapshot L1 table past the end of the file, unaligned',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 0x70000, be64('100000200')); },
    want: { check: 2, leaks: 2, all: 2 },
  },
  {
    name: 'snapshot L1 size 0xffffffff',
    build: async (d, i) => { await withSnapshot(d, i); await poke(d, i, 0x70008, be32(0xffffffff)); },
    want: { check: 2, leaks: 2, all: 2 },
  },
]);

describe('deliberate differences from qemu-img 7.2', () => {
  test('an unaligned refcount block is repaired (qemu-img 7.2 marks the image corrupt and gives up)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t, 'qcow2kit-check-');
    const img = 'img.qcow2';
    await make(dir, img, '64M', '', ['write -P 7 0 64k']);
    await poke(dir, img, REFTABLE, be64('20200'));
    assert.equal((await compare(dir, img, 'check')).ours.code, 1);
    await copyFile(join(dir, img), join(dir, 'q.qcow2'));
    const q = await qemuImg(['check', '-r', 'all', 'q.qcow2'], { cwd: dir });
    assert.equal(q.code, 1, 'qemu-img 7.2 cannot repair this');
    const ours = await qcow2kit(['check', '-r', 'all', img], { cwd: dir });
    assert.equal(ours.code, 0, ours.stderr);
    assert.equal((await qemuImg(['check', img], { cwd: dir })).code, 0);
    await must('qemu-io', ['-c', 'read -P 7 0 64k', img], { cwd: dir });
  });

  test('-r leaks keeps the dirty bit while refcounts are still wrong (qemu-img 7.2 clears it)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t, 'qcow2kit-check-');
    const img = 'img.qcow2';
    await make(dir, img, '128M', 'lazy_refcounts=on');
    await crashAfterWrite(dir, img);
    const r = await qcow2kit(['check', '-r', 'leaks', img], { cwd: dir });
    assert.equal(r.code, 1);
    assert.equal(await peek64(join(dir, img), 72), 1);
  });

  test('-r all keeps the snapshots of an image with persistent bitmaps (qemu-img 7.2 drops the snapshot table)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t, 'qcow2kit-check-');
    const img = 'img.qcow2';
    await make(dir, img, '64M', '', ['write -P 9 0 64k']);
    await must('qemu-img', ['snapshot', '-c', 's1', img], { cwd: dir });
    await must('qemu-img', ['bitmap', '--add', img, 'b0'], { cwd: dir });
    await copyFile(join(dir, img), join(dir, 'q.qcow2'));
    // Opening read-write in check mode rewrites the header with no snapshots: QEMU 7.2 loses them.
    await must('qemu-img', ['check', '-r', 'all', 'q.qcow2'], { cwd: dir });
    assert.equal(await peek32(join(dir, 'q.qcow2'), 60), 0, 'qemu-img 7.2 dropped the snapshot table');
    const ours = await qcow2kit(['check', '-r', 'all', img], { cwd: dir });
    assert.equal(ours.code, 0, ours.stderr);
    assert.equal(await peek32(join(dir, img), 60), 1);
    assert.equal((await qemuImg(['check', img], { cwd: dir })).code, 0);
    assert.match((await must('qemu-img', ['snapshot', '-l', img], { cwd: dir })).stdout, /\bs1\b/);
  });

  test('LUKS images are checked without the key (qemu-img needs it to open them)', async (t) => {
    if (!requireQemu(t)) return;
    const dir = await tempDir(t, 'qcow2kit-check-');
    const img = 'img.qcow2';
    const secret = ['--object', 'secret,id=sec0,data=pw'];
    await createLuksQcow2(dir, img, '16M', 'pw');
    const opts = `driver=qcow2,file.filename=${img},encrypt.key-secret=sec0`;
    await must('qemu-io', [...secret, '--image-opts', opts, '-c', 'write -P 3 0 1M'], { cwd: dir });
    const q = await qemuImg(['check', ...secret, '--image-opts', opts], { cwd: dir });
    const ours = await qcow2kit(['check', img], { cwd: dir });
    assert.equal(ours.code, q.code);
    assert.equal(ours.stdout, q.stdout);
  });
});
