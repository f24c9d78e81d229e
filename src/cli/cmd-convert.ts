/**
 * `qcow2kit convert`: qemu-img convert (raw output for now). Same options, checks, messages
 * and exit codes as qemu-img 7.2; the copy itself is ops/convert.
 */
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import { convertImage, MAX_MIN_SPARSE, MAX_PARALLEL } from '../ops/convert.js';
import { createRawTarget } from '../ops/convert-target.js';
import { createImageTarget } from '../ops/image-target.js';
import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import { statPath } from '../storage/node-fs.js';
import { createImageFile, CreateError } from './cmd-create.js';
import { openUntrustedForCli, UNTRUSTED_OPTION } from './untrusted.js';
import { appendOptionList, OptionError } from './option-string.js';
import { QemuProgress } from '../ops/qemu-progress.js';
import { parseSnapshotParam, snapshotLookupKey, snapshotMatches, type ParsedSnapshotParam } from '../ops/snapshot-param.js';
import { NodeFileStorage } from '../storage/node-file-storage.js';
import { parseSizeArg } from '../util/size.js';
import { openImageFile } from '../open-image-file-node.js';
import { SEQUENTIAL_L2_CACHE_BYTES } from './open-for-cli.js';
import { parseCommandArgs, type ArgSpec } from './args.js';
import { CliError } from './cli-error.js';
import { PROGRAM, type CliIO } from './main.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'output-format', short: 'O', arg: 'required' },
    { name: 'backing', short: 'B', arg: 'required' },
    { name: 'backing-format', short: 'F', arg: 'required' },
    { name: 'copy-range', short: 'C' },
    { name: 'compress', short: 'c' },
    { name: 'options', short: 'o', arg: 'required' },
    { name: 'snapshot', short: 'l', arg: 'required' },
    { name: 'sparse', short: 'S', arg: 'required' },
    { name: 'rate', short: 'r', arg: 'required' },
    { name: 'progress', short: 'p' },
    { name: 'cache', short: 't', arg: 'required' },
    { name: 'source-cache', short: 'T', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'no-create', short: 'n' },
    { name: 'coroutines', short: 'm', arg: 'required' },
    { name: 'out-of-order', short: 'W' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
    { name: 'target-image-opts', long: 'target-image-opts' },
    { name: 'salvage', long: 'salvage' },
    { name: 'target-is-zero', long: 'target-is-zero' },
    { name: 'bitmaps', long: 'bitmaps' },
    UNTRUSTED_OPTION,
  ],
};

/** Options we parse like qemu-img but cannot honour yet. */
const NOT_YET: Readonly<Record<string, string>> = {
  object: '--object',
  'image-opts': '--image-opts',
  'target-image-opts': '--target-image-opts',
  salvage: '--salvage',
  rate: '-r',
};

/** qemu_strtol(text, NULL, 0): C integer syntax (0x hex, leading-0 octal), nothing after it. */
function parseCLong(text: string): number | undefined {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (m === null) return undefined;
  const digits = m[2]!;
  const v = /^0[xX]/.test(digits) ? parseInt(digits.slice(2), 16) : digits.length > 1 && digits[0] === '0' ? parseInt(digits, 8) : parseInt(digits, 10);
  return m[1] === '-' ? -v : v;
}

interface Settings {
  format: string | undefined;
  outFormat: string;
  minSparse: number;
  explicitSparse: boolean;
  parallel: number;
  inOrder: boolean;
  progress: boolean;
  skipCreate: boolean;
  cache: string;
  sourceCache: string;
  snapshot: ParsedSnapshotParam | undefined;
  copyRange: boolean;
  compress: boolean;
  backing: string | undefined;
  /** `-o` option lists, joined. */
  createOptions: string | undefined;
  /** `--untrusted`: sources open nothing they name and are not probed. */
  untrusted: boolean;
  /** `--bitmaps`: copy persistent bitmaps (qcow2 to qcow2). */
  bitmaps: boolean;
  targetIsZero: boolean;
  unsupported: string[];
}

