/**
 * The `qcow2kit` command line: dispatch to one module per command, qemu-img style errors.
 *
 * Command contract: `src/cli/cmd-<name>.ts` exports
 * `run(argv: string[], io: CliIO): Promise<number>` where `argv` holds the arguments after
 * the command name. It returns the exit code, or throws CliError / Qcow2Error (printed as
 * `qcow2kit: <message>`, exit 1 or CliError.exitCode) or HelpRequest (global help, exit 0).
 * It writes only through `io`, never to process.stdout, so tests can run it in-process.
 */
import { readFileSync, writeSync } from 'node:fs';
import { Qcow2Error } from '../errors.js';
import { parseArgs, type ArgSpec } from './args.js';
import { CliError, HelpRequest } from './cli-error.js';

/** Name printed in front of error messages (qemu-img prints "qemu-img"). */
export const PROGRAM = 'qcow2kit';

/**
 * A buffered output stream. Writes are cheap (they queue); when `write` returns false the
 * caller should `await flush()` before writing much more, so memory stays bounded when
 * printing millions of lines into a slow pipe.
 */
export interface CliWriter {
  /** Queue text or bytes. False when the queue is past its high-water mark. */
  write(chunk: string | Uint8Array): boolean;
  /** Hand everything queued to the sink and wait until it accepts more. */
  flush(): Promise<void>;
  /** Writing to a terminal (progress bars only make sense there). */
  readonly isTTY: boolean;
}

/** What a command may touch of the outside world. */
export interface CliIO {
  readonly stdout: CliWriter;
  readonly stderr: CliWriter;
  /** Environment variables (QCOW2KIT_DEBUG=1 prints stacks of unexpected errors). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Standard input, for commands that read commands or data from it (qemu-io without -c). */
  readonly stdin?: AsyncIterable<string | Uint8Array>;
}

/** What a command module exports. */
export interface CommandModule {
  run(argv: string[], io: CliIO): Promise<number>;
}

/** Lazily loaded command modules, in qemu-img's order of help. */
export type CommandRegistry = Readonly<Record<string, () => Promise<unknown>>>;

/** The built-in commands. Missing modules report "Command not supported yet". */
export const COMMANDS: CommandRegistry = {
  amend: () => import('./cmd-amend.js' as string),
  bench: () => import('./cmd-bench.js' as string),
  bitmap: () => import('./cmd-bitmap.js' as string),
  check: () => import('./cmd-check.js' as string),
  commit: () => import('./cmd-commit.js' as string),
  compare: () => import('./cmd-compare.js' as string),
  convert: () => import('./cmd-convert.js' as string),
  create: () => import('./cmd-create.js' as string),
  dd: () => import('./cmd-dd.js' as string),
  info: () => import('./cmd-info.js' as string),
  io: () => import('./io.js'),
  map: () => import('./cmd-map.js' as string),
  measure: () => import('./cmd-measure.js' as string),
  snapshot: () => import('./cmd-snapshot.js' as string),
  rebase: () => import('./cmd-rebase.js' as string),
  resize: () => import('./cmd-resize.js' as string),
};

/** One-line syntax per command for `--help` (qemu-img 7.2's, for what we accept). */
const SYNTAX: Readonly<Record<string, string>> = {
  amend: '[--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename',
  bench: '[-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename',
  bitmap: '(--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap',
  check: '[--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename',
  commit: '[--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename',
  compare: '[--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2',
  convert: '[--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename [filename2 [...]] output_filename',
  create: '[--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]',
  dd: '[--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output',
  info: '[--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename',
  io: '[-f fmt] [-r] [-U] [-c command]... [filename]    (qemu-io; see "qcow2kit io -c help")',
  map: '[--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename',
  measure: '[--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]',
  snapshot: '[--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename',
  rebase: '[--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename',
  resize: '[--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size',
};

const TOP_SPEC: ArgSpec = {
  inOrder: true,
  options: [
    { name: 'help', short: 'h', long: 'help', stop: true },
    { name: 'version', short: 'V', long: 'version', stop: true },
    { name: 'trace', short: 'T', long: 'trace', arg: 'required' },
  ],
};

