/**
 * `qcow2kit measure`: qemu-img measure with its figures, output and messages.
 */
import { Qcow2Error } from '../errors.js';
import type { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import { QCOW2_CREATE_OPTION_INFO } from '../format/qcow2/create-options.js';
import type { Image } from '../image/image.js';
import { formatMeasureHuman, formatMeasureJson, measureQcow2, measureRaw, type MeasureResult, type MeasureSource } from '../ops/measure.js';
import { parseSnapshotParam, snapshotLookupKey, snapshotMatches, type ParsedSnapshotParam } from '../ops/snapshot-param.js';
import { parseSizeArg } from '../util/size.js';
import { ArgError, parseCommandArgs, type ArgSpec, type ParsedOption } from './args.js';
import { CliError, HelpRequest } from './cli-error.js';
import { PROGRAM, type CliIO } from './main.js';
import { openForCli, parseOutputFormat } from './open-for-cli.js';
import { appendOptionList, OptionError, parseQemuOpts, type QemuOptDesc, type QemuOpts } from './option-string.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'output-format', short: 'O', arg: 'required' },
    { name: 'options', short: 'o', arg: 'required' },
    { name: 'snapshot', short: 'l', arg: 'required' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'image-opts', long: 'image-opts' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'output', long: 'output', arg: 'required' },
    { name: 'size', long: 'size', arg: 'required' },
  ],
};

/** Every format name qemu-img 7.2 (Debian build) knows: what bdrv_find_format accepts. */
export const QEMU_FORMATS: readonly string[] = [
  'blkdebug', 'blklogwrites', 'blkverify', 'bochs', 'cloop', 'compress', 'copy-before-write', 'copy-on-read', 'dmg',
  'file', 'ftp', 'ftps', 'gluster', 'host_cdrom', 'host_device', 'http', 'https', 'iscsi', 'iser', 'luks', 'nbd',
  'nfs', 'null-aio', 'null-co', 'nvme', 'parallels', 'preallocate', 'qcow', 'qcow2', 'qed', 'quorum', 'raw', 'rbd',
  'replication', 'snapshot-access', 'ssh', 'throttle', 'vdi', 'vhdx', 'vmdk', 'vpc', 'vvfat',
];

/** The formats of {@link QEMU_FORMATS} that have creation options (the others cannot be created). */
export const QEMU_CREATABLE_FORMATS: readonly string[] = [
  'file', 'gluster', 'host_cdrom', 'host_device', 'iscsi', 'iser', 'luks', 'nbd', 'nfs', 'nvme', 'parallels', 'qcow',
  'qcow2', 'qed', 'raw', 'rbd', 'ssh', 'vdi', 'vhdx', 'vmdk', 'vpc',
];

/** file-posix's creation options, appended to every format's (duplicates keep the format's). */
const FILE_OPTS: readonly QemuOptDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'preallocation', type: 'string', help: 'Preallocation mode (allowed values: off, falloc, full)' },
  { name: 'nocow', type: 'bool', help: 'Turn off copy-on-write (valid only on btrfs)' },
  { name: 'extent_size_hint', type: 'size', help: 'Extent size hint for the image file, 0 to disable' },
];

function withFileOpts(descs: readonly QemuOptDesc[]): QemuOptDesc[] {
  return [...descs, ...FILE_OPTS.filter((f) => !descs.some((d) => d.name === f.name))];
}

const CREATE_OPTS: Readonly<Record<string, readonly QemuOptDesc[]>> = {
  qcow2: withFileOpts(QCOW2_CREATE_OPTION_INFO),
  raw: withFileOpts([{ name: 'size', type: 'size', help: 'Virtual disk size' }]),
};

/** A failure already printed in qemu-img's shape (several lines, some without the prefix). */
class PrintedError extends Error {}