function parseSettings(io: CliIO, argv: string[]): { settings: Settings; files: readonly string[] } {
  const args = parseCommandArgs('convert', argv, SPEC);
  const s: Settings = {
    format: undefined,
    outFormat: 'raw',
    minSparse: 4096,
    explicitSparse: false,
    parallel: 8,
    inOrder: true,
    progress: false,
    skipCreate: false,
    cache: 'unsafe',
    sourceCache: 'writeback',
    snapshot: undefined,
    copyRange: false,
    compress: false,
    backing: undefined,
    createOptions: undefined,
    untrusted: false,
    bitmaps: false,
    targetIsZero: false,
    unsupported: [],
  };
  let quiet = false;
  // Checked in command-line order, as qemu-img's getopt loop does.
  for (const o of args.options) {
    const v = o.value ?? '';
    switch (o.name) {
      case 'format':
        s.format = v;
        break;
      case 'output-format':
        s.outFormat = v;
        break;
      case 'backing':
        s.backing = v;
        break;
      case 'copy-range':
        s.copyRange = true;
        break;
      case 'compress':
        s.compress = true;
        break;
      case 'snapshot':
        s.snapshot = parseSnapshotParam(v);
        for (const w of s.snapshot.warnings) io.stderr.write(w.prefixed ? `${PROGRAM}: ${w.text}\n` : `${w.text}\n`);
        if (s.snapshot.error !== undefined) throw new CliError(s.snapshot.error);
        break;
      case 'sparse': {
        const bytes = parseSizeArg('buffer size for sparse output', v);
        if (bytes % 512 !== 0 || bytes > MAX_MIN_SPARSE) {
          throw new CliError(
            'Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. ' +
              'Select 0 to disable sparse detection (fully allocates output).',
          );
        }
        s.minSparse = bytes;
        s.explicitSparse = true;
        break;
      }
      case 'progress':
        s.progress = true;
        break;
      case 'cache':
        s.cache = v;
        break;
      case 'source-cache':
        s.sourceCache = v;
        break;
      case 'quiet':
        quiet = true;
        break;
      case 'no-create':
        s.skipCreate = true;
        break;
      case 'coroutines': {
        const n = parseCLong(v);
        if (n === undefined || n < 1 || n > MAX_PARALLEL) {
          throw new CliError(`Invalid number of coroutines. Allowed number of coroutines is between 1 and ${MAX_PARALLEL}`);
        }
        s.parallel = n;
        break;
      }
      case 'out-of-order':
        s.inOrder = false;
        break;
      case 'target-is-zero':
        s.targetIsZero = true;
        break;
      case 'untrusted':
        s.untrusted = true;
        break;
      case 'bitmaps':
        s.bitmaps = true;
        break;
      case 'options':
        s.createOptions = appendOptionList(s.createOptions, v);
        break;
      default: {
        const flag = NOT_YET[o.name];
        if (flag !== undefined) s.unsupported.push(flag);
      }
    }
  }
  if (quiet) s.progress = false;
  return { settings: s, files: args.positionals };
}

