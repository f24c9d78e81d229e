/**
 * `qcow2kit rebase`: qemu-img rebase. Safe mode copies what differs between the old and the
 * new backing chain into the overlay, then rewrites its backing file name and format;
 * `-u` only rewrites them; `-b ""` detaches.
 */
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import { openImageFile } from '../open-image-file-node.js';
import { QemuProgress } from '../ops/qemu-progress.js';
import { changeBackingFile, rebaseCopy } from '../ops/rebase.js';
import { ArgError, parseCommandArgs, type ArgSpec, type ParsedOption } from './args.js';
import { CliError } from './cli-error.js';
import { combinePath, findBackingImage, layerAt, warnProbedRaw } from './cmd-commit.js';
import { parseCacheMode, printCliError, progressWriter } from './cmd-convert.js';
import { QEMU_FORMATS } from './cmd-measure.js';
import type { CliIO } from './main.js';
import { openForCli } from './open-for-cli.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'backing-format', short: 'F', arg: 'required' },
    { name: 'backing', short: 'b', arg: 'required' },
    { name: 'unsafe', short: 'u' },
    { name: 'progress', short: 'p' },
    { name: 'cache', short: 't', arg: 'required' },
    { name: 'src-cache', short: 'T', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
  ],
};

/**
 * The single-precision progress accumulation of qemu_progress_print(delta, 100):
 * `current + delta / 100 * 100`, capped at 100.
 */
function addPercent(current: number, delta: number): number {
  const f = Math.fround;
  const next = f(current + f(f(delta / 100) * 100));
  return next > 100 ? 100 : next;
}

/** `rebase [-f fmt] [-t cache] [-T cache] [-p] [-q] [-u] -b BACKING [-F fmt] FILE` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  let options: readonly ParsedOption[];
  let positionals: readonly string[] = [];
  try {
    const args = parseCommandArgs('rebase', argv, SPEC);
    options = args.options;
    positionals = args.positionals;
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    if (e.parsed.some((o) => o.name === 'object')) throw new CliError('--object is not supported');
    throw e;
  }
  let format: string | undefined;
  let backingFormat: string | undefined;
  let backing: string | undefined;
  let unsafe = false;
  let progress = false;
  let quiet = false;
  let cache = 'writeback';
  let srcCache = 'writeback';
  for (const { name, value = '' } of options) {
    switch (name) {
      case 'format':
        format = value;
        break;
      case 'backing-format':
        backingFormat = value;
        break;
      case 'backing':
        backing = value;
        break;
      case 'unsafe':
        unsafe = true;
        break;
      case 'progress':
        progress = true;
        break;
      case 'cache':
        cache = value;
        break;
      case 'src-cache':
        srcCache = value;
        break;
      case 'quiet':
        quiet = true;
        break;
      case 'object':
        throw new CliError('--object is not supported');
      case 'image-opts':
        throw new CliError('--image-opts is not supported');
    }
  }
  if (quiet) progress = false;
  if (positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  if (!unsafe && backing === undefined) throw new CliError('Must specify backing file (-b) or use unsafe mode (-u)', { usage: true });
  const filename = positionals[0]!;

  // qemu-img starts the progress line before opening anything.
  const bar = progress ? new QemuProgress(2.0, progressWriter(io)) : undefined;
  bar?.set(0);
  const opened: Image[] = [];
  let failure: unknown;
  try {
    await rebase();
  } catch (e) {
    failure = e;
  } finally {
    for (const img of opened.reverse()) await img.close().catch((e: unknown) => (failure ??= e));
  }
  // qemu-img reports the error, then ends the progress line.
  if (failure !== undefined && !(failure instanceof Reported)) printCliError(io, failure instanceof Qcow2Error ? new CliError(failure.message, { cause: failure }) : failure);
  await io.stderr.flush();
  bar?.end();
  return failure === undefined ? 0 : 1;

  async function rebase(): Promise<void> {
    if (parseCacheMode(cache) === undefined) throw new CliError(`Invalid cache option: ${cache}`);
    if (parseCacheMode(srcCache) === undefined) throw new CliError(`Invalid source cache option: ${srcCache}`);
    // -u ignores the old backing file, so that a moved or renamed one can be fixed.
    const top = await openForCli(filename, { format, readOnly: false, ...(unsafe ? { backing: false } : {}) });
    opened.push(top);
    warnProbedRaw(io, top, filename, format);
    if (backingFormat !== undefined && !QEMU_FORMATS.includes(backingFormat)) {
      throw new CliError(`Invalid format name: '${backingFormat}'`);
    }

    if (!unsafe) {
      let newBacking: Image | undefined;
      let prefixDepth: number | undefined;
      if (backing !== undefined && backing !== '') {
        const realPath = combinePath(top.driver.storage.name, backing);
        prefixDepth = await findBackingImage(top, realPath);
        if (prefixDepth !== undefined) {
          newBacking = layerAt(top, prefixDepth);
        } else {
          newBacking = await openNewBacking(realPath, backing, backingFormat);
          opened.push(newBacking);
        }
      }
      let current = 0;
      await rebaseCopy(top, {
        newBacking,
        ...(prefixDepth !== undefined ? { prefixDepth } : {}),
        ...(bar
          ? {
              progressStep: (delta: number) => {
                current = addPercent(current, delta);
                bar.set(current);
              },
            }
          : {}),
      });
    }

    const target = backing !== undefined && backing !== '' ? backing : undefined;
    let changeFailure: unknown;
    try {
      if (target !== undefined && backingFormat === undefined) {
        throw new CliError(`Could not change the backing file to '${target}': backing format must be specified`);
      }
      await changeBackingFile(top, target, target === undefined ? undefined : backingFormat);
    } catch (e) {
      changeFailure = e instanceof Qcow2Error ? new CliError(changeError(target, e), { cause: e }) : e;
    }
    // qemu-img reports a failed header change, then still completes the progress line.
    if (changeFailure !== undefined) printCliError(io, changeFailure);
    bar?.set(100);
    if (changeFailure !== undefined) throw new Reported();
  }
}

/** An error already printed. */
class Reported extends Error {}

/** qemu-img's message when bdrv_change_backing_file fails. */
function changeError(target: string | undefined, e: Qcow2Error): string {
  const name = target ?? '(null)';
  if (e.context['errno'] === 'ENOTSUP' || e.code === 'UNSUPPORTED') return `Could not change the backing file to '${name}': Operation not supported`;
  if (e.context['errno'] === 'EINVAL' || /data-file-raw/.test(e.message)) return `Could not change the backing file to '${name}': Invalid argument`;
  if (e.code === 'INVALID_ARGUMENT') return `Could not change the backing file to '${name}': No space left in the file header`;
  return `Could not change the backing file to '${name}': ${e.message}`;
}

/** Open the new backing file (its format probed unless -F names it), with qemu-img's message on failure. */
async function openNewBacking(path: string, given: string, fmt: string | undefined): Promise<Image> {
  try {
    return await openImageFile(path, {
      readOnly: true,
      dependencies: 'follow-and-probe',
      ...(fmt !== undefined ? { format: fmt } : {}),
    });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(`Could not open new backing file '${given}': ${e.message}`, { cause: e });
    throw e;
  }
}
