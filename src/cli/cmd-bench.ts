/**
 * `bench [-c count] [-d depth] [-f fmt] [--flush-interval=N] [-i aio] [-n] [--no-drain]
 * [-o offset] [--pattern=N] [-q] [-s size] [-S step] [-t cache] [-w] [-U] FILE`:
 * qemu-img 7.2's bench, same options, output lines, error texts and exit codes.
 *
 * Request offsets advance by the step modulo the image size, as in 7.2: a wrapped request can
 * cross the end and then fails with "Failed request: Input/output error", as it does there.
 *
 * Differences, on purpose: `-d 0` with requests to send is refused ("Invalid queue depth
 * specified") where qemu-img waits forever; a buffer as large as the image is read at
 * offset 0 where qemu-img aborts; an empty image is not a division by zero. O_DIRECT (-t none) and the aio engines have no meaning
 * here and are only validated; writethrough and unsafe cache modes are emulated (a flush
 * after each write; flushes ignored).
 */
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import { BenchRequestError, runBench, type BenchParams, type BenchTarget } from '../ops/bench.js';
import { formatFixed, parseSizeArg } from '../util/size.js';
import { ArgError, parseCommandArgs, type ParsedOption } from './args.js';
import { CliError } from './cli-error.js';
import { monotonicMs } from './clock.js';
import type { CliIO } from './main.js';
import { openForCli } from './open-for-cli.js';
import { useOnePoolThread } from './pool-threads.js';

const SPEC = {
  options: [
    { name: 'count', short: 'c', arg: 'required' },
    { name: 'depth', short: 'd', arg: 'required' },
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'native-aio', short: 'n' },
    { name: 'aio', short: 'i', arg: 'required' },
    { name: 'offset', short: 'o', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'size', short: 's', arg: 'required' },
    { name: 'step', short: 'S', arg: 'required' },
    { name: 'cache', short: 't', arg: 'required' },
    { name: 'write', short: 'w' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'flush-interval', long: 'flush-interval', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
    { name: 'pattern', long: 'pattern', arg: 'required' },
    { name: 'no-drain', long: 'no-drain' },
  ],
} as const;

const INT_MAX = 2 ** 31 - 1;
const U64_MAX = (1n << 64n) - 1n;

/** What a bench run opens: an Image, or a fake in tests. */
export type BenchImage = BenchTarget & Pick<Image, 'close'>;

/** Opens the image named on the command line. */
export type BenchOpener = (path: string, options: { format?: string | undefined; readOnly: boolean }) => Promise<BenchImage>;

/** The environment of a bench run; tests pass fakes. */
export interface BenchDeps {
  open: BenchOpener;
  now?: () => number;
  /** Called with the parsed options before the image is opened (the run's first I/O). */
  beforeOpen?: (o: BenchParams) => void;
}

/** Cache modes qemu-img accepts (bdrv_parse_cache_mode) and what we emulate of them. */
const CACHE_MODES: Readonly<Record<string, { direct: boolean; writethrough: boolean; noFlush: boolean }>> = {
  none: { direct: true, writethrough: false, noFlush: false },
  off: { direct: true, writethrough: false, noFlush: false },
  writeback: { direct: false, writethrough: false, noFlush: false },
  writethrough: { direct: false, writethrough: true, noFlush: false },
  directsync: { direct: true, writethrough: true, noFlush: false },
  unsafe: { direct: false, writethrough: false, noFlush: true },
};

/** Everything the options say, before the image is opened. */
interface BenchOptions extends BenchParams {
  format: string | undefined;
  forceShare: boolean;
  nativeAio: boolean;
  direct: boolean;
  imageOpts: boolean;
}

/** `qcow2kit bench ...` over files on disk. */
export async function run(argv: string[], io: CliIO): Promise<number> {
  return runBenchCommand(argv, io, {
    open: (path, o) => openForCli(path, { format: o.format, readOnly: o.readOnly }),
    now: monotonicMs,
    // Buffered writes land in the page cache in microseconds, less than waking one of
    // libuv's four pool threads for each costs: with one thread, `bench -w -c 30000 -d 8
    // -s 64k` took ~0.8 s instead of ~0.94 s (qemu-img ~0.77 s). Reads may wait for the disk
    // and writethrough waits for a sync after every write: those keep the four.
    beforeOpen: (o) => {
      if (o.write && o.writethrough !== true) useOnePoolThread();
    },
  });
}

/**
 * Run the bench command with the given environment.
 *
 * @example
 * ```ts
 * const code = await runBenchCommand(['-w', '-c', '1000', 'disk.qcow2'], io, { open });
 * ```
 */
export async function runBenchCommand(argv: readonly string[], io: CliIO, deps: BenchDeps): Promise<number> {
  const o = parseBenchOptions(argv);
  if (o.imageOpts) {
    if (o.format !== undefined) throw new CliError('--image-opts and --format are mutually exclusive');
    throw new CliError('--image-opts is not supported');
  }
  const file = o.positional;
  if (!o.write && o.flushInterval > 0) throw new CliError('--flush-interval is only available in write tests');
  if (o.flushInterval > 0 && o.flushInterval < o.depth) throw new CliError("Flush interval can't be smaller than depth");
  // qemu-img waits forever here; say why instead.
  if (o.depth === 0 && o.count > 0) throw new CliError('Invalid queue depth specified');

  if (o.forceShare && o.write) throw new CliError(`Could not open '${file}': force-share=on can only be used with read-only images`);
  deps.beforeOpen?.(o);
  const image = await deps.open(file, { format: o.format, readOnly: !o.write });
  try {
    if (o.nativeAio && !o.direct) {
      throw new CliError(`Could not open '${file}': aio=native was specified, but it requires cache.direct=on, which was not specified.`);
    }
    const step = o.step === 0 ? o.bufferSize : o.step;
    io.stdout.write(
      `Sending ${o.count} ${o.write ? 'write' : 'read'} requests, ${o.bufferSize} bytes each, ${o.depth} in parallel ` +
        `(starting at offset ${o.offset}, step size ${step})\n`,
    );
    if (o.flushInterval > 0) io.stdout.write(`Sending flush every ${o.flushInterval} requests\n`);
    await io.stdout.flush();
    let result;
    try {
      result = await runBench(image, o, deps.now);
    } catch (e) {
      if (!(e instanceof BenchRequestError)) throw e;
      const what = e.op === 'flush' ? 'Failed flush request' : 'Failed request';
      throw new CliError(`${what}: ${describeFailure(e.cause)}`, { cause: e.cause });
    }
    io.stdout.write(`Run completed in ${formatFixed(result.elapsedMs / 1000, 3)} seconds.\n`);
  } finally {
    await image.close();
  }
  return 0;
}

