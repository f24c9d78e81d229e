/**
 * `qcow2kit commit`: qemu-img commit, writing an overlay's changes into its backing file
 * (or a base further down) and emptying the overlay unless -d or -b.
 */
import { isAbsolute } from 'node:path';
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import { realpathOf } from '../storage/node-fs.js';
import { commitImage, emptyImage } from '../ops/commit.js';
import { QemuProgress } from '../ops/qemu-progress.js';
import { parseSizeArg } from '../util/size.js';
import { ArgError, parseCommandArgs, type ArgSpec, type ParsedOption } from './args.js';
import { CliError } from './cli-error.js';
import { parseCacheMode, printCliError, progressWriter } from './cmd-convert.js';
import type { CliIO } from './main.js';
import { openForCli } from './open-for-cli.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'cache', short: 't', arg: 'required' },
    { name: 'base', short: 'b', arg: 'required' },
    { name: 'drop', short: 'd' },
    { name: 'progress', short: 'p' },
    { name: 'quiet', short: 'q' },
    { name: 'rate', short: 'r', arg: 'required' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
  ],
};

/** QEMU's path_combine(): a relative `name` is taken relative to the directory part of `from`. */
export function combinePath(from: string, name: string): string {
  if (isAbsolute(name)) return name;
  const slash = from.lastIndexOf('/');
  return slash < 0 ? name : from.slice(0, slash + 1) + name;
}

/**
 * QEMU's bdrv_find_backing_image(): the depth (1 = backing file) of the layer of `top`'s
 * chain that `name` designates. For each layer, `name` is taken relative to that layer's
 * directory and compared, as a real path, with the real path of the layer's backing file.
 */
export async function findBackingImage(top: Image, name: string): Promise<number | undefined> {
  let layer = top;
  let depth = 0;
  while (layer.backing !== undefined) {
    const below = layer.backing;
    const wanted = await realpathOf(combinePath(layer.driver.storage.name, name)).catch(() => undefined);
    const actual = await realpathOf(below.driver.storage.name).catch(() => undefined);
    if (wanted !== undefined && wanted === actual) return depth + 1;
    layer = below;
    depth++;
  }
  return undefined;
}

/**
 * QEMU's warning when an image opened for writing was probed as raw (its first sector is then
 * guarded against writes that would make it look like another format).
 */
export function warnProbedRaw(io: CliIO, image: Image, filename: string, format: string | undefined): void {
  if (format !== undefined || image.driver.format !== 'raw') return;
  io.stderr.write(
    `WARNING: Image format was not specified for '${filename}' and probing guessed raw.\n` +
      '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
      "         Specify the 'raw' format explicitly to remove the restrictions.\n",
  );
}

/** The layer at `depth` of `top`'s chain (0 = top). */
export function layerAt(top: Image, depth: number): Image {
  let layer = top;
  for (let i = 0; i < depth; i++) {
    if (layer.backing === undefined) throw new Qcow2Error('INVALID_ARGUMENT', `The chain has no layer ${depth}`, { depth });
    layer = layer.backing;
  }
  return layer;
}

/** `commit [-f fmt] [-t cache] [-b base] [-r rate] [-d] [-p] [-q] FILE` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  let options: readonly ParsedOption[];
  let positionals: readonly string[] = [];
  let argError: ArgError | undefined;
  try {
    const args = parseCommandArgs('commit', argv, SPEC);
    options = args.options;
    positionals = args.positionals;
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    argError = e;
    options = e.parsed;
  }
  let format: string | undefined;
  let cache = 'writeback';
  let base: string | undefined;
  let drop = false;
  let progress = false;
  let quiet = false;
  for (const { name, value = '' } of options) {
    switch (name) {
      case 'format':
        format = value;
        break;
      case 'cache':
        cache = value;
        break;
      case 'base':
        base = value;
        drop = true; // -b implies -d
        break;
      case 'drop':
        drop = true;
        break;
      case 'progress':
        progress = true;
        break;
      case 'quiet':
        quiet = true;
        break;
      case 'rate':
        // Accepted and checked like qemu-img; there is nothing to throttle here.
        parseSizeArg('rate limit', value);
        break;
      case 'object':
        throw new CliError('--object is not supported');
      case 'image-opts':
        throw new CliError('--image-opts is not supported');
    }
  }
  if (argError !== undefined) throw argError;
  if (quiet) progress = false;
  if (positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  const filename = positionals[0]!;
  if (parseCacheMode(cache) === undefined) throw new CliError(`Invalid cache option: ${cache}`);

  const top = await openForCli(filename, { format, readOnly: false });
  warnProbedRaw(io, top, filename, format);
  const bar = progress ? new QemuProgress(1.0, progressWriter(io)) : undefined;
  let baseImage: Image | undefined;
  let failure: unknown;
  try {
    bar?.set(0);
    let depth = 1;
    if (base !== undefined) {
      const found = await findBackingImage(top, base);
      if (found === undefined) throw new CliError(`Did not find '${base}' in the backing chain of '${filename}'`);
      depth = found;
    } else if (top.backing === undefined) {
      throw new CliError('Image does not have a backing file');
    }
    const layer = layerAt(top, depth);
    baseImage = await openForCli(layer.driver.storage.name, { format: layer.driver.format, readOnly: false });
    await commitImage(top, { baseDepth: depth, base: baseImage, ...(bar ? { progress: (p: number) => bar.set(p) } : {}) });
    if (!drop) {
      try {
        await emptyImage(top);
      } catch (e) {
        // qemu-img ignores formats that cannot be emptied (-ENOTSUP).
        if (!(e instanceof Qcow2Error && e.code === 'UNSUPPORTED')) throw e;
      }
    }
    bar?.set(100);
  } catch (e) {
    failure = e;
  } finally {
    await baseImage?.close().catch((e: unknown) => (failure ??= e));
    await top.close().catch((e: unknown) => (failure ??= e));
  }
  bar?.end();
  if (failure !== undefined) {
    printCliError(io, failure instanceof Qcow2Error ? new CliError(failure.message, { cause: failure }) : failure);
    return 1;
  }
  if (!quiet) io.stdout.write('Image committed.\n');
  return 0;
}
