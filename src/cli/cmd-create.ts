/**
 * `qcow2kit create`: qemu-img 7.2's `create [-f qcow2|raw] [-o OPTIONS] [-b BACKING [-F FMT]]
 * [-u] [-q] FILE [SIZE]`. Options, checks, the "Formatting ..." line, messages and exit codes
 * follow qemu-img (img_create, bdrv_img_create, the qcow2 and file drivers' create); images
 * are byte-identical to qemu-img's (see format/qcow2/create-layout).
 */
import { Qcow2Error } from '../errors.js';
import { planQcow2Image, writeQcow2Image } from '../format/qcow2/create-layout.js';
import { QCOW2_CREATE_OPTION_INFO, QEMU_BLOCK_DRIVERS, resolveQcow2CreateOptions } from '../format/qcow2/create-options.js';
import { planRawImage, writeRawImage, type RawPreallocation } from '../format/raw/raw-create.js';
import { unlinkPath } from '../storage/node-fs.js';
import { NodeFileStorage } from '../storage/node-file-storage.js';
import { parseSizeArg, strtosz } from '../util/size.js';
import { parseCommandArgs, type ArgSpec } from './args.js';
import { CliError } from './cli-error.js';
import { PROGRAM, type CliIO } from './main.js';
import {
  hasHelpOption,
  hexSuffixWarning,
  appendOptionList,
  OptionError,
  optionHelpText,
  parseQemuOpts,
  type QemuOptDesc,
  type QemuOpts,
} from './option-string.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'backing-format', short: 'F', arg: 'required' },
    { name: 'backing', short: 'b', arg: 'required' },
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'options', short: 'o', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'unsafe', short: 'u' },
    { name: 'object', long: 'object', arg: 'required' },
  ],
};

/** The file protocol's create options (file-posix), appended after the format's. */
const FILE_OPTION_INFO: readonly QemuOptDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'nocow', type: 'bool', help: 'Turn off copy-on-write (valid only on btrfs)' },
  { name: 'preallocation', type: 'string', help: 'Preallocation mode (allowed values: off, falloc, full)' },
  { name: 'extent_size_hint', type: 'size', help: 'Extent size hint for the image file, 0 to disable' },
];

const RAW_OPTION_INFO: readonly QemuOptDesc[] = [{ name: 'size', type: 'size', help: 'Virtual disk size' }];

const FORMATS: Readonly<Record<string, readonly QemuOptDesc[]>> = { qcow2: QCOW2_CREATE_OPTION_INFO, raw: RAW_OPTION_INFO };

const U64_MAX = (1n << 64n) - 1n;
const INT64_MAX = (1n << 63n) - 1n;
const UINT32_MAX = 0xffffffffn;

/** qemu_opts_append(): the format's options, then the protocol's not already listed. */
function mergedOptions(format: readonly QemuOptDesc[]): QemuOptDesc[] {
  const out = [...format];
  for (const d of FILE_OPTION_INFO) if (!out.some((o) => o.name === d.name)) out.push(d);
  return out;
}

/** An error qemu-img reports as "FILE: message", optionally followed by a hint printed as is. */
export class CreateError extends Error {
  readonly hint: string | undefined;
  constructor(message: string, hint?: string) {
    super(message);
    this.hint = hint;
  }
}