/** `measure [--output=human|json] [-O fmt] [-o OPTIONS] (--size N | [-f fmt] [-l snapshot] FILE)` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  try {
    return await measure(argv, io);
  } catch (e) {
    if (e instanceof PrintedError) return 1;
    throw e;
  }
}

async function measure(argv: string[], io: CliIO): Promise<number> {
  // measure's getopt string has no leading ':': glibc prints its own message, then help.
  let options: readonly ParsedOption[];
  let positionals: readonly string[] = [];
  let argError: ArgError | undefined;
  try {
    const args = parseCommandArgs('measure', argv, SPEC);
    options = args.options;
    positionals = args.positionals;
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    argError = e;
    options = e.parsed;
  }

  let output: 'human' | 'json' = 'human';
  let format: string | undefined;
  let outFormat = 'raw';
  let optionText: string | undefined;
  let snapshot: ParsedSnapshotParam | undefined;
  let size: bigint | undefined;
  let imageOpts = false;
  for (const { name, value = '' } of options) {
    switch (name) {
      case 'format':
        format = value;
        break;
      case 'output-format':
        outFormat = value;
        break;
      case 'options':
        optionText = appendOptionList(optionText, value);
        break;
      case 'snapshot':
        snapshot = parseSnapshotParam(value);
        for (const w of snapshot.warnings) io.stderr.write(w.prefixed ? `${PROGRAM}: ${w.text}\n` : `${w.text}\n`);
        if (snapshot.error !== undefined) throw new CliError(snapshot.error);
        break;
      case 'image-opts':
        imageOpts = true;
        break;
      case 'object':
        throw new CliError('--object is not supported');
      case 'output':
        output = parseOutputFormat(value);
        break;
      case 'size':
        size = BigInt(parseSizeArg('image size', value));
        break;
    }
  }
  if (argError !== undefined) {
    io.stderr.write(`measure: ${argError.getoptMessage}\n`);
    throw new HelpRequest('measure');
  }

  if (positionals.length > 1) throw new CliError('At most one filename argument is allowed.');
  const filename = positionals[0];
  if (filename === undefined && (imageOpts || format !== undefined || snapshot !== undefined)) {
    throw new CliError('--image-opts, -f, and -l require a filename argument.');
  }
  if (filename !== undefined && size !== undefined) throw new CliError('--size N cannot be used together with a filename.');
  if (filename === undefined && size === undefined) throw new CliError('Either --size N or one filename must be specified.');
  if (imageOpts) throw new CliError('--image-opts is not supported');

  let image: Image | undefined;
  try {
    if (filename !== undefined) image = await openSource(filename, format, snapshot);
    const result = await measureFor(io, outFormat, optionText, size, image);
    io.stdout.write(output === 'json' ? formatMeasureJson(result) : formatMeasureHuman(result));
  } finally {
    await image?.close();
  }
  return 0;
}

/** Open the source, then load the `-l` snapshot into it, as img_measure does. */
async function openSource(filename: string, format: string | undefined, snapshot: ParsedSnapshotParam | undefined): Promise<Image> {
  const image = await openForCli(filename, { format });
  if (snapshot === undefined) return image;
  if (image.driver.format !== 'qcow2') {
    await image.close();
    throw new CliError(`Failed to load snapshot: Block format '${image.driver.format}' used by device '' does not support temporarily loading internal snapshots`);
  }
  await image.close();
  const sel = snapshot.selector;
  let snap: Image;
  try {
    snap = await openForCli(filename, { format: 'qcow2', snapshot: snapshotLookupKey(sel) });
  } catch (e) {
    if (e instanceof CliError && e.cause instanceof Qcow2Error && e.cause.context['snapshot'] !== undefined) {
      throw new CliError("Failed to load snapshot: Can't find snapshot");
    }
    throw e;
  }
  const entry = (snap.driver as Qcow2Driver).snapshot;
  if (entry === undefined || !snapshotMatches(sel, entry)) {
    await snap.close();
    throw new CliError("Failed to load snapshot: Can't find snapshot");
  }
  return snap;
}

