/**
 * `bitmap (--add | --remove | --clear | --enable | --disable | --merge SRC)... [-g GRAN]
 * [-b SRC_FILE [-F SRC_FMT]] [-f FMT] FILE BITMAP`: qemu-img 7.2's persistent dirty bitmap
 * editing. Actions run in command-line order on the one bitmap named; the first failure
 * stops the rest, and what was done before it is still saved when the image closes, as in
 * qemu-img.
 */
import { resolve } from 'node:path';
import { Qcow2Error } from '../errors.js';
import type { FormatDriver } from '../format/driver.js';
import { Qcow2Bitmaps } from '../format/qcow2/bitmaps.js';
import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import type { Image } from '../image/image.js';
import { realpathOf } from '../storage/node-fs.js';
import { parseSizeArg } from '../util/size.js';
import { ArgError, parseCommandArgs, type ArgSpec, type ParsedOption } from './args.js';
import { CliError } from './cli-error.js';
import { PROGRAM, type CliIO } from './main.js';
import { openForCli } from './open-for-cli.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'help', short: 'h', long: 'help', stop: true },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
    { name: 'add', long: 'add' },
    { name: 'remove', long: 'remove' },
    { name: 'clear', long: 'clear' },
    { name: 'enable', long: 'enable' },
    { name: 'disable', long: 'disable' },
    { name: 'merge', long: 'merge', arg: 'required' },
    { name: 'granularity', short: 'g', long: 'granularity', arg: 'required' },
    { name: 'source-file', short: 'b', long: 'source-file', arg: 'required' },
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'source-format', short: 'F', long: 'source-format', arg: 'required' },
  ],
};

const ACTIONS = new Set(['add', 'remove', 'clear', 'enable', 'disable', 'merge']);

/**
 * What QEMU calls the image's block node in messages. QEMU's automatic node names
 * ("#block123") change from run to run; any fixed one is as good.
 */
const NODE_NAME = '#block100';

interface Action {
  op: string;
  /** Source bitmap of --merge. */
  source: string | undefined;
}

/** qemu-img acts on -g (and --object) while parsing, so their errors come first. */
function optionsInOrder(options: readonly ParsedOption[]): number {
  let granularity = 0;
  for (const o of options) {
    if (o.name === 'granularity') {
      try {
        granularity = parseSizeArg('granularity', o.value ?? '');
      } catch (e) {
        if (e instanceof Qcow2Error) throw new CliError(e.message, { cause: e });
        throw e;
      }
    } else if (o.name === 'object' || o.name === 'image-opts') {
      throw new CliError(`bitmap: option --${o.name} is not supported yet`);
    }
  }
  return granularity;
}

/** The bitmaps of an opened image (undefined when its format has none). */
async function bitmapsOf(image: Image, writable: boolean, file: string): Promise<Qcow2Bitmaps | undefined> {
  const driver: FormatDriver = image.driver;
  if (!(driver instanceof Qcow2Driver)) return undefined;
  // Once the driver keeps bitmaps itself (and marks them in use at open), use its instance:
  // two instances would each store their own view at close.
  const own = (driver as unknown as { bitmaps?: Qcow2Bitmaps }).bitmaps;
  if (own !== undefined) return own;
  const bitmaps = new Qcow2Bitmaps(driver.state, writable ? driver.writer : undefined);
  try {
    if (writable) await bitmaps.openForWrite();
  } catch (e) {
    // QEMU reads bitmaps while opening the image, so their errors are open errors.
    if (e instanceof Qcow2Error) throw new CliError(`Could not open '${file}': ${e.message}`, { cause: e });
    throw e;
  }
  return bitmaps;
}

async function samePath(a: string, b: string): Promise<boolean> {
  const real = async (p: string): Promise<string> => realpathOf(p).catch(() => resolve(p));
  return (await real(a)) === (await real(b));
}

/** Run one action on `target`; `source` holds the bitmaps --merge reads (undefined: none). */
async function perform(act: Action, target: Qcow2Bitmaps | undefined, source: Qcow2Bitmaps | undefined, bitmap: string, granularity: number): Promise<void> {
  if (target === undefined) {
    if (act.op === 'add') throw new Qcow2Error('UNSUPPORTED', `Can't store persistent bitmaps to ${NODE_NAME}: Operation not supported`);
    throw new Qcow2Error('INVALID_ARGUMENT', `Dirty bitmap '${bitmap}' not found`);
  }
  switch (act.op) {
    case 'add':
      // qemu-img passes the granularity as a uint32 (4G wraps to 0, which QEMU refuses).
      await target.add(bitmap, granularity === 0 ? {} : { granularity: granularity % 2 ** 32 });
      return;
    case 'remove':
      return target.remove(bitmap);
    case 'clear':
      return target.clear(bitmap);
    case 'enable':
      return target.enable(bitmap);
    case 'disable':
      return target.disable(bitmap);
    default: {
      if (source === undefined) {
        // The source image has no bitmaps at all (another format).
        const missing = target.get(bitmap) === undefined ? bitmap : act.source!;
        throw new Qcow2Error('INVALID_ARGUMENT', `Dirty bitmap '${missing}' not found`);
      }
      return target.merge(bitmap, act.source!, source);
    }
  }
}

