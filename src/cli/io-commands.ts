/**
 * qemu-io 7.2's commands (read, write, map, alloc, ...) over an ImageReader, with its exact
 * output and error texts. One table entry per command: name, usage, argument counts,
 * whether it needs an open image or write permission, and the function that runs it.
 *
 * Conventions, as in qemu-io: a command returns 0 or a negative errno. Its own messages
 * (usage, "read failed: ...", "Parsing error: ...") go to stdout; the dispatcher's
 * ("bad argument count ...", `command "x" not found`) and error_report() ones go to stderr.
 */
import { Qcow2Error } from '../errors.js';
import type { ImageReader } from '../image/types.js';
import { formatFixed, formatIoNumberError, formatIoSize, parseIoNumber } from '../util/size.js';
import { ArgError, parseArgs, type OptionSpec, type ParsedOption } from './args.js';
import { qdictKeyOrder } from './format-info.js';
import { dumpBuffer, matchesPattern, parsePattern, repeatPattern, strtol } from './io-pattern.js';
import type { CliWriter } from './main.js';

export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const EINVAL = 22;
export const ERANGE = 34;
export const ENOTSUP = 95;

const STRERROR: Readonly<Record<number, string>> = {
  [EPERM]: 'Operation not permitted',
  [ENOENT]: 'No such file or directory',
  [EIO]: 'Input/output error',
  [EINVAL]: 'Invalid argument',
  [ERANGE]: 'Numerical result out of range',
  [ENOTSUP]: 'Operation not supported',
};

/** C's strerror() for the errno values used here. */
export function strerror(errno: number): string {
  return STRERROR[errno] ?? `Unknown error ${errno}`;
}

/** qemu's BDRV_REQUEST_MAX_BYTES: the largest single request. */
export const MAX_REQUEST_BYTES = 2147483136;
const SECTOR = 512;

/**
 * The image as qemu-io sees it: an ImageReader plus the write operations an image may
 * offer. Commands check for each method at run time and fail with "Operation not
 * supported" when it is missing.
 */
export interface IoImage extends ImageReader {
  write?(src: Uint8Array, offset: number): Promise<void>;
  writeZeroes?(offset: number, length: number, options?: { unmap?: boolean }): Promise<void>;
  writeCompressed?(src: Uint8Array, offset: number): Promise<void>;
  discard?(offset: number, length: number): Promise<void>;
  flush?(): Promise<void>;
  resize?(size: number, options?: { preallocation?: string }): Promise<void>;
}

/** qemu's ImageInfoSpecific data: what `info` prints under "Format specific information". */
export type FormatSpecific = Readonly<Record<string, unknown>>;

/** State shared by the commands of one qemu-io run. */
export interface IoSession {
  image: IoImage | undefined;
  /** Opened with -r: commands that write fail with "Block node is read-only". */
  readOnly: boolean;
  readonly out: CliWriter;
  readonly err: CliWriter;
  /** Prefix of error_report() lines ("qcow2kit"). */
  readonly progname: string;
  /** Set by `quit`. */
  quit: boolean;
  /** In-flight aio_read/aio_write requests. */
  readonly pending: Set<Promise<void>>;
  /** Milliseconds from a monotonic clock. */
  readonly now: () => number;
  /** Read a file for `write -s`; absent in environments without files. */
  readonly readFile?: (path: string) => Promise<Uint8Array>;
  /** The "Format specific information" of an image, if it has any. */
  readonly formatSpecific?: (image: IoImage) => FormatSpecific | undefined | Promise<FormatSpecific | undefined>;
}

/**
 * Create a session for running commands.
 *
 * @example
 * ```ts
 * const s = createIoSession({ image, out: io.stdout, err: io.stderr });
 * const ret = await runIoCommand(s, 'read -P 0xab 0 64k'); // 0, or -EINVAL on mismatch
 * ```
 */
export function createIoSession(options: {
  image?: IoImage | undefined;
  readOnly?: boolean;
  out: CliWriter;
  err: CliWriter;
  progname?: string;
  now?: () => number;
  readFile?: (path: string) => Promise<Uint8Array>;
  formatSpecific?: IoSession['formatSpecific'];
}): IoSession {
  return {
    image: options.image,
    readOnly: options.readOnly ?? false,
    out: options.out,
    err: options.err,
    progname: options.progname ?? 'qcow2kit',
    quit: false,
    pending: new Set(),
    now: options.now ?? (() => performance.now()),
    ...(options.readFile === undefined ? {} : { readFile: options.readFile }),
    ...(options.formatSpecific === undefined ? {} : { formatSpecific: options.formatSpecific }),
  };
}

/** One qemu-io command. */
export interface IoCommand {
  readonly name: string;
  readonly altname?: string;
  /** Usage after the name; `''` still prints its separating space ("map  -- ..."). */
  readonly args?: string;
  readonly oneline: string;
  /** Extended help for `help <command>`. */
  readonly help?: string;
  /** Argument count limits (options included); argmax -1 means no limit. Default 0..0. */
  readonly argmin?: number;
  readonly argmax?: number;
  /** Runs without an open image and skips the open-file check (help, quit). */
  readonly global?: boolean;
  /** Runs without an open image (sleep). */
  readonly noFileOk?: boolean;
  /** Needs write permission (qemu's BLK_PERM_WRITE). */
  readonly writes?: boolean;
  run(s: IoSession, argv: string[], cmd: IoCommand): Promise<number>;
}

