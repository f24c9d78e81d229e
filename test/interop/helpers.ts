/**
 * Helpers for the interop suites: spawn qemu-img, qemu-io and bin/qcow2kit, build images at test
 * time, and compare what both sides produce. These tests never import src/: they drive the CLI the
 * way a user's script would, so they test the whole stack including argument parsing and exit codes.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

/** Repository root: this file runs from <repo>/dist-test/interop/. */
export const repoRoot: string = fileURLToPath(new URL('../../', import.meta.url));
/** The CLI under test. */
export const cliPath: string = join(repoRoot, 'bin', 'qcow2kit');

export interface RunResult {
  /** Exit code, or null when the process was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the process was killed because it exceeded its time limit. */
  timedOut: boolean;
  /** The command line, for failure messages. */
  command: string;
}

export interface RunOptions {
  cwd?: string;
  input?: string | Uint8Array;
  /** Kill the process after this many milliseconds (default 120 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * Both tools get the same stable environment: dates in snapshot lists are printed in local time
 * and numbers may depend on the locale.
 */
const baseEnv: NodeJS.ProcessEnv = { ...process.env, TZ: 'UTC', LC_ALL: 'C', LANG: 'C' };

/** Runs a command with captured stdout/stderr and exit code. Never rejects on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const command = [cmd, ...args].map(shellQuote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...baseEnv, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 120_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
        command,
      });
    });
    child.stdin.on('error', () => {
      /* the child may exit without reading its input */
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs `qemu-img ARGS`. */
export function qemuImg(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('qemu-img', args, opts);
}

/** Runs `qemu-io ARGS`. */
export function qemuIo(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('qemu-io', args, opts);
}

/** Runs `bin/qcow2kit ARGS` with the current Node. */
export function qcow2kit(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  if (!existsSync(cliPath)) {
    return Promise.reject(new Error(`${cliPath} does not exist (is the CLI built?)`));
  }
  return run(process.execPath, [cliPath, ...args], opts);
}

/** Throws with the command line and its output unless the process exited 0. */
export function check(r: RunResult): RunResult {
  if (r.code !== 0) {
    const why = r.timedOut ? 'timed out' : r.signal !== null ? `killed by ${r.signal}` : `exit ${r.code}`;
    throw new Error(`${r.command}: ${why}\n--- stderr:\n${r.stderr}\n--- stdout:\n${r.stdout.slice(0, 4000)}`);
  }
  return r;
}

/** Runs a command and throws unless it succeeds. */
export async function must(cmd: 'qemu-img' | 'qemu-io', args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return check(await run(cmd, args, opts));
}

/**
 * Creates a LUKS-encrypted qcow2 image whose key is the secret object `sec0` holding `password`.
 * qemu-img times a first PBKDF run before it sizes the iteration count and gives up with "Unable
 * to get accurate CPU usage" when the thread's CPU clock has not moved (coarse accounting on
 * some machines), so that one failure is retried.
 */
export async function createLuksQcow2(dir: string, name: string, size: string, password = '123456'): Promise<RunResult> {
  const args = [
    'create', '-q', '-f', 'qcow2', '--object', `secret,id=sec0,data=${password}`,
    '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100', name, size,
  ];
  for (let attempt = 1; ; attempt++) {
    const r = await qemuImg(args, { cwd: dir });
    if (r.code === 0 || attempt === 8 || !r.stderr.includes('Unable to get accurate CPU usage')) return check(r);
  }
}

let qemuAvailable: boolean | undefined;

/** True when qemu-img and qemu-io can be run. */
export function hasQemu(): boolean {
  if (qemuAvailable === undefined) {
    qemuAvailable = ['qemu-img', 'qemu-io'].every(
      (tool) => spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0,
    );
  }
  return qemuAvailable;
}

/** True when the user asked to skip the tests that need qemu-utils. */
export function skipQemuRequested(): boolean {
  return process.env['QCOW2KIT_SKIP_QEMU'] === '1';
}

/**
 * Call at the start of every test that needs qemu-img/qemu-io.
 * Returns true when they are there. When they are missing: with QCOW2KIT_SKIP_QEMU=1 the test is
 * marked skipped (with the reason) and false is returned, so the caller returns at once; otherwise
 * it throws, because a suite that silently skips its oracle proves nothing.
 *
 * @example
 * test('reads v3', async (t) => {
 *   if (!requireQemu(t)) return;
 *   ...
 * });
 */
export function requireQemu(t: TestContext): boolean {
  if (hasQemu()) return true;
  const reason = 'qemu-img/qemu-io not installed (apt-get install qemu-utils)';
  if (skipQemuRequested()) {
    t.skip(`QCOW2KIT_SKIP_QEMU=1: ${reason}`);
    return false;
  }
  throw new Error(`${reason}; set QCOW2KIT_SKIP_QEMU=1 to skip the interop tests explicitly`);
}

/** A fresh temporary directory, removed when the test ends (kept if QCOW2KIT_KEEP_TMP=1). */
export async function tempDir(t: TestContext, prefix = 'qcow2kit-interop-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  if (process.env['QCOW2KIT_KEEP_TMP'] !== '1') {
    t.after(() => rm(dir, { recursive: true, force: true }));
  } else {
    t.diagnostic(`kept ${dir}`);
  }
  return dir;
}