/** The package version, read from package.json next to dist/. */
export function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

function versionText(): string {
  return `${PROGRAM} version ${version()} (qemu-img 7.2 compatible)\n`;
}

/** The text `qcow2kit --help` prints. */
export function helpText(registry: CommandRegistry = COMMANDS): string {
  const lines = [
    versionText().trimEnd(),
    `usage: ${PROGRAM} [standard options] command [command options]`,
    'qcow2 disk image toolkit, command line compatible with qemu-img',
    '',
    "    '-h', '--help'       display this help and exit",
    "    '-V', '--version'    output version information and exit",
    '',
    'Command syntax:',
    ...Object.keys(registry).map((name) => `  ${name} ${SYNTAX[name] ?? ''}`.trimEnd()),
    '',
    "Sizes take the suffixes k, M, G, T, P and E (powers of 1024); 'b' is ignored.",
    "Options and exit codes follow qemu-img 7.2; run 'qemu-img --help' for details.",
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * Run `qcow2kit <argv...>` and return the exit code. Never throws; flushes both writers.
 *
 * @example
 * ```ts
 * const io = createCaptureIO();
 * const code = await main(['info', 'disk.qcow2'], io);
 * console.log(code, io.stdoutText());
 * ```
 */
export async function main(argv: readonly string[], io: CliIO, registry: CommandRegistry = COMMANDS): Promise<number> {
  let code: number;
  try {
    code = await dispatch(argv, io, registry);
  } catch (e) {
    code = report(e, io);
  }
  await Promise.allSettled([io.stdout.flush(), io.stderr.flush()]);
  return code;
}

async function dispatch(argv: readonly string[], io: CliIO, registry: CommandRegistry): Promise<number> {
  const top = parseArgs(argv, TOP_SPEC, { argv0: PROGRAM });
  if (top.stoppedAt === 'help') throw new HelpRequest();
  if (top.stoppedAt === 'version') {
    io.stdout.write(versionText());
    return 0;
  }
  const [name, ...rest] = top.positionals;
  if (name === undefined) throw new CliError('Not enough arguments', { usage: true });
  const load = Object.hasOwn(registry, name) ? registry[name] : undefined;
  if (load === undefined) throw new CliError(`Command not found: ${name}`, { usage: true });
  const mod = await loadCommand(name, load);
  const code = await mod.run(rest, io);
  return Number.isInteger(code) ? code : 1;
}

async function loadCommand(name: string, load: () => Promise<unknown>): Promise<CommandModule> {
  let mod: unknown;
  try {
    mod = await load();
  } catch (e) {
    // Only the command's own file being absent means "not written yet"; a missing
    // dependency of an existing command is a real error and is reported as such.
    const err = e as { code?: unknown; message?: unknown };
    const own = name === 'io' ? '/io.js' : `/cmd-${name}.js`;
    if (err.code === 'ERR_MODULE_NOT_FOUND' && typeof err.message === 'string' && err.message.includes(`${own}'`)) {
      throw new CliError(`Command not supported yet: ${name}`);
    }
    throw e;
  }
  const run = (mod as { run?: unknown } | null)?.run;
  if (typeof run !== 'function') throw new CliError(`Command not supported yet: ${name}`);
  return { run: run as CommandModule['run'] };
}

/** Print an error the way qemu-img does and return the exit code. */
function report(e: unknown, io: CliIO): number {
  if (e instanceof HelpRequest) {
    io.stdout.write(helpText());
    return 0;
  }
  if (e instanceof CliError) {
    printLines(io, e.message);
    if (e.usage) io.stderr.write(`Try '${PROGRAM} --help' for more information\n`);
    return e.exitCode;
  }
  if (e instanceof Qcow2Error) {
    printLines(io, e.message);
    if (io.env.QCOW2KIT_DEBUG === '1' && e.stack !== undefined) io.stderr.write(`${e.stack}\n`);
    return 1;
  }
  const message = e instanceof Error ? e.message : String(e);
  printLines(io, message.split('\n')[0] ?? '');
  if (io.env.QCOW2KIT_DEBUG === '1' && e instanceof Error && e.stack !== undefined) io.stderr.write(`${e.stack}\n`);
  return 1;
}

/** Like error_report(): each line gets the program prefix. */
function printLines(io: CliIO, message: string): void {
  const lines = message === '' ? ['Unknown error'] : message.split('\n');
  for (const line of lines) io.stderr.write(`${PROGRAM}: ${line}\n`);
}

/** Bytes queued before a writer asks its caller to flush. */
const HIGH_WATER = 64 * 1024;
const utf8 = new TextEncoder();

interface NodeWritable {
  write(chunk: string | Uint8Array): boolean;
  once(event: string, listener: (...args: unknown[]) => void): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  removeListener(event: string, listener: (...args: unknown[]) => void): unknown;
  readonly isTTY?: boolean;
}

/** Writing straight to the descriptor behind a stream (see StreamWriter). */
export interface DirectWrite {
  fd: number;
  /** writeSync(2) of `bytes` from `offset`; tests pass fakes. */
  writeSync?: (fd: number, bytes: Uint8Array, offset: number) => number;
}

/**
 * A CliWriter over a Node writable stream (process.stdout). Small writes are coalesced
 * into 64 KiB chunks; a broken pipe (EPIPE, `qcow2kit map ... | head`) silently drops
 * further output instead of crashing.
 *
 * Given a function, it gets the stream from it on first use: creating process.stdout or
 * process.stderr loads tty, net and stream code (~4 ms), which a command that prints nothing
 * (convert, create -q) need not pay for. With `direct`, output goes to the descriptor with
 * writeSync and the stream is not made at all: Node writes stdout and stderr synchronously on
 * Linux anyway. The stream takes over if the descriptor would block (a non-blocking pipe).
 */
export class StreamWriter implements CliWriter {
  #stream: NodeWritable | undefined;
  readonly #getStream: (() => NodeWritable) | undefined;
  #direct: Required<DirectWrite> | undefined;
  #parts: (string | Uint8Array)[] = [];
  #queued = 0;
  #needsDrain = false;
  #broken = false;

  constructor(stream: NodeWritable | (() => NodeWritable), direct?: DirectWrite) {
    if (typeof stream === 'function') this.#getStream = stream;
    else this.#attach(stream);
    if (direct !== undefined) this.#direct = { fd: direct.fd, writeSync: direct.writeSync ?? ((fd, bytes, offset) => writeSync(fd, bytes, offset)) };
  }

  get isTTY(): boolean {
    return this.#sink().isTTY === true;
  }

  #sink(): NodeWritable {
    return this.#stream ?? this.#attach(this.#getStream!());
  }

  #attach(stream: NodeWritable): NodeWritable {
    this.#stream = stream;
    // EPIPE and friends: the reader went away; drop the rest of the output quietly.
    stream.on('error', () => {
      this.#broken = true;
    });
    return stream;
  }

  write(chunk: string | Uint8Array): boolean {
    if (this.#broken) return true;
    this.#parts.push(chunk);
    this.#queued += typeof chunk === 'string' ? chunk.length : chunk.byteLength;
    if (this.#queued >= HIGH_WATER) this.#push();
    return !this.#needsDrain;
  }

  async flush(): Promise<void> {
    this.#push();
    while (this.#needsDrain && !this.#broken) {
      // needsDrain is only ever set after a write, so the stream exists by now.
      const stream = this.#sink();
      await new Promise<void>((resolve) => {
        const done = (): void => {
          stream.removeListener('drain', done);
          stream.removeListener('error', done);
          stream.removeListener('close', closed);
          resolve();
        };
        const closed = (): void => {
          this.#broken = true;
          done();
        };
        stream.once('drain', done);
        stream.once('error', done);
        stream.once('close', closed);
      });
    }
  }

  #push(): void {
    if (this.#parts.length === 0) return;
    const parts = this.#parts;
    this.#parts = [];
    this.#queued = 0;
    if (this.#broken) return;
    let text = '';
    for (const p of parts) {
      if (typeof p === 'string') {
        text += p;
        continue;
      }
      if (text !== '') this.#send(text);
      text = '';
      this.#send(p);
    }
    if (text !== '') this.#send(text);
  }

  #send(chunk: string | Uint8Array): void {
    if (this.#direct !== undefined) {
      const bytes = typeof chunk === 'string' ? utf8.encode(chunk) : chunk;
      let done = 0;
      try {
        while (done < bytes.byteLength) done += this.#direct.writeSync(this.#direct.fd, bytes, done);
        return;
      } catch (e) {
        if ((e as { code?: unknown }).code !== 'EAGAIN') {
          this.#broken = true; // EPIPE and the like, as for the stream
          return;
        }
        this.#direct = undefined;
        chunk = bytes.subarray(done);
      }
    }
    try {
      const stream = this.#sink();
      if (!stream.write(chunk) && !this.#needsDrain) {
        // Listen from now on: a 'drain' that fires before flush() is called must not be missed,
        // or the final flush would wait forever.
        this.#needsDrain = true;
        stream.once('drain', () => {
          this.#needsDrain = false;
        });
      }
    } catch {
      this.#broken = true;
    }
  }
}

/** A CliIO over the real process streams. */
export function createNodeIO(): CliIO {
  return {
    // Windows consoles need the stream's encoding handling.
    stdout: new StreamWriter(() => process.stdout, process.platform === 'win32' ? undefined : { fd: 1 }),
    stderr: new StreamWriter(() => process.stderr, process.platform === 'win32' ? undefined : { fd: 2 }),
    env: process.env,
    // Touch process.stdin only when a command reads it: creating it can hold the process open.
    stdin: { [Symbol.asyncIterator]: () => (process.stdin as AsyncIterable<string | Uint8Array>)[Symbol.asyncIterator]() },
  };
}

/** A CliWriter that keeps everything in memory. */
export class MemoryWriter implements CliWriter {
  readonly isTTY: boolean;
  readonly #parts: (string | Uint8Array)[] = [];
  /** Number of flush() calls, for tests of backpressure handling. */
  flushes = 0;

  constructor(isTTY = false) {
    this.isTTY = isTTY;
  }

  write(chunk: string | Uint8Array): boolean {
    this.#parts.push(typeof chunk === 'string' ? chunk : chunk.slice());
    return true;
  }

  async flush(): Promise<void> {
    this.flushes++;
  }

  /** Everything written, bytes decoded as UTF-8. */
  text(): string {
    const decoder = new TextDecoder();
    return this.#parts.map((p) => (typeof p === 'string' ? p : decoder.decode(p))).join('');
  }
}

/** A CliIO capturing output, for tests. */
export interface CaptureIO extends CliIO {
  readonly stdout: MemoryWriter;
  readonly stderr: MemoryWriter;
  stdoutText(): string;
  stderrText(): string;
}

/**
 * An in-memory CliIO for running commands in tests.
 *
 * @example
 * ```ts
 * const io = createCaptureIO({ stdin: ['read 0 512\n'] });
 * const code = await main(['io', '-c', 'info', 'disk.qcow2'], io);
 * assert.equal(io.stderrText(), '');
 * ```
 */
export function createCaptureIO(
  options: { env?: Record<string, string | undefined>; isTTY?: boolean; stdin?: Iterable<string | Uint8Array> | AsyncIterable<string | Uint8Array> } = {},
): CaptureIO {
  const stdout = new MemoryWriter(options.isTTY ?? false);
  const stderr = new MemoryWriter(options.isTTY ?? false);
  const stdin = options.stdin;
  return {
    stdout,
    stderr,
    env: options.env ?? {},
    ...(stdin === undefined ? {} : { stdin: toAsync(stdin) }),
    stdoutText: () => stdout.text(),
    stderrText: () => stderr.text(),
  };
}

function toAsync<T>(src: Iterable<T> | AsyncIterable<T>): AsyncIterable<T> {
  if (Symbol.asyncIterator in src) return src;
  return (async function* gen() {
    yield* src;
  })();
}

/** Entry point used by bin/qcow2kit. */
export async function runCli(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  return main(argv, createNodeIO());
}