/** A command failed with a message for stdout (qemu-io's printf + return -errno). */
class IoFailure extends Error {
  readonly errno: number;
  constructor(message: string, errno = EINVAL) {
    super(message);
    this.errno = errno;
  }
}

/** The command's usage line was printed (qemuio_command_usage + return -EINVAL). */
class IoUsage extends Error {}

function usageLine(cmd: IoCommand, name = cmd.name): string {
  return `${name} ${cmd.args === undefined ? '' : `${cmd.args} `}-- ${cmd.oneline}\n`;
}

/** Parse a qemu-io offset/length, failing the command with qemu-io's text. */
function num(text: string): number {
  try {
    return parseIoNumber(text);
  } catch (e) {
    if (e instanceof Qcow2Error) throw new IoFailure(e.message, e.context.errno === 'ERANGE' ? ERANGE : EINVAL);
    throw e;
  }
}

function pattern(text: string): number {
  const p = parsePattern(text);
  if (p === undefined) throw new IoFailure(`${text} is not a valid pattern byte`);
  return p;
}

interface Getopt {
  options: readonly ParsedOption[];
  positionals: readonly string[];
  error: ArgError | undefined;
}

/** getopt(argc, argv, optstring) over a whole command line; argv[0] is the command. */
function getopt(argv: readonly string[], optstring: string): Getopt {
  const options: OptionSpec[] = [];
  for (let i = 0; i < optstring.length; i++) {
    const c = optstring[i]!;
    const takesArg = optstring[i + 1] === ':';
    if (takesArg) i++;
    options.push({ name: c, short: c, arg: takesArg ? 'required' : 'none' });
  }
  try {
    const parsed = parseArgs(argv.slice(1), { options }, { argv0: argv[0] ?? '', style: 'getopt' });
    return { options: parsed.options, positionals: parsed.positionals, error: undefined };
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    return { options: e.parsed, positionals: [], error: e };
  }
}

/** After acting on the options parsed before a getopt error, report it like glibc + qemu-io. */
function checkGetopt(s: IoSession, g: Getopt, argv: readonly string[]): void {
  if (g.error === undefined) return;
  s.err.write(`${argv[0] ?? ''}: ${g.error.getoptMessage}\n`);
  throw new IoUsage();
}

function errnoOf(e: Qcow2Error): number {
  switch (e.code) {
    case 'READ_ONLY':
      return EPERM;
    case 'UNSUPPORTED':
      return ENOTSUP;
    case 'INVALID_ARGUMENT':
      return EINVAL;
    case 'NOT_FOUND':
      return ENOENT;
    default:
      return EIO;
  }
}

/**
 * Run an image operation; 0 or -errno. Library errors get their own message on stderr
 * (qemu logs corruption the same way) before the command prints "<op> failed: ...".
 */
async function perform(s: IoSession, op: () => Promise<void>): Promise<number> {
  try {
    await op();
    return 0;
  } catch (e) {
    if (e instanceof IoFailure) return -e.errno;
    if (e instanceof Qcow2Error) {
      s.err.write(`${s.progname}: ${e.message}\n`);
      return -errnoOf(e);
    }
    throw e;
  }
}

function image(s: IoSession): IoImage {
  if (s.image === undefined) throw new IoFailure('no file open', EIO);
  return s.image;
}

/** blk_check_byte_request(): requests past the end fail with EIO. */
function checkRange(img: IoImage, offset: number, count: number): void {
  if (offset > img.size || img.size - offset < count) throw new IoFailure('', EIO);
}

function method<K extends keyof IoImage>(img: IoImage, name: K): NonNullable<IoImage[K]> {
  const m = img[name];
  if (typeof m !== 'function') throw new IoFailure('', ENOTSUP);
  return (m as (...a: unknown[]) => unknown).bind(img) as NonNullable<IoImage[K]>;
}

/** qemu-io's timestr(): "00.01 sec", or "H:MM:SS.ss" for -C or a second or more. */
export function formatElapsed(seconds: number, verbose: boolean): string {
  const whole = Math.floor(seconds);
  const frac = seconds - whole;
  const pad = (v: number): string => formatFixed(v, 2).padStart(5, '0');
  if (verbose || whole > 0) {
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    return `${h}:${String(m).padStart(2, '0')}:${pad((whole % 60) + frac)}`;
  }
  return `${pad(frac)} sec`;
}

/** qemu-io's print_report(). `elapsedMs` is the time the operation took. */
export function formatReport(op: string, elapsedMs: number, offset: number, count: number, total: number, ops: number, machine: boolean): string {
  const secs = elapsedMs / 1000;
  const ts = formatElapsed(secs, machine);
  if (machine) return `${total},${ops},${ts},${formatFixed(total / secs, 3)},${formatFixed(ops / secs, 3)}\n`;
  return (
    `${op} ${total}/${count} bytes at offset ${offset}\n` +
    `${formatIoSize(total)}, ${ops} ops; ${ts} (${formatIoSize(total / secs)}/sec and ${formatFixed(ops / secs, 4)} ops/sec)\n`
  );
}