/** QEMU's error text for a failed action: message, then an unprefixed hint line if any. */
function failureLines(e: Qcow2Error, bitmap: string): { message: string; hint: string | undefined } {
  const hint = typeof e.context['hint'] === 'string' ? e.context['hint'] : undefined;
  const message = e.context['cannotPersist'] === true ? `Can't make bitmap '${bitmap}' persistent in '${NODE_NAME}': ${e.message}` : e.message;
  return { message, hint };
}

/** `bitmap (--add|--remove|--clear|--enable|--disable|--merge SRC)... [-g N] [-b FILE [-F FMT]] [-f FMT] FILE BITMAP` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  let args;
  try {
    args = parseCommandArgs('bitmap', argv, SPEC);
  } catch (e) {
    if (e instanceof ArgError) optionsInOrder(e.parsed);
    throw e;
  }
  const granularity = optionsInOrder(args.options);
  const actions: Action[] = args.options.filter((o) => ACTIONS.has(o.name)).map((o) => ({ op: o.name, source: o.name === 'merge' ? o.value : undefined }));
  if (actions.length === 0) throw new CliError('Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  const srcFile = args.get('source-file');
  const srcFormat = args.get('source-format');
  if (granularity !== 0 && !actions.some((a) => a.op === 'add')) throw new CliError('granularity only supported with --add');
  if (srcFormat !== undefined && srcFile === undefined) throw new CliError('-F only supported with -b');
  if (srcFile !== undefined && !actions.some((a) => a.op === 'merge')) throw new CliError('Merge bitmap source file only supported with --merge');
  if (args.positionals.length !== 2) throw new CliError('Expecting filename and bitmap name');
  const [file, bitmap] = args.positionals as [string, string];

  // No backing chain: bitmaps are edited in this image alone.
  const image = await openForCli(file, { format: args.get('format'), readOnly: false, backing: false });
  let code = 0;
  let sourceImage: Image | undefined;
  let target: Qcow2Bitmaps | undefined;
  try {
    target = await bitmapsOf(image, true, file);
    let source = target;
    if (srcFile !== undefined && (await samePath(srcFile, file))) {
      // QEMU's image locking refuses to open the image a second time.
      io.stderr.write(`${PROGRAM}: Could not open '${srcFile}': Failed to get shared "write" lock\nIs another process using the image [${srcFile}]?\n`);
      code = 1;
    } else if (srcFile !== undefined) {
      sourceImage = await openForCli(srcFile, { format: srcFormat, readOnly: true, backing: false });
      source = await bitmapsOf(sourceImage, false, srcFile);
    }
    for (const act of code === 0 ? actions : []) {
      try {
        await perform(act, target, source, bitmap, granularity);
      } catch (e) {
        if (!(e instanceof Qcow2Error)) throw e;
        const { message, hint } = failureLines(e, bitmap);
        io.stderr.write(`${PROGRAM}: Operation ${act.op} on bitmap ${bitmap} failed: ${message}\n`);
        if (hint !== undefined) io.stderr.write(`${hint}\n`);
        code = 1;
        break;
      }
    }
  } finally {
    code = await closeAll(io, image, target, sourceImage, code);
  }
  return code;
}

/** Save the bitmaps and close both images, reporting failures like qemu-img's close. */
async function closeAll(io: CliIO, image: Image, target: Qcow2Bitmaps | undefined, sourceImage: Image | undefined, code: number): Promise<number> {
  try {
    const { lost } = (await target?.store()) ?? { lost: [] };
    if (lost.length > 0) io.stderr.write(`${PROGRAM}: Lost persistent bitmaps during inactivation of node '${NODE_NAME}': No memory\n`);
  } catch (e) {
    if (!(e instanceof Qcow2Error)) throw e;
    io.stderr.write(`${PROGRAM}: ${e.message}\n`);
    code = 1;
  } finally {
    await sourceImage?.close();
    await image.close();
  }
  return code;
}