/** `qcow2kit convert [options] SRC... DST`. */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const { settings: s, files } = parseSettings(io, argv);

  if (s.compress && s.copyRange) throw new CliError('Cannot enable copy offloading when -c is used');
  if (s.explicitSparse && s.copyRange) throw new CliError('Cannot enable copy offloading when -S is used');
  if (s.unsupported.length > 0) throw new CliError(`convert: option ${s.unsupported[0]} is not supported yet`);
  if (s.targetIsZero && !s.skipCreate) throw new CliError('--target-is-zero requires use of -n flag');
  if (files.length < 2) throw new CliError('Must specify image file name');
  if (parseCacheMode(s.sourceCache) === undefined) throw new CliError(`Invalid source cache option: ${s.sourceCache}`);

  const sourceNames = files.slice(0, -1);
  const outName = files[files.length - 1]!;
  const bar = s.progress ? new QemuProgress(1.0, progressWriter(io)) : undefined;
  bar?.set(0);
  const sources: Image[] = [];
  let target: NodeFileStorage | undefined;
  let targetImage: Image | undefined;
  try {
    for (const name of sourceNames) {
      sources.push(s.untrusted ? await openUntrustedForCli(name, { format: s.format }) : await openCliImage(name, { format: s.format, sequential: true }));
    }
    await loadSnapshot(s.snapshot, sources, sourceNames, s.untrusted);
    if (s.bitmaps && s.outFormat !== 'qcow2') throw new CliError('--bitmaps is only supported with qcow2 output');
    if (s.outFormat === 'qcow2') {
      targetImage = await convertToQcow2(io, s, sources, outName, bar);
      return 0;
    }

    if (!s.skipCreate) checkOutputFormat(s.outFormat);
    if (s.backing !== undefined) throw new CliError(`Backing file not supported for file format '${s.outFormat}'`);
    if (s.compress) throw new CliError('Compression not supported for this file format');
    const total = sources.reduce((n, img) => n + Math.ceil(img.size / 512) * 512, 0);
    await refuseOverwritingSource(outName, sourceNames, s.skipCreate);

    let zeroInitialized: boolean;
    if (!s.skipCreate) {
      target = await createRawFile(outName, s.outFormat, total);
      zeroInitialized = true;
      if (parseCacheMode(s.cache) === undefined) throw new CliError(`Invalid cache option: ${s.cache}`);
    } else {
      if (parseCacheMode(s.cache) === undefined) throw new CliError(`Invalid cache option: ${s.cache}`);
      checkOutputFormat(s.outFormat);
      target = await openExistingRaw(outName);
      if ((await target.size()) < total) throw new CliError('output file is smaller than input file');
      zeroInitialized = s.targetIsZero;
    }

    const out = createRawTarget(target, { size: await target.size(), zeroInitialized });
    await convertImage(sources, out, {
      minSparse: s.minSparse,
      parallel: s.parallel,
      // Without -W qemu-img writes in order; a raw target does not care, so it picks (out of order).
      ...(s.inOrder ? {} : { inOrder: false }),
      ...(bar ? { progress: (p: number) => bar.set(p) } : {}),
    });
    // qemu-img convert writes with cache=unsafe by default: no flush unless asked for.
    if (parseCacheMode(s.cache) !== 'unsafe') await target.flush();
  } catch (e) {
    printCliError(io, e);
    await io.stderr.flush(); // qemu-img's error line comes before the progress line's end
    bar?.end();
    return 1;
  } finally {
    await Promise.allSettled([...sources.map((img) => img.close()), ...(target ? [target.close()] : []), ...(targetImage ? [targetImage.close()] : [])]);
  }
  bar?.end();
  return 0;
}

/** `-O qcow2`: create the target like `create` would (quietly), then copy through the image engine. */
async function convertToQcow2(io: CliIO, s: Settings, sources: readonly Image[], outName: string, bar: QemuProgress | undefined): Promise<Image> {
  if (s.backing !== undefined) throw new CliError('convert -B (backing file for the target) is not supported yet');
  const total = sources.reduce((n, img) => n + Math.ceil(img.size / 512) * 512, 0);
  await refuseOverwritingSource(outName, sources.map((i) => i.driver.storage.name), s.skipCreate);
  if (!s.skipCreate) {
    try {
      await createImageFile(io, {
        filename: outName, fmt: 'qcow2', options: s.createOptions, imgSize: BigInt(total),
        backing: undefined, backingFormat: undefined, unsafe: false, quiet: true,
        warn: (m) => void io.stderr.write(`qcow2kit: warning: ${m}\n`),
      });
    } catch (e) {
      if (e instanceof CreateError || e instanceof OptionError) throw new CliError(`${outName}: ${e.message}`);
      throw e;
    }
  }
  // As qemu-img: the mode is checked once the target exists. Its default, unsafe, never flushes.
  const cache = parseCacheMode(s.cache);
  if (cache === undefined) throw new CliError(`Invalid cache option: ${s.cache}`);
  const image = await openCliImage(outName, { format: 'qcow2', writable: true, ignoreFlush: cache === 'unsafe' });
  if (image.size < total) throw new CliError('output file is smaller than input file');
  const zeroInitialized = !s.skipCreate || s.targetIsZero;
  const out = createImageTarget(image, { zeroInitialized, compress: s.compress });
  const whole = !s.compress && zeroInitialized && isEmptyPlainQcow2(image) ? { wholeClusterSize: image.driver.clusterSize } : {};
  await convertImage(sources, s.compress ? { ...out, compressedClusterSize: image.driver.clusterSize } : { ...out, ...whole }, {
    minSparse: s.minSparse,
    parallel: s.parallel,
    ...(s.inOrder ? {} : { inOrder: false }),
    ...(bar ? { progress: (p: number) => bar.set(p) } : {}),
  });
  if (s.bitmaps) await copyBitmaps(sources, image);
  await image.flush();
  bar?.end();
  return image;
}

