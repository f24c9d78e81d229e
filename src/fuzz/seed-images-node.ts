/**
 * Seed images for the fuzzer, made by qemu-img/qemu-io (the oracle writes what real images
 * look like): every cluster size class, v2 and v3, compressed (zlib, zstd), extended L2,
 * snapshots, bitmaps, refcount widths, backing files, external data files, LUKS, lazy
 * refcounts with the dirty bit, preallocated metadata. Small virtual sizes keep executions fast.
 *
 * Seeds are stored in a directory as NAME.qcow2 plus, when the image names one, NAME.backing
 * (its backing file's bytes) and NAME.data (its data file's bytes); `manifest.json` lists them.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A seed image with the dependencies the fuzz policy hands out in memory. */
export interface SeedFiles {
  name: string;
  bytes: Uint8Array;
  /** Bytes of the backing file, when the image has one. */
  backing?: Uint8Array;
  /** Format of the backing file bytes. */
  backingFormat?: 'raw' | 'qcow2';
  /** Bytes of the external data file, when the image has one. */
  data?: Uint8Array;
}

interface Recipe {
  name: string;
  /** Shell-free steps: [tool, ...args] run in the seed directory. */
  steps: string[][];
  backing?: { file: string; format: 'raw' | 'qcow2' };
  data?: string;
  /** Patch the dirty bit into the header after creation. */
  setDirty?: boolean;
}

const MANIFEST = 'manifest.json';

function io(file: string, ...cmds: string[]): string[] {
  return ['qemu-io', ...cmds.flatMap((c) => ['-c', c]), file];
}

function create(file: string, opts: string, size: string): string[] {
  return ['qemu-img', 'create', '-q', '-f', 'qcow2', ...(opts === '' ? [] : ['-o', opts]), file, size];
}

const SCATTER = ['write -P 0x11 0 70k', 'write -P 0x22 300k 5k', 'write -z 1M 64k', 'write -P 0x33 2M 4k', 'write -P 0x44 3M 100k', 'discard 3M 4k', 'write -P 0x55 4095k 1k'];

