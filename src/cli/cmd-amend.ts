/**
 * `qcow2kit amend`: qemu-img 7.2's `amend [-f fmt] [-p] [-q] [-t cache] [--force] -o OPTIONS
 * FILE`. Argument checks, the option parsing (with the "only supported for image creation"
 * hint), progress and messages follow img_amend; the work is ops/amend.
 */
import { Qcow2Error } from '../errors.js';
import { QCOW2_CREATE_OPTION_INFO } from '../format/qcow2/create-options.js';
import type { Image } from '../image/image.js';
import { openImageFile } from '../node.js';
import { amendQcow2 } from '../ops/amend/amend.js';
import { QCOW2_AMEND_OPTION_INFO, type AmendRequest } from '../ops/amend/amend-options.js';
import { amendPercent } from '../ops/amend/amend-progress.js';
import { QemuProgress } from '../ops/qemu-progress.js';
import { parseCommandArgs, type ArgSpec } from './args.js';
import { CliError } from './cli-error.js';
import { parseCacheMode, progressWriter } from './cmd-convert.js';
import { PROGRAM, type CliIO } from './main.js';
import {
  hasHelpOption, appendOptionList, OptionError, optionHelpText, parseQemuOpts, type QemuOptDesc, type QemuOpts,
} from './option-string.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'options', short: 'o', arg: 'required' },
    { name: 'cache', short: 't', arg: 'required' },
    { name: 'progress', short: 'p' },
    { name: 'quiet', short: 'q' },
    { name: 'force', long: 'force' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
  ],
};

/** `amend [-f fmt] [-p] [-q] [-t cache] [--force] -o options filename` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('amend', argv, SPEC);
  let options: string | undefined;
  for (const o of args.options) {
    if (o.name !== 'options') continue;
    options = appendOptionList(options, o.value ?? '');
  }
  if (args.has('object')) throw new CliError('--object is not supported');
  if (args.has('image-opts')) throw new CliError('--image-opts is not supported');
  if (options === undefined) throw new CliError('Must specify options (-o)', { usage: true });
  const progress = args.has('progress') && !args.has('quiet');
  const bar = new QemuProgress(1.0, progressWriter(io));
  const fmt = args.get('format');
  try {
    const filename = args.positionals.length === 1 ? args.positionals[0] : undefined;
    if (fmt !== undefined && hasHelpOption(options)) return printHelp(io, fmt);
    if (filename === undefined) throw new CliError('Expecting one image file name');
    const cache = args.get('cache') ?? 'writeback';
    if (parseCacheMode(cache) === undefined) throw new CliError(`Invalid cache option: ${cache}`);
    const image = await open(filename, fmt, io);
    try {
      const format = image.driver.format;
      if (hasHelpOption(options)) return printHelp(io, format);
      if (format !== 'qcow2') throw new CliError(`Format driver '${format}' does not support option amendment`);
      const opts = parseAmendOptions(options, io);
      if (opts === undefined) return 1;
      if (progress) bar.set(0);
      try {
        await amendQcow2(image, amendRequest(opts), progress ? { status: (o, t) => bar.set(amendPercent(o, t)) } : {});
      } catch (e) {
        if (!(e instanceof Qcow2Error)) throw e;
        io.stderr.write(`${PROGRAM}: ${e.message}\n`);
        const hint = e.context['hint'];
        if (typeof hint === 'string') io.stderr.write(`${hint.replace('qemu-img', PROGRAM)}\n`);
        return 1;
      } finally {
        if (progress) bar.set(100);
      }
    } finally {
      await image.close();
    }
    return 0;
  } finally {
    if (progress) bar.end();
  }
}

/** Open read-write as img_open does; a dirty image is repaired on the way, printing the repairs. */
async function open(path: string, format: string | undefined, io: CliIO): Promise<Image> {
  if (format !== undefined && format !== 'qcow2' && format !== 'raw') {
    throw new CliError(`Could not open '${path}': Unknown driver '${format}'`);
  }
  try {
    return await openImageFile(path, {
      dependencies: 'follow-and-probe',
      readOnly: false,
      ...(format !== undefined ? { format } : {}),
      repairDirty: async (storage) => {
        const { checkQcow2 } = await import('../ops/check/check-qcow2.js');
        const reporter = {
          line: (text: string) => void io.stderr.write(`${text}\n`),
          error: (text: string) => void io.stderr.write(`${PROGRAM}: ${text}\n`),
        };
        const outcome = await checkQcow2(storage, { repair: 'all', reporter });
        if (outcome.exitCode !== 0) throw new Qcow2Error('CORRUPT', 'Could not repair dirty image', { exitCode: outcome.exitCode });
      },
    });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(`Could not open '${path}': ${e.message}`, { cause: e });
    throw e;
  }
}

/** print_amend_option_help() */
function printHelp(io: CliIO, fmt: string): number {
  if (fmt === 'qcow2') {
    io.stdout.write(`Amend options for 'qcow2':\n${optionHelpText(QCOW2_AMEND_OPTION_INFO)}`);
    return 0;
  }
  if (fmt === 'raw') throw new CliError(`Format driver '${fmt}' does not support option amendment`);
  throw new CliError(`Unknown file format '${fmt}'`);
}

/**
 * Parse against the amend options; on failure, print QEMU's error, with its hint when the
 * options would have been valid for image creation. Undefined when it failed.
 */
function parseAmendOptions(text: string, io: CliIO): QemuOpts | undefined {
  try {
    return parseQemuOpts(text, QCOW2_AMEND_OPTION_INFO);
  } catch (e) {
    if (!(e instanceof OptionError)) throw e;
    io.stderr.write(`${PROGRAM}: ${e.message}\n`);
    if (e.hint !== undefined) io.stderr.write(`${e.hint}\n`);
    const all: QemuOptDesc[] = [...QCOW2_AMEND_OPTION_INFO];
    for (const d of QCOW2_CREATE_OPTION_INFO) if (!all.some((a) => a.name === d.name)) all.push(d);
    try {
      parseQemuOpts(text, all);
      io.stderr.write('This option is only supported for image creation\n');
    } catch {
      // not a creation option either
    }
    return undefined;
  }
}

/** The parsed options as an amend request (last occurrence wins, as in QemuOpts). */
function amendRequest(opts: QemuOpts): AmendRequest {
  const req: AmendRequest = {};
  if (opts.all().some((o) => o.name.startsWith('encrypt.'))) req.encrypt = true;
  const size = opts.get('size')?.number;
  if (size !== undefined) req.size = size;
  const str = (name: string): string | undefined => opts.get(name)?.text;
  const compat = str('compat');
  if (compat !== undefined) req.compat = compat;
  const backingFile = str('backing_file');
  if (backingFile !== undefined) req.backingFile = backingFile;
  const backingFormat = str('backing_fmt');
  if (backingFormat !== undefined) req.backingFormat = backingFormat;
  const dataFile = str('data_file');
  if (dataFile !== undefined) req.dataFile = dataFile;
  const raw = opts.get('data_file_raw')?.bool;
  if (raw !== undefined) req.dataFileRaw = raw;
  const lazy = opts.get('lazy_refcounts')?.bool;
  if (lazy !== undefined) req.lazyRefcounts = lazy;
  const bits = opts.get('refcount_bits')?.number;
  if (bits !== undefined) req.refcountBits = bits;
  return req;
}