/** `create [-f fmt] [-o options] [-b backing [-F backing_fmt]] [-u] [-q] filename [size]` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('create', argv, SPEC);
  // qemu-img checks and joins -o lists while parsing the command line.
  let options: string | undefined;
  for (const o of args.options) {
    if (o.name !== 'options') continue;
    options = appendOptionList(options, o.value ?? '');
  }
  if (args.has('object')) throw new CliError('--object is not supported');
  const fmt = args.get('format') ?? 'raw';
  const filename = args.positionals[0];
  if (options !== undefined && hasHelpOption(options)) return printHelp(io, fmt, filename);
  if (filename === undefined) throw new CliError('Expecting image file name', { usage: true });

  const warn = (message: string): void => {
    io.stderr.write(`${PROGRAM}: warning: ${message}\n`);
  };
  let imgSize: bigint | undefined;
  const sizeText = args.positionals[1];
  if (sizeText !== undefined) {
    const w = hexSuffixWarning(sizeText);
    if (w !== undefined) warn(w);
    parseSizeArg('image size', sizeText); // qemu-img's messages for bad sizes
    const r = strtosz(sizeText);
    if (!r.ok) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid image size specified`);
    imgSize = r.value;
  }
  if (args.positionals.length > 2) throw new CliError(`Unexpected argument: ${args.positionals[2]}`, { usage: true });

  try {
    await create(io, {
      filename,
      fmt,
      options,
      imgSize,
      backing: args.get('backing'),
      backingFormat: args.get('backing-format'),
      unsafe: args.has('unsafe'),
      quiet: args.has('quiet'),
      warn,
    });
  } catch (e) {
    if (!(e instanceof CreateError || e instanceof OptionError)) throw e;
    io.stderr.write(`${PROGRAM}: ${filename}: ${e.message}\n`);
    if (e.hint !== undefined) io.stderr.write(e.hint);
    return 1;
  }
  return 0;
}

/** What `createImageFile` needs (the parsed create command line). */
export interface CreateRequest {
  filename: string;
  fmt: string;
  options: string | undefined;
  imgSize: bigint | undefined;
  backing: string | undefined;
  backingFormat: string | undefined;
  unsafe: boolean;
  quiet: boolean;
  warn: (message: string) => void;
}

/**
 * bdrv_img_create(): everything up to and including the "Formatting" line, then the driver.
 * Shared with `convert`, which creates its target the same way (quietly).
 */
export async function createImageFile(io: CliIO, req: CreateRequest): Promise<void> {
  return create(io, req);
}

async function create(io: CliIO, req: CreateRequest): Promise<void> {
  const { filename, fmt } = req;
  const formatOpts = FORMATS[fmt];
  if (formatOpts === undefined) {
    throw new CreateError(QEMU_BLOCK_DRIVERS.includes(fmt) ? `Format '${fmt}' is not supported` : `Unknown file format '${fmt}'`);
  }
  const descs = mergedOptions(formatOpts);
  let opts: QemuOpts;
  try {
    opts = parseQemuOpts(req.options, descs, req.warn);
    if (!opts.has('size')) opts.add('size', String(req.imgSize ?? U64_MAX));
    else if (req.imgSize !== undefined) throw new CreateError('The image size must be specified only once');
    if (req.backing !== undefined) {
      if (fmt !== 'qcow2') throw new CreateError(`Backing file not supported for file format '${fmt}'`);
      opts.add('backing_file', req.backing);
    }
    if (req.backingFormat !== undefined) {
      if (fmt !== 'qcow2') throw new CreateError(`Backing file format not supported for file format '${fmt}'`);
      opts.add('backing_fmt', req.backingFormat);
    }
  } catch (e) {
    if (e instanceof OptionError) throw new CreateError(e.message, e.hint === undefined ? undefined : `${e.hint}\n`);
    throw e;
  }

  const backingFile = opts.get('backing_file')?.text;
  if (backingFile !== undefined) {
    if (backingFile === filename) throw new CreateError('Error: Trying to create an image with the same filename as the backing file');
    if (backingFile === '') throw new CreateError('Expected backing file name, got empty string');
  }
  const backingFmt = opts.get('backing_fmt')?.text;
  let size = opts.get('size')?.number ?? U64_MAX;
  if (backingFile !== undefined && !req.unsafe) {
    const backingSize = await openBacking(filename, backingFile, backingFmt);
    if (size === U64_MAX) {
      size = BigInt(backingSize);
      opts.add('size', String(size));
    }
  } else if (backingFile !== undefined && backingFmt === undefined) {
    throw new CreateError('Backing file specified without backing format');
  }
  if (size === U64_MAX) throw new CreateError('Image creation needs a size parameter');

  if (!req.quiet) io.stdout.write(`Formatting '${filename}', fmt=${fmt} ${opts.print()}\n`);
  if (fmt === 'raw') await createRaw(filename, opts, size);
  else await createQcow2(filename, opts, size);
}