/** Lengths of readv/writev/aio_*: each and their sum at most MAX_REQUEST_BYTES. */
function iovecLength(args: readonly string[]): number {
  let total = 0;
  for (const arg of args) {
    const len = num(arg);
    if (len > MAX_REQUEST_BYTES) throw new IoFailure(`Argument '${arg}' exceeds maximum size ${MAX_REQUEST_BYTES}`);
    if (total > MAX_REQUEST_BYTES - len) throw new IoFailure(`The total number of bytes exceed the maximum size ${MAX_REQUEST_BYTES}`);
    total += len;
  }
  return total;
}

async function doRead(s: IoSession, buf: Uint8Array, offset: number): Promise<number> {
  const img = image(s);
  return perform(s, async () => {
    checkRange(img, offset, buf.byteLength);
    if (buf.byteLength > 0) await img.read(buf, offset);
  });
}

// ---- read ----------------------------------------------------------------

async function readCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'bCl:pP:qs:v');
  let machine = false;
  let quiet = false;
  let verbose = false;
  let vmstate = false;
  let pat: number | undefined;
  let patOffset = 0;
  let patCount = 0;
  let lflag = false;
  let sflag = false;
  for (const o of g.options) {
    if (o.name === 'b') vmstate = true;
    else if (o.name === 'C') machine = true;
    else if (o.name === 'l') {
      lflag = true;
      patCount = num(o.value!);
    } else if (o.name === 'P') pat = pattern(o.value!);
    else if (o.name === 'q') quiet = true;
    else if (o.name === 's') {
      sflag = true;
      patOffset = num(o.value!);
    } else if (o.name === 'v') verbose = true;
  }
  checkGetopt(s, g, argv);
  if (g.positionals.length !== 2) throw new IoUsage();
  const offset = num(g.positionals[0]!);
  const count = num(g.positionals[1]!);
  if (count > MAX_REQUEST_BYTES) throw new IoFailure(`length cannot exceed ${MAX_REQUEST_BYTES}, given ${g.positionals[1]!}`);
  if (pat === undefined && (lflag || sflag)) throw new IoUsage();
  if (!lflag) patCount = count - patOffset;
  if (patCount < 0 || patCount + patOffset > count) throw new IoFailure('pattern verification range exceeds end of read data');
  if (vmstate) checkSectorAligned(offset, count);

  const buf = new Uint8Array(count);
  const t1 = s.now();
  const ret = vmstate ? -ENOTSUP : await doRead(s, buf, offset);
  const t2 = s.now();
  if (ret < 0) throw new IoFailure(`read failed: ${strerror(-ret)}`, -ret);

  let result = 0;
  if (pat !== undefined && !matchesPattern(buf, patOffset, patCount, pat)) {
    s.out.write(`Pattern verification failed at offset ${offset + patOffset}, ${patCount} bytes\n`);
    result = -EINVAL;
  }
  if (quiet) return result;
  if (verbose) await dumpBuffer(s.out, buf, offset);
  s.out.write(formatReport('read', t2 - t1, offset, count, count, 1, machine));
  return result;
}

function checkSectorAligned(offset: number, count: number): void {
  if (offset % SECTOR !== 0) throw new IoFailure(`${offset} is not a sector-aligned value for 'offset'`);
  if (count % SECTOR !== 0) throw new IoFailure(`${count} is not a sector-aligned value for 'count'`);
}

async function readvCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'CP:qv');
  let machine = false;
  let quiet = false;
  let verbose = false;
  let pat: number | undefined;
  for (const o of g.options) {
    if (o.name === 'C') machine = true;
    else if (o.name === 'P') pat = pattern(o.value!);
    else if (o.name === 'q') quiet = true;
    else if (o.name === 'v') verbose = true;
  }
  checkGetopt(s, g, argv);
  if (g.positionals.length < 2) throw new IoUsage();
  const offset = num(g.positionals[0]!);
  const size = iovecLength(g.positionals.slice(1));
  const buf = new Uint8Array(size);
  const t1 = s.now();
  const ret = await doRead(s, buf, offset);
  const t2 = s.now();
  if (ret < 0) throw new IoFailure(`readv failed: ${strerror(-ret)}`, -ret);
  let result = 0;
  if (pat !== undefined && !matchesPattern(buf, 0, size, pat)) {
    s.out.write(`Pattern verification failed at offset ${offset}, ${size} bytes\n`);
    result = -EINVAL;
  }
  if (quiet) return result;
  if (verbose) await dumpBuffer(s.out, buf, offset);
  s.out.write(formatReport('read', t2 - t1, offset, size, size, 1, machine));
  return result;
}

// ---- write ---------------------------------------------------------------

async function fileBuffer(s: IoSession, path: string, length: number): Promise<Uint8Array> {
  if (s.readFile === undefined) {
    s.err.write(`${path}: ${strerror(ENOTSUP)}\n`);
    throw new IoFailure('', EINVAL);
  }
  let data: Uint8Array;
  try {
    data = await s.readFile(path);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    s.err.write(`${path}: ${code === 'ENOENT' ? strerror(ENOENT) : e instanceof Error ? e.message : String(e)}\n`);
    throw new IoFailure('', EINVAL);
  }
  if (data.byteLength === 0) {
    s.err.write(`${path}: file is empty\n`);
    throw new IoFailure('', EINVAL);
  }
  return repeatPattern(data.subarray(0, length), length);
}

