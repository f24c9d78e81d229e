/**
 * `qcow2kit io [-f fmt] [-r] [-U] [-c CMD]... [FILE]`: a qemu-io 7.2 work-alike. Commands
 * run in order; the exit code is 1 when any of them failed (qemu-io's rule since 5.0),
 * when the image cannot be opened, or on bad options. Without -c, commands are read from
 * standard input, one per line, after a prompt.
 */
import { Qcow2Error } from '../errors.js';
import { ArgError, parseArgs, type ArgSpec } from './args.js';
import {
  createIoSession,
  drainIo,
  findIoCommand,
  runIoCommand,
  splitIoLine,
  type FormatSpecific,
  type IoImage,
  type IoSession,
} from './io-commands.js';
import { PROGRAM, version, type CliIO } from './main.js';
import { monotonicMs } from './clock.js';

/** Opens the image named on the command line. */
export type IoOpener = (path: string, options: { format?: string; readOnly: boolean }) => Promise<IoImage>;

/** What {@link runIo} needs from its environment; tests pass fakes. */
export interface IoDeps {
  open: IoOpener;
  readFile?: (path: string) => Promise<Uint8Array>;
  now?: () => number;
  /** "Format specific information" for `info`; default: the image's own `info` object. */
  formatSpecific?: IoSession['formatSpecific'];
}

// Same order as qemu-io's long option table: glibc lists ambiguous matches in this order.
const SPEC: ArgSpec = {
  options: [
    { name: 'help', short: 'h', long: 'help', stop: true },
    { name: 'version', short: 'V', long: 'version', stop: true },
    { name: 'cmd', short: 'c', long: 'cmd', arg: 'required' },
    { name: 'format', short: 'f', long: 'format', arg: 'required' },
    { name: 'read-only', short: 'r', long: 'read-only' },
    { name: 'snapshot', short: 's', long: 'snapshot' },
    { name: 'nocache', short: 'n', long: 'nocache' },
    { name: 'copy-on-read', short: 'C', long: 'copy-on-read' },
    { name: 'misalign', short: 'm', long: 'misalign' },
    { name: 'native-aio', short: 'k', long: 'native-aio' },
    { name: 'aio', short: 'i', long: 'aio', arg: 'required' },
    { name: 'discard', short: 'd', long: 'discard', arg: 'required' },
    { name: 'cache', short: 't', long: 'cache', arg: 'required' },
    { name: 'trace', short: 'T', long: 'trace', arg: 'required' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
    { name: 'force-share', short: 'U', long: 'force-share' },
  ],
};

const CACHE_MODES = new Set(['none', 'off', 'writeback', 'writethrough', 'directsync', 'unsafe']);
const AIO_MODES = new Set(['threads', 'native', 'io_uring']);
const DISCARD_MODES = new Set(['ignore', 'off', 'unmap', 'on']);
const UNSUPPORTED = new Set(['snapshot', 'copy-on-read', 'object', 'image-opts']);

function usage(): string {
  return [
    `Usage: ${PROGRAM} io [OPTIONS]... [-c STRING]... [file]`,
    'qemu-io compatible disk exerciser',
    '',
    '  -c, --cmd STRING     execute command with its arguments',
    '                       from the given string',
    '  -f, --format FMT     specifies the block driver to use',
    '  -r, --read-only      export read-only',
    '  -n, --nocache        accepted, no effect',
    '  -m, --misalign       accepted, no effect',
    '  -k, --native-aio     accepted, no effect',
    '  -i, --aio=MODE       accepted, no effect',
    '  -t, --cache=MODE     accepted, no effect',
    '  -d, --discard=MODE   accepted, no effect',
    '  -U, --force-share    force shared permissions (no locking is done)',
    '  -h, --help           display this help and exit',
    '  -V, --version        output version information and exit',
    '',
    `See '${PROGRAM} io -c help' for information on available commands.`,
    '',
  ].join('\n');
}

/**
 * Run qemu-io's command line with the given environment.
 *
 * @example
 * ```ts
 * const code = await runIo(['-c', 'read -P 0 0 64k', 'disk.qcow2'], io, { open: openImageFile });
 * ```
 */
export async function runIo(argv: readonly string[], io: CliIO, deps: IoDeps): Promise<number> {
  let args;
  try {
    args = parseArgs(argv, SPEC, { argv0: PROGRAM, style: 'getopt' });
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    io.stderr.write(`${PROGRAM}: ${e.getoptMessage}\n`);
    io.stdout.write(usage());
    return 1;
  }
  for (const o of args.options) {
    const bad = (what: string): number => {
      io.stderr.write(`${PROGRAM}: Invalid ${what} option: ${o.value ?? ''}\n`);
      return 1;
    };
    if (o.name === 'help') {
      io.stdout.write(usage());
      return 0;
    }
    if (o.name === 'version') {
      io.stdout.write(`${PROGRAM} io version ${version()} (qemu-io 7.2 compatible)\n`);
      return 0;
    }
    if (o.name === 'cache' && !CACHE_MODES.has(o.value ?? '')) return bad('cache');
    if (o.name === 'aio' && !AIO_MODES.has(o.value ?? '')) return bad('aio');
    if (o.name === 'discard' && !DISCARD_MODES.has(o.value ?? '')) return bad('discard');
    if (UNSUPPORTED.has(o.name)) {
      io.stderr.write(`${PROGRAM}: option --${o.name} is not supported\n`);
      return 1;
    }
  }
  if (args.positionals.length > 1) {
    io.stdout.write(usage());
    return 1;
  }
  const commands = args.has('cmd') ? args.all('cmd') : undefined;
  const readOnly = args.has('read-only');
  const path = args.positionals[0];
  const format = args.get('format');

  const s = createIoSession({
    out: io.stdout,
    err: io.stderr,
    progname: PROGRAM,
    readOnly,
    formatSpecific: deps.formatSpecific ?? formatSpecific,
    ...(deps.now === undefined ? {} : { now: deps.now }),
    ...(deps.readFile === undefined ? {} : { readFile: deps.readFile }),
  });
  if (path !== undefined) {
    try {
      s.image = await openForCommands(deps.open, path, format, readOnly, commands);
    } catch (e) {
      if (!(e instanceof Qcow2Error) && !isSystemError(e)) throw e;
      io.stderr.write(`${PROGRAM}: can't open device ${path}: ${(e as Error).message}\n`);
      return 1;
    }
  }

  let failed = false;
  try {
    if (commands !== undefined) {
      for (const line of commands) {
        if (s.quit) break;
        if ((await runIoCommand(s, line)) < 0) failed = true;
      }
    } else {
      failed = await interactive(s, io);
    }
    await drainIo(s);
  } finally {
    const img = s.image;
    s.image = undefined;
    await img?.close();
  }
  return failed ? 1 : 0;
}

/**
 * qemu-io opens read-write unless -r. Opening read-only when no command writes avoids
 * needless write access; when writing is wanted but the image cannot be opened for it, we
 * fall back to read-only and let the write commands report "Operation not supported".
 */
async function openForCommands(open: IoOpener, path: string, format: string | undefined, readOnly: boolean, commands: readonly string[] | undefined): Promise<IoImage> {
  const fmt = format === undefined ? {} : { format };
  const writes = !readOnly && (commands === undefined || commands.some((line) => findIoCommand(splitIoLine(line)[0] ?? '')?.writes === true));
  if (!writes) return open(path, { ...fmt, readOnly: true });
  try {
    return await open(path, { ...fmt, readOnly: false });
  } catch (e) {
    if (e instanceof Qcow2Error && (e.code === 'READ_ONLY' || e.code === 'UNSUPPORTED')) return open(path, { ...fmt, readOnly: true });
    throw e;
  }
}

function isSystemError(e: unknown): boolean {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string';
}

/** Read commands from stdin after a prompt, like qemu-io without -c. True when one failed. */
async function interactive(s: IoSession, io: CliIO): Promise<boolean> {
  let failed = false;
  const prompt = async (): Promise<void> => {
    io.stdout.write(`${PROGRAM}> `);
    await io.stdout.flush();
  };
  await prompt();
  if (io.stdin === undefined) return false;
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of io.stdin) {
    pending += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if ((await runIoCommand(s, line)) < 0) failed = true;
      if (s.quit) return failed;
      await prompt();
    }
  }
  pending += decoder.decode();
  if (pending !== '' && (await runIoCommand(s, pending)) < 0) failed = true;
  return failed;
}