/**
 * A qcow2 image with no cluster allocated, no backing file, no subclusters and no raw data file:
 * a partly written cluster then holds zeros in the rest, as if written whole.
 */
function isEmptyPlainQcow2(image: Image): boolean {
  const d = image.driver;
  if (!(d instanceof Qcow2Driver) || image.backing !== undefined || d.meta.extendedL2 || d.meta.dataFileRaw) return false;
  const { l1, l1Entries } = d.state;
  for (let i = 0; i < l1Entries; i++) if (l1.getUint32(i * 8) !== 0 || l1.getUint32(i * 8 + 4) !== 0) return false;
  return true;
}

/** `--bitmaps`: every persistent bitmap of the (single, qcow2) source, with its bits and flags. */
async function copyBitmaps(sources: readonly Image[], target: Image): Promise<void> {
  const src = sources[0]?.driver;
  const dst = target.driver;
  if (sources.length !== 1 || !(src instanceof Qcow2Driver) || !(dst instanceof Qcow2Driver)) {
    throw new CliError('--bitmaps is only supported with a single qcow2 source and qcow2 output');
  }
  for (const bm of src.bitmaps.list()) {
    if (bm.inconsistent) throw new CliError(`Cannot copy inconsistent bitmap '${bm.name}'`);
    await dst.bitmaps.add(bm.name, { granularity: bm.granularity, disabled: !bm.enabled });
    await dst.bitmaps.merge(bm.name, bm.name, src.bitmaps);
  }
}

function checkOutputFormat(fmt: string): void {
  if (fmt === 'raw') return;
  if (fmt === 'qcow2') return;
  throw new CliError(`Unknown file format '${fmt}'`);
}

/** Apply `-l`: qemu-img loads the snapshot into the first source after opening them all. */
async function loadSnapshot(param: ParsedSnapshotParam | undefined, sources: Image[], names: readonly string[], untrusted = false): Promise<void> {
  if (param === undefined) return;
  const sel = param.selector;
  if (sel.idOrName !== undefined && sources.length > 1) throw new CliError('No support for concatenating multiple snapshot');
  const first = sources[0]!;
  if (first.driver.format !== 'qcow2') {
    throw new CliError(`Failed to load snapshot: Block format '${first.driver.format}' used by device '' does not support temporarily loading internal snapshots`);
  }
  let snap: Image;
  try {
    snap = untrusted
      ? await openUntrustedForCli(names[0]!, { format: 'qcow2', snapshot: snapshotLookupKey(sel) })
      : await openCliImage(names[0]!, { format: 'qcow2', snapshot: snapshotLookupKey(sel) });
  } catch (e) {
    if (e instanceof Qcow2Error && e.context['snapshot'] !== undefined) throw new CliError("Failed to load snapshot: Can't find snapshot");
    throw e;
  }
  const entry = (snap.driver as { snapshot?: { id: string; name: string } }).snapshot;
  if (entry === undefined || !snapshotMatches(sel, entry)) {
    await snap.close();
    throw new CliError("Failed to load snapshot: Can't find snapshot");
  }
  await first.close();
  sources[0] = snap;
}

/**
 * qemu-img cannot overwrite one of its own sources because of image locking; we do not
 * lock, so refuse the same case explicitly with qemu-img's message.
 */
async function refuseOverwritingSource(out: string, sources: readonly string[], skipCreate: boolean): Promise<void> {
  const o = await statPath(out).catch(() => undefined);
  if (o === undefined) return;
  for (const name of sources) {
    const st = await statPath(name).catch(() => undefined);
    if (st !== undefined && st.dev === o.dev && st.ino === o.ino) {
      const lock = `Failed to get "write" lock`;
      const hint = `Is another process using the image [${out}]?`;
      throw new HintedError(skipCreate ? `Could not open '${out}': ${lock}` : `${out}: error while converting raw: ${lock}`, hint);
    }
  }
}