async function writeCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'bcCfnpP:qs:uz');
  const f = { b: false, c: false, C: false, fua: false, n: false, q: false, u: false, z: false, P: false, s: false };
  let pat = 0xcd;
  let file = '';
  for (const o of g.options) {
    switch (o.name) {
      case 'b': f.b = true; break;
      case 'c': f.c = true; break;
      case 'C': f.C = true; break;
      case 'f': f.fua = true; break;
      case 'n': f.n = true; break;
      case 'P': f.P = true; pat = pattern(o.value!); break;
      case 'q': f.q = true; break;
      case 's': f.s = true; file = o.value!; break;
      case 'u': f.u = true; break;
      case 'z': f.z = true; break;
      default: break; // -p: ignored for backwards compatibility
    }
  }
  checkGetopt(s, g, argv);
  if (g.positionals.length !== 2) throw new IoUsage();
  if (f.b && f.z) throw new IoFailure('-b and -z cannot be specified at the same time');
  if (f.fua && (f.b || f.c)) throw new IoFailure('-f and -b or -c cannot be specified at the same time');
  if (f.n && !f.z) throw new IoFailure('-n requires -z to be specified');
  if (f.u && !f.z) throw new IoFailure('-u requires -z to be specified');
  if (Number(f.z) + Number(f.P) + Number(f.s) > 1) throw new IoFailure('Only one of -z, -P, and -s can be specified at the same time');
  const offset = num(g.positionals[0]!);
  const count = num(g.positionals[1]!);
  if (count > MAX_REQUEST_BYTES && !f.n) {
    throw new IoFailure(`length cannot exceed ${MAX_REQUEST_BYTES} without -n, given ${g.positionals[1]!}`);
  }
  if (f.b || f.c) checkSectorAligned(offset, count);
  let buf: Uint8Array | undefined;
  if (!f.z) buf = f.s ? await fileBuffer(s, file, count) : new Uint8Array(count).fill(pat);

  const img = image(s);
  const t1 = s.now();
  const ret = await perform(s, async () => {
    if (f.b) throw new IoFailure('', ENOTSUP);
    checkRange(img, offset, count);
    if (f.z) await method(img, 'writeZeroes')(offset, count, { unmap: f.u });
    else if (f.c) await method(img, 'writeCompressed')(buf!, offset);
    else await method(img, 'write')(buf!, offset);
    if (f.fua) await method(img, 'flush')();
  });
  const t2 = s.now();
  if (ret < 0) throw new IoFailure(`write failed: ${strerror(-ret)}`, -ret);
  if (!f.q) s.out.write(formatReport('wrote', t2 - t1, offset, count, count, 1, f.C));
  return 0;
}

async function writevCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'CfqP:');
  let machine = false;
  let quiet = false;
  let fua = false;
  let pat = 0xcd;
  for (const o of g.options) {
    if (o.name === 'C') machine = true;
    else if (o.name === 'f') fua = true;
    else if (o.name === 'q') quiet = true;
    else if (o.name === 'P') pat = pattern(o.value!);
  }
  checkGetopt(s, g, argv);
  if (g.positionals.length < 2) throw new IoUsage();
  const offset = num(g.positionals[0]!);
  const size = iovecLength(g.positionals.slice(1));
  const buf = new Uint8Array(size).fill(pat);
  const img = image(s);
  const t1 = s.now();
  const ret = await perform(s, async () => {
    checkRange(img, offset, size);
    await method(img, 'write')(buf, offset);
    if (fua) await method(img, 'flush')();
  });
  const t2 = s.now();
  if (ret < 0) throw new IoFailure(`writev failed: ${strerror(-ret)}`, -ret);
  if (!quiet) s.out.write(formatReport('wrote', t2 - t1, offset, size, size, 1, machine));
  return 0;
}

// ---- aio -----------------------------------------------------------------

/** Start a request whose completion prints later, as qemu-io's aio callbacks do. */
function submit(s: IoSession, work: () => Promise<void>): void {
  const p: Promise<void> = work()
    .catch((e: unknown) => {
      s.err.write(`${s.progname}: ${e instanceof Error ? e.message : String(e)}\n`);
    })
    .finally(() => s.pending.delete(p));
  s.pending.add(p);
}