const RECIPES: readonly Recipe[] = [
  { name: 'basic64k', steps: [create('basic64k.qcow2', '', '4M'), io('basic64k.qcow2', ...SCATTER)] },
  { name: 'c4k', steps: [create('c4k.qcow2', 'cluster_size=4k', '4M'), io('c4k.qcow2', ...SCATTER, 'write -P 0x66 1500k 40k')] },
  { name: 'c512', steps: [create('c512.qcow2', 'cluster_size=512', '1M'), io('c512.qcow2', 'write -P 0x11 0 20k', 'write -P 0x22 100k 3k', 'write -z 200k 8k', 'write -P 0x33 700k 150k', 'write -P 0x44 1023k 1k')] },
  { name: 'c256k', steps: [create('c256k.qcow2', 'cluster_size=256k', '4M'), io('c256k.qcow2', 'write -P 0x11 0 300k', 'write -z 1M 256k', 'write -P 0x22 3M 1k')] },
  { name: 'v2', steps: [create('v2.qcow2', 'compat=0.10,cluster_size=4k', '4M'), io('v2.qcow2', ...SCATTER)] },
  {
    name: 'zlib',
    steps: [
      create('zlib-src.qcow2', 'cluster_size=4k', '2M'),
      io('zlib-src.qcow2', 'write -P 0x11 0 64k', 'write -P 0x5a 128k 12k', 'write -P 0x01 1M 200k'),
      ['qemu-img', 'convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=4k', 'zlib-src.qcow2', 'zlib.qcow2'],
      io('zlib.qcow2', 'write -P 0x77 512k 4k'),
    ],
  },
  {
    name: 'zstd',
    steps: [
      create('zstd-src.qcow2', '', '2M'),
      io('zstd-src.qcow2', 'write -P 0x11 0 64k', 'write -P 0x5a 128k 130k', 'write -P 0x01 1M 200k'),
      ['qemu-img', 'convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'zstd-src.qcow2', 'zstd.qcow2'],
    ],
  },
  { name: 'extl2', steps: [create('extl2.qcow2', 'extended_l2=on', '4M'), io('extl2.qcow2', 'write -P 0x11 0 2k', 'write -P 0x22 6k 3k', 'write -z 64k 64k', 'write -z 130k 2k', 'write -P 0x33 1M 70k')] },
  {
    name: 'snapshots',
    steps: [
      create('snapshots.qcow2', 'cluster_size=4k', '2M'),
      io('snapshots.qcow2', 'write -P 0x11 0 64k'),
      ['qemu-img', 'snapshot', '-c', 'one', 'snapshots.qcow2'],
      io('snapshots.qcow2', 'write -P 0x22 32k 64k', 'write -z 1M 8k'),
      ['qemu-img', 'snapshot', '-c', 'two', 'snapshots.qcow2'],
      io('snapshots.qcow2', 'write -P 0x33 0 4k'),
    ],
  },
  {
    name: 'bitmaps',
    steps: [
      create('bitmaps.qcow2', 'cluster_size=4k', '4M'),
      ['qemu-img', 'bitmap', '--add', '-g', '64k', 'bitmaps.qcow2', 'b0'],
      ['qemu-img', 'bitmap', '--add', '--disable', 'bitmaps.qcow2', 'b1'],
      io('bitmaps.qcow2', 'write -P 0x11 0 64k', 'write -P 0x22 2M 64k'),
    ],
  },
  { name: 'refcount1', steps: [create('refcount1.qcow2', 'cluster_size=4k,refcount_bits=1', '4M'), io('refcount1.qcow2', ...SCATTER)] },
  { name: 'refcount64', steps: [create('refcount64.qcow2', 'cluster_size=4k,refcount_bits=64', '4M'), io('refcount64.qcow2', ...SCATTER)] },
  {
    name: 'overlay',
    steps: [
      create('base.qcow2', 'cluster_size=4k', '4M'),
      io('base.qcow2', 'write -P 0xb0 0 1M', 'write -P 0xb1 3M 64k'),
      ['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', 'overlay.qcow2'],
      io('overlay.qcow2', 'write -P 0x11 4k 8k', 'write -z 64k 4k', 'discard 128k 4k'),
    ],
    backing: { file: 'base.qcow2', format: 'qcow2' },
  },
  {
    name: 'overlay-raw',
    steps: [
      ['qemu-img', 'create', '-q', '-f', 'raw', 'base.raw', '2M'],
      io('base.raw', 'write -P 0xb0 0 1M'),
      ['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'overlay-raw.qcow2', '3M'],
      io('overlay-raw.qcow2', 'write -P 0x11 0 8k', 'write -P 0x12 2M 8k'),
    ],
    backing: { file: 'base.raw', format: 'raw' },
  },
  {
    name: 'datafile',
    steps: [create('datafile.qcow2', 'cluster_size=4k,data_file=datafile.data', '2M'), io('datafile.qcow2', 'write -P 0x11 0 64k', 'write -z 1M 8k', 'write -P 0x22 1500k 4k')],
    data: 'datafile.data',
  },
  {
    name: 'datafile-raw',
    steps: [create('datafile-raw.qcow2', 'cluster_size=4k,data_file=datafile-raw.data,data_file_raw=on', '1M'), io('datafile-raw.qcow2', 'write -P 0x11 0 64k')],
    data: 'datafile-raw.data',
  },
  {
    name: 'luks',
    steps: [['qemu-img', 'create', '-q', '-f', 'qcow2', '--object', 'secret,id=sec0,data=123456', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100,cluster_size=4k', 'luks.qcow2', '1M']],
  },
  { name: 'dirty-lazy', steps: [create('dirty-lazy.qcow2', 'cluster_size=4k,lazy_refcounts=on', '4M'), io('dirty-lazy.qcow2', ...SCATTER)], setDirty: true },
  { name: 'prealloc', steps: [create('prealloc.qcow2', 'cluster_size=4k,preallocation=metadata', '1M'), io('prealloc.qcow2', 'write -P 0x11 0 8k')] },
];

/**
 * Create the seed set in `dir` with qemu-img/qemu-io (or load it when `manifest.json` is
 * already there). Throws when qemu-img is missing.
 *
 * @example
 * ```ts
 * const seeds = await loadOrCreateSeeds('/tmp/fuzz-seeds');
 * ```
 */
export async function loadOrCreateSeeds(dir: string): Promise<SeedFiles[]> {
  if (!existsSync(join(dir, MANIFEST))) await createSeeds(dir);
  return loadSeeds(dir);
}

/** Load a seed directory written by {@link createSeeds}. */
export async function loadSeeds(dir: string): Promise<SeedFiles[]> {
  const manifest = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as { name: string; backingFormat?: 'raw' | 'qcow2'; data?: boolean }[];
  const out: SeedFiles[] = [];
  for (const m of manifest) {
    const seed: SeedFiles = { name: m.name, bytes: new Uint8Array(await readFile(join(dir, `${m.name}.qcow2`))) };
    if (m.backingFormat !== undefined) {
      seed.backing = new Uint8Array(await readFile(join(dir, `${m.name}.backing`)));
      seed.backingFormat = m.backingFormat;
    }
    if (m.data === true) seed.data = new Uint8Array(await readFile(join(dir, `${m.name}.data`)));
    out.push(seed);
  }
  return out;
}

/**
 * Run one tool. LUKS creation measures the PBKDF speed and fails with "Unable to get accurate
 * CPU usage" on a busy machine: retried with longer iteration times.
 */
function runStep(tool: string, args: string[], cwd: string): void {
  for (let attempt = 0; ; attempt++) {
    const argv = attempt === 0 ? args : args.map((a) => a.replace(/iter-time=\d+/, `iter-time=${500 * 2 ** attempt}`));
    try {
      execFileSync(tool, argv, { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
      return;
    } catch (e) {
      if (attempt >= 3 || !args.some((a) => a.includes('iter-time='))) throw e;
    }
  }
}

/** Run the recipes in a scratch directory and store the seeds in `dir`. */
export async function createSeeds(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const work = join(dir, 'work');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const manifest: { name: string; backingFormat?: 'raw' | 'qcow2'; data?: boolean }[] = [];
  for (const r of RECIPES) {
    for (const [tool, ...args] of r.steps) runStep(tool!, args, work);
    const bytes = await readFile(join(work, `${r.name}.qcow2`));
    if (r.setDirty === true) bytes[79] = (bytes[79] ?? 0) | 1;
    await writeFile(join(dir, `${r.name}.qcow2`), bytes);
    const entry: { name: string; backingFormat?: 'raw' | 'qcow2'; data?: boolean } = { name: r.name };
    if (r.backing !== undefined) {
      await writeFile(join(dir, `${r.name}.backing`), await readFile(join(work, r.backing.file)));
      entry.backingFormat = r.backing.format;
    }
    if (r.data !== undefined) {
      await writeFile(join(dir, `${r.name}.data`), await readFile(join(work, r.data)));
      entry.data = true;
    }
    manifest.push(entry);
  }
  await rm(work, { recursive: true, force: true });
  await writeFile(join(dir, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
}