/** Parse and validate the options in command-line order: the first bad one is reported, as qemu-img exits there. */
function parseBenchOptions(argv: readonly string[]): BenchOptions & { positional: string } {
  let parsedArgs;
  let parseError: ArgError | undefined;
  let options: readonly ParsedOption[];
  try {
    parsedArgs = parseCommandArgs('bench', argv, SPEC);
    options = parsedArgs.options;
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    // getopt has acted on the options before the bad one: their errors come first.
    parseError = e;
    options = e.parsed;
  }
  const o: BenchOptions = {
    count: 75000,
    depth: 64,
    bufferSize: 4096,
    step: 0,
    offset: 0,
    write: false,
    pattern: 0,
    flushInterval: 0,
    drainOnFlush: true,
    format: undefined,
    forceShare: false,
    nativeAio: false,
    direct: false,
    imageOpts: false,
  };
  for (const { name, value = '' } of options) {
    switch (name) {
      case 'count':
        o.count = parseUlong(value, INT_MAX, 'Invalid request count specified');
        break;
      case 'depth':
        o.depth = parseUlong(value, INT_MAX, 'Invalid queue depth specified');
        break;
      case 'format':
        o.format = value;
        break;
      case 'native-aio':
        o.nativeAio = true;
        break;
      case 'aio':
        if (value === 'native') o.nativeAio = true;
        else if (value !== 'threads' && value !== 'io_uring') throw new CliError(`Invalid aio option: ${value}`);
        break;
      case 'offset':
        o.offset = sizeArg('offset', value);
        break;
      case 'quiet':
        // qemu-img bench prints its two lines even with -q; -q only quiets the open.
        break;
      case 'size':
        o.bufferSize = sizeArg('buffer size', value, INT_MAX);
        break;
      case 'step':
        o.step = sizeArg('step_size', value, INT_MAX);
        break;
      case 'cache': {
        const mode = Object.hasOwn(CACHE_MODES, value) ? CACHE_MODES[value] : undefined;
        if (mode === undefined) throw new CliError('Invalid cache mode');
        o.direct = mode.direct;
        o.writethrough = mode.writethrough;
        o.noFlush = mode.noFlush;
        break;
      }
      case 'write':
        o.write = true;
        break;
      case 'force-share':
        o.forceShare = true;
        break;
      case 'pattern':
        o.pattern = parseUlong(value, 0xff, 'Invalid pattern byte specified');
        break;
      case 'flush-interval':
        o.flushInterval = parseUlong(value, INT_MAX, 'Invalid flush interval specified');
        break;
      case 'no-drain':
        o.drainOnFlush = false;
        break;
      case 'image-opts':
        o.imageOpts = true;
        break;
    }
  }
  if (parseError !== undefined) throw parseError;
  const positionals = parsedArgs?.positionals ?? [];
  if (positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  return { ...o, positional: positionals[0]! };
}

/** qemu-img's cvtnum_full() with its message, as a CliError. */
function sizeArg(name: string, text: string, max?: number): number {
  try {
    return parseSizeArg(name, text, max === undefined ? {} : { max });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(e.message);
    throw e;
  }
}

/**
 * QEMU's qemu_strtoul(text, NULL, 0) followed by `res > max`: C strtoul in base 0 (leading
 * space, a sign, 0x hex, 0 octal; "-1" wraps to ULONG_MAX), the whole string consumed.
 */
export function parseUlong(text: string, max: number, message: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (m === null) throw new CliError(message);
  const digits = m[2]!;
  let v = /^0[xX]/.test(digits) ? BigInt(digits) : digits.length > 1 && digits[0] === '0' ? BigInt(`0o${digits.slice(1)}`) : BigInt(digits);
  if (v > U64_MAX) throw new CliError(message); // ERANGE
  if (m[1] === '-') v = (U64_MAX + 1n - v) & U64_MAX;
  if (v > BigInt(max)) throw new CliError(message);
  return Number(v);
}

/** Text after "Failed request: ": strerror() for system errors and range errors, else the message. */
function describeFailure(e: unknown): string {
  if (e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT') return 'Input/output error'; // QEMU: -EIO beyond the end
  const code = findErrno(e);
  if (code !== undefined && Object.hasOwn(STRERROR, code)) return STRERROR[code]!;
  return e instanceof Error ? e.message : String(e);
}

function findErrno(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('E') && !code.startsWith('ERR')) return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

const STRERROR: Readonly<Record<string, string>> = {
  EIO: 'Input/output error',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EFBIG: 'File too large',
  EINVAL: 'Invalid argument',
  EBADF: 'Bad file descriptor',
  EDQUOT: 'Disk quota exceeded',
};