async function aioReadCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'CP:iqv');
  let machine = false;
  let quiet = false;
  let verbose = false;
  let pat: number | undefined;
  for (const o of g.options) {
    if (o.name === 'C') machine = true;
    else if (o.name === 'P') pat = pattern(o.value!);
    else if (o.name === 'i') {
      s.out.write('injecting invalid read request\n');
      return 0;
    } else if (o.name === 'q') quiet = true;
    else if (o.name === 'v') verbose = true;
  }
  checkGetopt(s, g, argv);
  if (g.positionals.length < 2) throw new IoUsage();
  const offset = num(g.positionals[0]!);
  const size = iovecLength(g.positionals.slice(1));
  const buf = new Uint8Array(size);
  const t1 = s.now();
  submit(s, async () => {
    const ret = await doRead(s, buf, offset);
    const t2 = s.now();
    if (ret < 0) {
      s.out.write(`readv failed: ${strerror(-ret)}\n`);
      return;
    }
    // Like qemu-io, a mismatch is reported but does not fail the command.
    if (pat !== undefined && !matchesPattern(buf, 0, size, pat)) s.out.write(`Pattern verification failed at offset ${offset}, ${size} bytes\n`);
    if (quiet) return;
    if (verbose) await dumpBuffer(s.out, buf, offset);
    s.out.write(formatReport('read', t2 - t1, offset, size, size, 1, machine));
  });
  return 0;
}

async function aioWriteCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'CfiqP:uz');
  let machine = false;
  let quiet = false;
  let fua = false;
  let unmap = false;
  let zero = false;
  let pat = 0xcd;
  for (const o of g.options) {
    if (o.name === 'C') machine = true;
    else if (o.name === 'f') fua = true;
    else if (o.name === 'q') quiet = true;
    else if (o.name === 'u') unmap = true;
    else if (o.name === 'P') pat = pattern(o.value!);
    else if (o.name === 'i') {
      s.out.write('injecting invalid write request\n');
      return 0;
    } else if (o.name === 'z') zero = true;
  }
  checkGetopt(s, g, argv);
  if (g.positionals.length < 2) throw new IoUsage();
  if (zero && g.positionals.length !== 2) throw new IoFailure('-z supports only a single length parameter');
  if (unmap && !zero) throw new IoFailure('-u requires -z to be specified');
  const offset = num(g.positionals[0]!);
  const size = zero ? num(g.positionals[1]!) : iovecLength(g.positionals.slice(1));
  const buf = zero ? undefined : new Uint8Array(size).fill(pat);
  const img = image(s);
  const t1 = s.now();
  submit(s, async () => {
    const ret = await perform(s, async () => {
      checkRange(img, offset, size);
      if (buf === undefined) await method(img, 'writeZeroes')(offset, size, { unmap });
      else await method(img, 'write')(buf, offset);
      if (fua) await method(img, 'flush')();
    });
    const t2 = s.now();
    if (ret < 0) s.out.write(`aio_write failed: ${strerror(-ret)}\n`);
    else if (!quiet) s.out.write(formatReport('wrote', t2 - t1, offset, size, size, 1, machine));
  });
  return 0;
}

async function aioFlushCmd(s: IoSession): Promise<number> {
  while (s.pending.size > 0) await Promise.allSettled([...s.pending]);
  return 0;
}

// ---- flush, discard, truncate, length ------------------------------------

async function flushCmd(s: IoSession): Promise<number> {
  const img = image(s);
  if (img.flush === undefined) return 0; // nothing is cached for writing
  return perform(s, () => img.flush!());
}

async function discardCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'Cq');
  let machine = false;
  let quiet = false;
  for (const o of g.options) {
    if (o.name === 'C') machine = true;
    else if (o.name === 'q') quiet = true;
  }
  checkGetopt(s, g, argv);
  if (g.positionals.length !== 2) throw new IoUsage();
  const offset = num(g.positionals[0]!);
  const bytes = num(g.positionals[1]!);
  if (bytes > MAX_REQUEST_BYTES) throw new IoFailure(`length cannot exceed ${MAX_REQUEST_BYTES}, given ${g.positionals[1]!}`);
  const img = image(s);
  const t1 = s.now();
  const ret = await perform(s, async () => {
    checkRange(img, offset, bytes);
    await method(img, 'discard')(offset, bytes);
  });
  const t2 = s.now();
  if (ret < 0) throw new IoFailure(`discard failed: ${strerror(-ret)}`, -ret);
  if (!quiet) s.out.write(formatReport('discard', t2 - t1, offset, bytes, bytes, 1, machine));
  return 0;
}

const PREALLOC_MODES = new Set(['off', 'metadata', 'falloc', 'full']);

async function truncateCmd(s: IoSession, argv: string[]): Promise<number> {
  const g = getopt(argv, 'm:');
  let prealloc = 'off';
  for (const o of g.options) {
    if (o.name === 'm') {
      if (!PREALLOC_MODES.has(o.value!)) {
        s.err.write(`${s.progname}: Invalid preallocation mode '${o.value!}'\n`);
        return -EINVAL;
      }
      prealloc = o.value!;
    }
  }
  checkGetopt(s, g, argv);
  const arg = g.positionals[0];
  if (arg === undefined) throw new IoUsage();
  let size: number;
  try {
    size = parseIoNumber(arg);
  } catch (e) {
    if (!(e instanceof Qcow2Error)) throw e;
    // qemu-io quotes argv[1] here, even when that is "-m".
    const errno = e.context.errno === 'ERANGE' ? 'ERANGE' : 'EINVAL';
    throw new IoFailure(formatIoNumberError(errno, argv[1] ?? arg), errno === 'ERANGE' ? ERANGE : EINVAL);
  }
  const img = image(s);
  if (img.resize === undefined) {
    s.err.write(`${s.progname}: Image format driver does not support resize\n`);
    return -ENOTSUP;
  }
  try {
    await img.resize(size, { preallocation: prealloc });
  } catch (e) {
    if (!(e instanceof Qcow2Error)) throw e;
    s.err.write(`${s.progname}: ${e.message}\n`);
    return -errnoOf(e);
  }
  return 0;
}