/** Deterministic PRNG (mulberry32): same seed, same bytes, on every machine. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** `len` incompressible pseudo-random bytes. */
export function randomBytes(seed: number, len: number): Uint8Array {
  const next = prng(seed);
  const out = new Uint8Array(len);
  const words = Math.floor(len / 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < words; i++) view.setUint32(i * 4, next(), true);
  for (let i = words * 4; i < len; i++) out[i] = next() & 0xff;
  return out;
}

const WORDS = [
  'qcow2', 'cluster', 'refcount', 'table', 'backing', 'snapshot', 'offset', 'length', 'the', 'a',
  'zero', 'data', 'image', 'header', 'extension', 'compressed', 'deflate', 'zstd', 'guest', 'host',
  'L1', 'L2', 'entry', 'bitmap', 'feature', 'incompatible', 'sector', 'read', 'write', 'discard',
];

/** `len` bytes of text-like, compressible data (compresses about 3-4x with deflate). */
export function compressibleBytes(seed: number, len: number): Uint8Array {
  const next = prng(seed);
  const out = new Uint8Array(len);
  let pos = 0;
  let line = 0;
  while (pos < len) {
    let s = `${line++}:`;
    const n = 4 + (next() % 10);
    for (let i = 0; i < n; i++) s += ' ' + (WORDS[next() % WORDS.length] ?? '');
    s += ` ${next() % 100000}\n`;
    for (let i = 0; i < s.length && pos < len; i++) out[pos++] = s.charCodeAt(i);
  }
  return out;
}

/** A region of a raw file to fill. Bytes not covered by any region are left as holes (zeros). */
export interface Region {
  offset: number;
  data: Uint8Array;
}

/**
 * Writes a raw file of exactly `size` bytes with the given regions. Dense by default (zeros are
 * written out), because `map` of a raw file reports filesystem holes and tests should not depend
 * on how a filesystem allocates; `sparse: true` leaves the gaps as holes.
 */
export async function writeRawFile(
  path: string,
  size: number,
  regions: readonly Region[] = [],
  opts: { sparse?: boolean } = {},
): Promise<void> {
  for (const r of regions) {
    if (r.offset + r.data.length > size) throw new Error(`region at ${r.offset} runs past ${size}`);
  }
  if (opts.sparse !== true) {
    const buf = new Uint8Array(size);
    for (const r of regions) buf.set(r.data, r.offset);
    await writeFile(path, buf);
    return;
  }
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    for (const r of regions) await fh.write(r.data, 0, r.data.length, r.offset);
  } finally {
    await fh.close();
  }
}

/**
 * A raw file mixing compressible text, zero runs and incompressible random runs, every `chunk`
 * bytes in turn: what `qemu-img convert -c` needs to write compressed, zero and uncompressed clusters.
 */
export async function writeMixedRawFile(
  path: string,
  size: number,
  seed: number,
  chunk = 96 * 1024,
): Promise<void> {
  const regions: Region[] = [];
  for (let off = 0, i = 0; off < size; off += chunk, i++) {
    const len = Math.min(chunk, size - off);
    const kind = i % 5;
    if (kind === 2) continue; // hole: reads as zeros
    const data = kind === 4 ? randomBytes(seed + i, len) : compressibleBytes(seed + i, len);
    regions.push({ offset: off, data });
  }
  await writeRawFile(path, size, regions);
}

/** Writes bytes to a new file. */
export async function writeBytes(path: string, data: Uint8Array): Promise<void> {
  await writeFile(path, data);
}