/** Open the backing file as qemu-img does to check it and learn its size. */
async function openBacking(filename: string, backingFile: string, backingFmt: string | undefined): Promise<number> {
  const slash = filename.lastIndexOf('/');
  const full = backingFile.startsWith('/') || slash < 0 ? backingFile : filename.slice(0, slash + 1) + backingFile;
  const opened = 'Could not open backing image.\n';
  if (backingFmt !== undefined && backingFmt !== 'qcow2' && backingFmt !== 'raw') {
    throw new CreateError(`Unknown driver '${backingFmt}'`, opened);
  }
  // Loaded here: only creating over a backing file needs the read path.
  const { openImageFile } = await import('../node.js');
  let image;
  try {
    image = await openImageFile(full, {
      readOnly: true,
      dependencies: 'follow-and-probe',
      ...(backingFmt !== undefined ? { format: backingFmt } : {}),
    });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CreateError(e.message, opened);
    throw e;
  }
  try {
    // QEMU's hint has no newline at the end.
    if (backingFmt === undefined) throw new CreateError('Backing file specified without backing format', `Detected format of ${image.driver.format}.`);
    return image.size;
  } finally {
    await image.close();
  }
}

/** strerror() text for a failed open of a file being created. */
function createFailure(name: string, e: unknown): CreateError {
  const err = e as { message?: unknown; cause?: { code?: unknown } };
  const text = typeof err.message === 'string' ? err.message : String(e);
  const codes: Record<string, string> = {
    ENOENT: 'No such file or directory',
    EACCES: 'Permission denied',
    EPERM: 'Operation not permitted',
    EISDIR: 'Is a directory',
    ENOTDIR: 'Not a directory',
    ENAMETOOLONG: 'File name too long',
    EROFS: 'Read-only file system',
    ENOSPC: 'No space left on device',
  };
  const code = typeof err.cause?.code === 'string' ? err.cause.code : undefined;
  let reason = code !== undefined ? codes[code] : undefined;
  if (reason === undefined) {
    const at = text.indexOf("': ");
    reason = at >= 0 ? text.slice(at + 3) : text;
    for (const [c, r] of Object.entries(codes)) if (reason.startsWith(`${c}:`)) reason = r;
  }
  return new CreateError(`Could not create '${name}': ${reason}`);
}

async function openNew(name: string): Promise<NodeFileStorage> {
  try {
    return await NodeFileStorage.open(name, { create: true, truncate: true });
  } catch (e) {
    throw createFailure(name, e);
  }
}

/** file-posix refuses extent size hints that do not fit its 32-bit field, before creating anything. */
function checkExtentSizeHint(opts: QemuOpts): void {
  const hint = opts.get('extent_size_hint')?.number;
  if (hint !== undefined && hint > UINT32_MAX) throw new CreateError('Extent size hint is too large');
}