/** Create (or truncate) the raw output at its full size, as qemu-img's raw create does. */
async function createRawFile(name: string, fmt: string, size: number): Promise<NodeFileStorage> {
  let file: NodeFileStorage;
  try {
    file = await NodeFileStorage.open(name, { create: true, truncate: true });
  } catch (e) {
    const reason = e instanceof Error ? stripOpenPrefix(e.message, name) : String(e);
    throw new CliError(`${name}: error while converting ${fmt}: Could not create '${name}': ${reason}`);
  }
  try {
    await file.resize(size);
    // Like QEMU's file-posix create: allocate the first block, so the output's holes match.
    if (size > 0) await file.write(new Uint8Array(size < 4096 ? 512 : 4096), 0);
  } catch (e) {
    await file.close();
    throw e;
  }
  return file;
}

async function openExistingRaw(name: string): Promise<NodeFileStorage> {
  try {
    return await NodeFileStorage.open(name, { readOnly: false });
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new CliError(`Could not open '${name}': ${message}`);
  }
}

function stripOpenPrefix(message: string, name: string): string {
  const prefix = `Could not open '${name}': `;
  return message.startsWith(prefix) ? message.slice(prefix.length) : message;
}

// ---- Helpers shared with cmd-compare (CLI-level, Node-only) ----

/**
 * Open an image for reading the way qemu-img's img_open does: backing files followed (their
 * format probed when the image does not name it, as qemu-img 7.2 does), and every failure
 * reported as "Could not open 'NAME': <reason>".
 */
export async function openCliImage(name: string, opts: { format?: string | undefined; snapshot?: string; writable?: boolean; ignoreFlush?: boolean; sequential?: boolean }): Promise<Image> {
  try {
    return await openImageFile(name, {
      readOnly: opts.writable !== true,
      ignoreFlush: opts.ignoreFlush === true,
      dependencies: 'follow-and-probe',
      ...(opts.sequential === true ? { l2CacheBytes: SEQUENTIAL_L2_CACHE_BYTES } : {}),
      ...(opts.format !== undefined ? { format: opts.format } : {}),
      ...(opts.snapshot !== undefined ? { snapshot: opts.snapshot } : {}),
    });
  } catch (e) {
    if (opts.snapshot !== undefined && e instanceof Qcow2Error && e.context['snapshot'] !== undefined) throw e;
    const message = e instanceof Error ? e.message : String(e);
    const code = e instanceof Qcow2Error ? e.code : 'IO';
    throw new Qcow2Error(code, `Could not open '${name}': ${message}`, { path: name }, { cause: e });
  }
}

/** qemu's bdrv_parse_cache_mode: the canonical mode name, or undefined when invalid. */
export function parseCacheMode(mode: string): 'none' | 'directsync' | 'writeback' | 'unsafe' | 'writethrough' | undefined {
  switch (mode) {
    case 'off':
    case 'none':
      return 'none';
    case 'directsync':
    case 'writeback':
    case 'unsafe':
    case 'writethrough':
      return mode;
    default:
      return undefined;
  }
}

/** A CliError followed by a hint line printed without the program prefix (qemu's error_append_hint). */
export class HintedError extends CliError {
  readonly hint: string;

  constructor(message: string, hint: string) {
    super(message);
    this.name = 'HintedError';
    this.hint = hint;
  }
}

/** Print an error as main does (`qcow2kit: <line>` on stderr), for commands that must print before finishing the progress line. */
export function printCliError(io: CliIO, e: unknown): void {
  const full = e instanceof CliError || e instanceof Qcow2Error;
  const message = e instanceof Error ? e.message : String(e);
  const lines = (full ? message : (message.split('\n')[0] ?? '')).split('\n');
  for (const line of lines) io.stderr.write(`${PROGRAM}: ${line === '' ? 'Unknown error' : line}\n`);
  if (e instanceof HintedError) io.stderr.write(`${e.hint}\n`);
  if (e instanceof CliError && e.usage) io.stderr.write(`Try '${PROGRAM} --help' for more information\n`);
  if (io.env['QCOW2KIT_DEBUG'] === '1' && e instanceof Error && e.stack !== undefined) io.stderr.write(`${e.stack}\n`);
}

/** Progress lines go to stdout immediately, as qemu-img fflush()es them. */
export function progressWriter(io: CliIO): (text: string) => void {
  return (text) => {
    io.stdout.write(text);
    void io.stdout.flush();
  };
}