/**
 * Runs qemu-io commands (e.g. `write -P 0xab 0 64k`, `write -z 64k 4k`, `discard 0 64k`) on an
 * image, one `-c` per command, and throws if any fails.
 */
export async function qemuIoWrite(
  image: string,
  commands: readonly string[],
  opts: RunOptions & { format?: string } = {},
): Promise<void> {
  const args: string[] = [];
  if (opts.format !== undefined) args.push('-f', opts.format);
  for (const c of commands) args.push('-c', c);
  args.push(image);
  const r = await qemuIo(args, opts);
  check(r);
  // qemu-io keeps going after a failed command; its exit code reflects only some failures.
  if (/failed|error/i.test(r.stdout + r.stderr)) {
    throw new Error(`${r.command}:\n${r.stdout}${r.stderr}`);
  }
}

/** Patches bytes of a file in place (for hand-made corruptions). */
export async function patchFile(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
}

/** Reads `len` bytes at `offset` (short at end of file). */
export async function readAt(path: string, offset: number, len: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const buf = new Uint8Array(len);
    const { bytesRead } = await fh.read(buf, 0, len, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Byte comparison of two files: undefined when identical, otherwise a description of the first
 * difference. Files above 256 MiB (sparse raw outputs of huge images) are compared with
 * `qemu-img compare` after checking the sizes, which skips holes instead of reading them.
 */
export async function diffFiles(a: string, b: string): Promise<string | undefined> {
  const [sa, sb] = await Promise.all([stat(a), stat(b)]);
  if (sa.size !== sb.size) return `sizes differ: ${a} has ${sa.size} bytes, ${b} has ${sb.size}`;
  if (sa.size > 256 * 1024 * 1024) {
    const r = await qemuImg(['compare', '-f', 'raw', '-F', 'raw', a, b]);
    return r.code === 0 ? undefined : `qemu-img compare: exit ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`;
  }
  const [fa, fb] = await Promise.all([open(a, 'r'), open(b, 'r')]);
  try {
    const chunk = 4 * 1024 * 1024;
    const ba = Buffer.alloc(chunk);
    const bb = Buffer.alloc(chunk);
    for (let off = 0; off < sa.size; off += chunk) {
      const n = Math.min(chunk, sa.size - off);
      await Promise.all([fa.read(ba, 0, n, off), fb.read(bb, 0, n, off)]);
      if (ba.subarray(0, n).equals(bb.subarray(0, n))) continue;
      let i = 0;
      while (i < n && ba[i] === bb[i]) i++;
      return `first difference at byte ${off + i} (0x${(off + i).toString(16)})`;
    }
    return undefined;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/**
 * A file's data and hole runs as the file system reports them (SEEK_DATA/SEEK_HOLE, through
 * `qemu-img map -f raw`). Compare these rather than `actual-size`: st_blocks also counts the
 * file system's extent blocks, which depend on how fragmented a file happened to come out.
 */
export async function fileHoles(path: string): Promise<unknown> {
  const r = await must('qemu-img', ['map', '--output=json', '-f', 'raw', path]);
  return parseJson(r.stdout, `map of ${path}`);
}

/** JSON.parse with the offending text in the error. */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new Error(`${what} is not valid JSON (${(e as Error).message}):\n${text.slice(0, 2000)}`);
  }
}

/** Fields naming files by path; they depend on how each tool spells paths, so tests drop them. */
export const FILENAME_FIELDS: readonly string[] = ['filename', 'full-backing-filename'];

/** Deep copy of a JSON value without the filename fields, at any depth. */
export function withoutFilenames(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutFilenames);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (!FILENAME_FIELDS.includes(k)) out[k] = withoutFilenames(v);
    }
    return out;
  }
  return value;
}

/** Lines of stderr that look like a JavaScript stack trace. */
export function stackTraceLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /^\s+at\s/.test(l) || /node:internal|\.js:\d+:\d+/.test(l));
}

/**
 * Lines of qemu-io output without the timing lines: `64 KiB, 1 ops; 00.00 sec (1.2 GiB/sec and
 * 19.5 ops/sec)`, or `64 bytes, 1 ops; 0:00:01.01 (63.6 bytes/sec and 0.99 ops/sec)` past a second.
 */
export function withoutTimings(output: string): string[] {
  return output.split('\n').filter((l) => l !== '' && !/, \d+ ops; .* ops\/sec\)$/.test(l));
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