async function createRaw(filename: string, opts: QemuOpts, size: bigint): Promise<void> {
  const mode = opts.get('preallocation')?.text ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(mode)) throw new CreateError(`invalid parameter value: ${mode}`);
  checkExtentSizeHint(opts);
  const rounded = ((size + 511n) / 512n) * 512n;
  const tooLarge = `The image size is too large for file format 'raw'`;
  const storage = await openNew(filename);
  try {
    if (mode === 'metadata') throw new CreateError('Unsupported preallocation mode: metadata');
    if (rounded > BigInt(Number.MAX_SAFE_INTEGER)) throw new CreateError(tooLarge);
    await writeRawImage(planRawImage(Number(rounded), mode as RawPreallocation), storage);
    await storage.flush();
  } catch (e) {
    const code = (e as { code?: unknown; cause?: { code?: unknown } }).code ?? (e as { cause?: { code?: unknown } }).cause?.code;
    if (code === 'EFBIG' || code === 'ERR_OUT_OF_RANGE') throw new CreateError(tooLarge);
    if (e instanceof Qcow2Error) throw new CreateError(e.message);
    throw e;
  } finally {
    await storage.close();
  }
}

async function createQcow2(filename: string, opts: QemuOpts, size: bigint): Promise<void> {
  const str = (name: string): string | undefined => opts.get(name)?.text;
  const bool = (name: string): boolean | undefined => opts.get(name)?.bool;
  const num = (name: string): number | undefined => {
    const v = opts.get(name)?.number;
    return v === undefined ? undefined : Number(v);
  };
  checkExtentSizeHint(opts);
  const encrypt = bool('encryption') === true || opts.all().some((o) => o.name.startsWith('encrypt.'));
  const dataFileName = str('data_file');
  const created: string[] = [];
  const storages: NodeFileStorage[] = [];
  try {
    const image = await openNew(filename);
    created.push(filename);
    storages.push(image);
    let data: NodeFileStorage | undefined;
    if (dataFileName !== undefined) {
      data = await openNew(dataFileName);
      created.push(dataFileName);
      storages.push(data);
    }
    // "Silently round up size"; past INT64_MAX QEMU's truncate sees a negative size.
    const rounded = ((size + 511n) / 512n) * 512n;
    let options;
    try {
      options = resolveQcow2CreateOptions({
        size: Number(rounded > INT64_MAX ? 0n : rounded),
        compat: str('compat'),
        backingFile: str('backing_file'),
        backingFormat: str('backing_fmt'),
        dataFile: dataFileName,
        dataFileRaw: bool('data_file_raw'),
        clusterSize: num('cluster_size'),
        extendedL2: bool('extended_l2'),
        preallocation: str('preallocation'),
        lazyRefcounts: bool('lazy_refcounts'),
        refcountBits: num('refcount_bits'),
        compressionType: str('compression_type'),
        encrypt,
      });
      if (rounded > INT64_MAX) throw new Qcow2Error('INVALID_ARGUMENT', 'Could not resize image: Image size cannot be negative');
      const plan = planQcow2Image(options);
      await writeQcow2Image(plan, image, data);
    } catch (e) {
      if (e instanceof Qcow2Error) {
        if (e.context['errno'] === 'EFBIG') {
          throw new CreateError(`The image size is too large for file format 'qcow2' (try using a larger cluster size)`);
        }
        throw new CreateError(e.message);
      }
      throw e;
    }
    for (const s of storages) await s.flush();
    created.length = 0;
  } finally {
    for (const s of storages) await s.close().catch(() => undefined);
    // A failed create removes what it made, like bdrv_co_delete_file_noerr().
    for (const name of created) await unlinkPath(name).catch(() => undefined);
  }
}

/** `-o help`: the option list of the format (and of the file protocol when a file is named). */
function printHelp(io: CliIO, fmt: string, filename: string | undefined): number {
  const formatOpts = FORMATS[fmt];
  if (formatOpts === undefined) {
    io.stderr.write(`${PROGRAM}: Unknown file format '${fmt}'\n`);
    return 1;
  }
  if (filename !== undefined) {
    io.stdout.write(`Supported options:\n${optionHelpText(mergedOptions(formatOpts))}`);
  } else {
    io.stdout.write(
      `Supported ${fmt} options:\n${optionHelpText(formatOpts)}\n` +
        'The protocol level may support further options.\nSpecify the target filename to include those options.\n',
    );
  }
  return 0;
}