async function lengthCmd(s: IoSession): Promise<number> {
  s.out.write(`${formatIoSize(image(s).size)}\n`);
  return 0;
}

// ---- info, map, alloc ----------------------------------------------------

/** qcow2's vm_state_offset: the guest size rounded up to what whole L2 tables cover. */
export function vmStateOffset(img: IoImage): number {
  const meta = (img.driver as { meta?: { clusterSize?: unknown; l2Entries?: unknown } }).meta;
  if (img.driver.format !== 'qcow2' || meta === undefined) return 0;
  const { clusterSize, l2Entries } = meta;
  if (typeof clusterSize !== 'number' || typeof l2Entries !== 'number' || clusterSize <= 0 || l2Entries <= 0) return 0;
  const cover = clusterSize * l2Entries;
  return Math.ceil(img.size / cover) * cover;
}

/**
 * qemu's human dump of a QAPI object (block/qapi.c dump_qobject): keys in QDict order,
 * dashes in keys become spaces, nested objects and lists are indented by four per level.
 */
export function dumpQObject(value: unknown, indent: number): string {
  const pad = ' '.repeat(indent * 4);
  const composite = (v: unknown): boolean => typeof v === 'object' && v !== null;
  const line = (label: string, v: unknown): string =>
    composite(v) ? `${pad}${label}:\n${dumpQObject(v, indent + 1)}` : `${pad}${label}: ${scalar(v)}\n`;
  if (Array.isArray(value)) return value.map((v, i) => line(`[${i}]`, v)).join('');
  if (composite(value)) {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).filter((k) => obj[k] !== undefined);
    return qdictKeyOrder(keys)
      .map((k) => line(k.replaceAll('-', ' '), obj[k]))
      .join('');
  }
  return scalar(value);
}

function scalar(v: unknown): string {
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint') return String(v);
  return '';
}

async function infoCmd(s: IoSession): Promise<number> {
  const img = image(s);
  const format = img.driver.format;
  // Only formats with clusters report a cluster size (qemu-io shows 0 for raw).
  const clusterSize = format === 'qcow2' ? img.driver.clusterSize : 0;
  s.out.write(`format name: ${format}\ncluster size: ${formatIoSize(clusterSize)}\nvm state offset: ${formatIoSize(vmStateOffset(img))}\n`);
  const spec = await s.formatSpecific?.(img);
  if (spec !== undefined) s.out.write(`Format specific information:\n${dumpQObject(spec, 1)}`);
  return 0;
}

/** bdrv_is_allocated(): is [offset, offset + num) allocated in the top layer? num 0 at the end. */
async function isAllocated(img: IoImage, offset: number, bytes: number): Promise<{ allocated: boolean; num: number }> {
  if (bytes <= 0 || offset >= img.size) return { allocated: false, num: 0 };
  const want = Math.min(bytes, img.size - offset);
  const st = await img.blockStatus(offset, want);
  const n = Number.isFinite(st.length) ? Math.min(Math.max(0, Math.floor(st.length)), want) : 0;
  return { allocated: st.present && st.depth === 0, num: n };
}

async function allocCmd(s: IoSession, argv: string[]): Promise<number> {
  const start = num(argv[1]!);
  let count = argv.length === 3 ? num(argv[2]!) : SECTOR;
  const img = image(s);
  let offset = start;
  let remaining = count;
  let sum = 0;
  while (remaining > 0) {
    let r: { allocated: boolean; num: number };
    try {
      r = await isAllocated(img, offset, remaining);
    } catch (e) {
      if (!(e instanceof Qcow2Error)) throw e;
      s.err.write(`${s.progname}: ${e.message}\n`);
      throw new IoFailure(`is_allocated failed: ${strerror(errnoOf(e))}`, errnoOf(e));
    }
    offset += r.num;
    remaining -= r.num;
    if (r.allocated) sum += r.num;
    if (r.num === 0) {
      count -= remaining;
      remaining = 0;
    }
  }
  s.out.write(`${sum}/${count} bytes allocated at offset ${formatIoSize(start)}\n`);
  return 0;
}

async function mapCmd(s: IoSession): Promise<number> {
  const img = image(s);
  let offset = 0;
  let bytes = img.size;
  try {
    while (bytes > 0) {
      const first = await isAllocated(img, offset, bytes);
      if (first.num === 0) {
        s.err.write(`${s.progname}: Unexpected end of image\n`);
        return -EIO;
      }
      let run = first.num;
      while (bytes - run > 0) {
        const next = await isAllocated(img, offset + run, bytes - run);
        if (next.num === 0 || next.allocated !== first.allocated) break;
        run += next.num;
      }
      const line =
        `${formatIoSize(run)} (0x${run.toString(16)}) bytes ${first.allocated ? '    allocated' : 'not allocated'} ` +
        `at offset ${formatIoSize(offset)} (0x${offset.toString(16)})\n`;
      if (!s.out.write(line)) await s.out.flush();
      offset += run;
      bytes -= run;
    }
  } catch (e) {
    if (!(e instanceof Qcow2Error)) throw e;
    s.err.write(`${s.progname}: Failed to get allocation status: ${e.message}\n`);
    return -errnoOf(e);
  }
  return 0;
}