/**
 * "Format specific information" carried by the image itself as an `info` object in
 * qemu-img info's JSON shape (`{'format-specific': {type, data}}`), if any.
 */
export function formatSpecific(image: IoImage): FormatSpecific | undefined {
  const info = (image as { info?: unknown }).info;
  if (typeof info !== 'object' || info === null) return undefined;
  const spec = (info as Record<string, unknown>)['format-specific'];
  if (typeof spec !== 'object' || spec === null) return undefined;
  const data = (spec as { data?: unknown }).data;
  return typeof data === 'object' && data !== null ? (data as FormatSpecific) : undefined;
}

/** `qcow2kit io ...`: qemu-io over files on the local file system. */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const [{ openImageFile, Image }, { readWholeFile }, { imageInfo }] = await Promise.all([
    import('../node.js'),
    import('../storage/node-fs.js'),
    import('./image-info.js'),
  ]);
  return runIo(argv, io, {
    // Like qemu-io: follow backing files and probe their format when the image names none.
    open: (path, options) => openImageFile(path, { ...options, dependencies: 'follow-and-probe' }),
    now: monotonicMs,
    readFile: async (path) => new Uint8Array(await readWholeFile(path)),
    formatSpecific: async (image) => {
      if (!(image instanceof Image)) return formatSpecific(image);
      const data = (await imageInfo(image, ''))['format-specific']?.data;
      return data as FormatSpecific | undefined;
    },
  });
}