async function measureFor(io: CliIO, outFormat: string, optionText: string | undefined, size: bigint | undefined, image: Image | undefined): Promise<MeasureResult> {
  if (!QEMU_FORMATS.includes(outFormat)) throw new CliError(`Unknown file format '${outFormat}'`);
  if (!QEMU_CREATABLE_FORMATS.includes(outFormat)) throw new CliError(`Format driver '${outFormat}' does not support image creation`);
  const descs = CREATE_OPTS[outFormat];
  let opts: QemuOpts | undefined;
  if (descs !== undefined) {
    try {
      opts = parseQemuOpts(optionText, descs);
    } catch (e) {
      if (!(e instanceof OptionError)) throw e;
      io.stderr.write(`${PROGRAM}: ${e.message}\n`);
      if (e.hint !== undefined) io.stderr.write(`${e.hint}\n`);
      io.stderr.write(`${PROGRAM}: Invalid options for file format '${outFormat}'\n`);
      throw new PrintedError();
    }
  }
  const optSize = size ?? opts?.get('size')?.number;
  const source = image === undefined ? undefined : await measureSource(image);
  try {
    if (outFormat === 'raw') return measureRaw(optSize, image);
    if (outFormat === 'qcow2' && opts !== undefined) {
      const text = (name: string): string | undefined => opts.get(name)?.text;
      return await measureQcow2(
        {
          ...(optSize !== undefined ? { size: optSize } : {}),
          ...(opts.get('cluster_size')?.number !== undefined ? { clusterSize: opts.get('cluster_size')!.number! } : {}),
          ...(opts.get('extended_l2')?.bool !== undefined ? { extendedL2: opts.get('extended_l2')!.bool! } : {}),
          ...(text('compat') !== undefined ? { compat: text('compat')! } : {}),
          ...(opts.has('refcount_bits') ? { refcountBits: numberOption(opts.get('refcount_bits')!.text) } : {}),
          ...(text('preallocation') !== undefined ? { preallocation: text('preallocation')! } : {}),
          hasBackingFile: opts.has('backing_file'),
          ...(text('encrypt.format') !== undefined ? { encryptFormat: text('encrypt.format')! } : {}),
        },
        source,
      );
    }
  } catch (e) {
    if (e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT') throw new CliError(e.message, { cause: e });
    throw e;
  }
  if (outFormat === 'luks') throw new CliError("Parameter 'key-secret' is required for cipher");
  throw new CliError(`Block driver '${outFormat}' does not support size measurement`);
}

/**
 * The value of a validated `number` option, as qemu_strtou64(text, NULL, 0) reads it.
 * (option-string.ts currently reads any multi-digit decimal as octal: "64" gives 4.)
 */
function numberOption(text: string): bigint {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (m === null) return 0n;
  const digits = m[2]!;
  const v = /^0[xX]/.test(digits) ? BigInt(digits) : digits.length > 1 && digits.startsWith('0') ? BigInt(`0o${digits.slice(1)}`) : BigInt(digits);
  return m[1] === '-' ? ((1n << 64n) - v) & ((1n << 64n) - 1n) : v;
}

/**
 * What measure reads from a source: qcow2 v3 images can hold persistent bitmaps. QEMU also
 * asks the file system where a raw file's holes are (SEEK_DATA), which Node cannot; the one
 * case we can tell is a file with no blocks allocated at all.
 */
async function measureSource(image: Image): Promise<MeasureSource> {
  if (image.driver.format !== 'qcow2') {
    const allocated = await image.driver.storage.allocatedSize?.();
    return allocated === 0 ? { image, bitmaps: undefined, isHostHole: async () => true } : { image, bitmaps: undefined };
  }
  const meta = (image.driver as Qcow2Driver).meta;
  return { image, bitmaps: meta.header.version >= 3 ? meta.bitmaps : undefined };
}