// ---- help, quit, sleep, close --------------------------------------------

async function helpCmd(s: IoSession, argv: string[]): Promise<number> {
  const name = argv[1];
  if (name === undefined) {
    for (const c of sortedCommands()) s.out.write(usageLine(c));
    s.out.write("\nUse 'help commandname' for extended help.\n");
    return 0;
  }
  const c = findIoCommand(name);
  if (c === undefined) {
    s.out.write(`command ${name} not found\n`);
    return -EINVAL;
  }
  s.out.write(usageLine(c, name));
  if (c.help !== undefined) s.out.write(c.help);
  return 0;
}

async function quitCmd(s: IoSession): Promise<number> {
  s.quit = true;
  return 0;
}

async function sleepCmd(s: IoSession, argv: string[]): Promise<number> {
  const { value, rest } = strtol(argv[1]!);
  if (value < 0 || rest !== '') throw new IoFailure(`${argv[1]!} is not a valid number`);
  await new Promise((resolve) => setTimeout(resolve, Math.min(value, 2 ** 31 - 1)));
  return 0;
}

async function closeCmd(s: IoSession): Promise<number> {
  const img = image(s);
  await aioFlushCmd(s);
  s.image = undefined;
  await img.close();
  return 0;
}

// ---- the table -----------------------------------------------------------

const helpText = (lines: string[]): string => `\n${lines.map((l) => (l === '' ? '' : ` ${l}`)).join('\n')}\n\n`;

/** qemu-io's commands that qcow2kit implements. Add write-side commands here. */
export const IO_COMMANDS: readonly IoCommand[] = [
  { name: 'aio_flush', oneline: 'completes all outstanding aio requests', run: aioFlushCmd },
  {
    name: 'aio_read', args: '[-Ciqv] [-P pattern] off len [len..]', oneline: 'asynchronously reads a number of bytes', argmin: 2, argmax: -1, run: aioReadCmd,
    help: helpText(['asynchronously reads a range of bytes from the given offset', '', 'Completes in the background; aio_flush waits for it. Pattern mismatches', 'and I/O errors are printed but do not fail the command.', '-C, -- report statistics in a machine parsable format', '-P, -- use a pattern to verify read data', '-i, -- treat request as invalid, for exercising stats', '-v, -- dump buffer to standard output', '-q, -- quiet mode, do not show I/O statistics']),
  },
  {
    name: 'aio_write', args: '[-Cfiquz] [-P pattern] off len [len..]', oneline: 'asynchronously writes a number of bytes', argmin: 2, argmax: -1, writes: true, run: aioWriteCmd,
    help: helpText(['asynchronously writes a range of bytes from the given offset', '', 'Completes in the background; aio_flush waits for it. Errors are printed', 'but do not fail the command.', '-P, -- use different pattern to fill file', '-C, -- report statistics in a machine parsable format', '-f, -- use Force Unit Access semantics', '-i, -- treat request as invalid, for exercising stats', '-q, -- quiet mode, do not show I/O statistics', '-u, -- with -z, allow unmapping', '-z, -- write zeroes']),
  },
  { name: 'alloc', altname: 'a', args: 'offset [count]', oneline: 'checks if offset is allocated in the file', argmin: 1, argmax: 2, run: allocCmd },
  { name: 'close', altname: 'c', oneline: 'close the current open file', run: closeCmd },
  {
    name: 'discard', altname: 'd', args: '[-Cq] off len', oneline: 'discards a number of bytes at a specified offset', argmin: 2, argmax: -1, writes: true, run: discardCmd,
    help: helpText(['discards a range of bytes from the given offset', '', "Example: 'discard 512 1k' discards 1 KiB starting at byte 512.", '-C, -- report statistics in a machine parsable format', '-q, -- quiet mode, do not show I/O statistics']),
  },
  { name: 'flush', altname: 'f', oneline: 'flush all in-core file state to disk', run: flushCmd },
  { name: 'help', altname: '?', args: '[command]', oneline: 'help for one or all commands', argmin: 0, argmax: 1, global: true, run: helpCmd },
  { name: 'info', altname: 'i', oneline: 'prints information about the current file', run: infoCmd },
  { name: 'length', altname: 'l', oneline: 'gets the length of the current file', run: lengthCmd },
  { name: 'map', args: '', oneline: 'prints the allocated areas of a file', run: mapCmd },
  { name: 'quit', altname: 'q', oneline: 'exit the program', argmin: -1, argmax: -1, global: true, run: quitCmd },
  {
    name: 'read', altname: 'r', args: '[-abCqv] [-P pattern [-s off] [-l len]] off len', oneline: 'reads a number of bytes at a specified offset', argmin: 2, argmax: -1, run: readCmd,
    help: helpText(['reads a range of bytes from the given offset', '', "Example: 'read -v 512 1k' dumps 1 KiB read from byte 512.", '-b, -- read from the VM state rather than the virtual disk', '-C, -- report statistics in a machine parsable format', '-l, -- length for pattern verification (only with -P)', '-p, -- ignored for backwards compatibility', '-P, -- use a pattern to verify read data', '-q, -- quiet mode, do not show I/O statistics', '-s, -- start offset for pattern verification (only with -P)', '-v, -- dump buffer to standard output']),
  },
  {
    name: 'readv', args: '[-Cqv] [-P pattern] off len [len..]', oneline: 'reads a number of bytes at a specified offset', argmin: 2, argmax: -1, run: readvCmd,
    help: helpText(['reads a range of bytes from the given offset into multiple buffers', '', '-C, -- report statistics in a machine parsable format', '-P, -- use a pattern to verify read data', '-v, -- dump buffer to standard output', '-q, -- quiet mode, do not show I/O statistics']),
  },
  { name: 'sleep', oneline: 'waits for the given value in milliseconds', argmin: 1, argmax: 1, noFileOk: true, run: sleepCmd },
  { name: 'truncate', altname: 't', args: '[-m prealloc_mode] off', oneline: 'truncates the current file at the given offset', argmin: 1, argmax: 3, writes: true, run: truncateCmd },
  {
    name: 'write', altname: 'w', args: '[-bcCfnquz] [-P pattern | -s source_file] off len', oneline: 'writes a number of bytes at a specified offset', argmin: 2, argmax: -1, writes: true, run: writeCmd,
    help: helpText(['writes a range of bytes from the given offset', '', "Example: 'write 512 1k' writes 1 KiB of 0xcd bytes at byte 512.", '-b, -- write to the VM state rather than the virtual disk', '-c, -- write compressed data', '-f, -- use Force Unit Access semantics', '-n, -- with -z, don\'t allow slow fallback', '-p, -- ignored for backwards compatibility', '-P, -- use different pattern to fill file', '-s, -- use a pattern file to fill the write buffer', '-C, -- report statistics in a machine parsable format', '-q, -- quiet mode, do not show I/O statistics', '-u, -- with -z, allow unmapping', '-z, -- write zeroes']),
  },
  {
    name: 'writev', args: '[-Cfq] [-P pattern] off len [len..]', oneline: 'writes a number of bytes at a specified offset', argmin: 2, argmax: -1, writes: true, run: writevCmd,
    help: helpText(['writes a range of bytes from the given offset from multiple buffers', '', '-P, -- use different pattern to fill file', '-C, -- report statistics in a machine parsable format', '-f, -- use Force Unit Access semantics', '-q, -- quiet mode, do not show I/O statistics']),
  },
];

function sortedCommands(): IoCommand[] {
  return [...IO_COMMANDS].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Look a command up by name or short alias. */
export function findIoCommand(name: string): IoCommand | undefined {
  return IO_COMMANDS.find((c) => c.name === name || c.altname === name);
}

/** Split a command line the way qemu-io does: on single spaces, no quoting. */
export function splitIoLine(line: string): string[] {
  return line.split(' ').filter((t) => t !== '');
}

/**
 * Run one qemu-io command line. Returns 0 on success or a negative errno; qemu-io exits 1
 * when any command returned an error.
 *
 * @example
 * ```ts
 * await runIoCommand(session, 'alloc 0 64k'); // prints "65536/65536 bytes allocated at offset 0 bytes"
 * ```
 */
export async function runIoCommand(s: IoSession, line: string): Promise<number> {
  const argv = splitIoLine(line);
  const name = argv[0];
  if (name === undefined) return 0;
  const cmd = findIoCommand(name);
  if (cmd === undefined) {
    s.err.write(`command "${name}" not found\n`);
    return -EINVAL;
  }
  if (!cmd.global && !cmd.noFileOk && s.image === undefined) {
    s.err.write("no file open, try 'help open'\n");
    return -EINVAL;
  }
  const argmin = cmd.argmin ?? 0;
  const argmax = cmd.argmax ?? 0;
  const n = argv.length - 1;
  if (n < argmin || (argmax !== -1 && n > argmax)) {
    const expected =
      argmax === -1 ? `at least ${argmin} arguments` : argmin === argmax ? `${argmin} arguments` : `between ${argmin} and ${argmax} arguments`;
    s.err.write(`bad argument count ${n} to ${name}, expected ${expected}\n`);
    return -EINVAL;
  }
  if (cmd.writes && s.readOnly) {
    s.err.write(`${s.progname}: Block node is read-only\n`);
    return -EPERM;
  }
  try {
    return await cmd.run(s, argv, cmd);
  } catch (e) {
    if (e instanceof IoUsage) {
      s.out.write(usageLine(cmd));
      return -EINVAL;
    }
    if (e instanceof IoFailure) {
      if (e.message !== '') s.out.write(`${e.message}\n`);
      return -e.errno;
    }
    if (e instanceof Qcow2Error) {
      s.err.write(`${s.progname}: ${e.message}\n`);
      return -errnoOf(e);
    }
    throw e;
  }
}

/** Wait for every aio request still in flight (qemu-io drains before exiting). */
export async function drainIo(s: IoSession): Promise<void> {
  await aioFlushCmd(s);
}
