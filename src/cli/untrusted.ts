/**
 * `--untrusted` for the command line: the option every image-reading command accepts, and what
 * it means there. With it, no file named by the image (backing file, external data file) is
 * opened, the format is never probed (so `-f` is required), and metadata memory is capped
 * (see src/ops/untrusted-inspect.ts). `info --untrusted` adds an "untrusted-report" object
 * saying what an upload checker needs to know.
 *
 * Wiring (one line per command): add {@link UNTRUSTED_OPTION} to the command's option spec, then
 * - info: `if (args.has('untrusted')) return infoUntrusted(file, { format, output, backingChain }, io);`
 * - map / convert / compare / io: open with {@link openUntrustedForCli} instead of the usual open;
 * - check: `const limits = await prepareUntrustedCheck(storage, format, repair);` then pass
 *   `maxArrayBytes: limits.maxArrayBytes` to checkQcow2 (check opens no dependency anyway).
 */
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import {
  borrowStorage, DEFAULT_UNTRUSTED_LIMITS, inspectUntrusted, measureQcow2Metadata, openUntrusted, readQcow2HeaderFacts,
  type UntrustedFormat, type UntrustedLimits, type UntrustedReport,
} from '../ops/untrusted-inspect.js';
import { nodeCodecs } from '../codecs/codecs-node.js';
import { NodeFileStorage } from '../storage/node-file-storage.js';
import type { Storage } from '../storage/storage.js';
import { CliError } from './cli-error.js';
import { formatInfoHuman, formatInfoJson, type ImageInfoJson } from './format-info.js';
import { imageInfo } from './image-info.js';
import { PROGRAM, type CliIO } from './main.js';

/** The option, for a command's ArgSpec. */
export const UNTRUSTED_OPTION = { name: 'untrusted', long: 'untrusted' } as const;

/** Largest refcount array `check --untrusted` may build (checkQcow2 allows 1 GiB by default). */
export const UNTRUSTED_CHECK_ARRAY_BYTES = 64 << 20;

/**
 * The declared format, required with --untrusted: a format guessed from bytes a guest or an
 * uploader wrote is exactly what must not be trusted.
 *
 * @example
 * ```ts
 * const format = untrustedFormat(args.get('format')); // throws CliError without -f
 * ```
 */
export function untrustedFormat(format: string | undefined): UntrustedFormat {
  if (format === undefined) {
    throw new CliError('--untrusted requires the image format (-f qcow2 or -f raw): the format of an untrusted image is never probed');
  }
  if (format !== 'qcow2' && format !== 'raw') throw new CliError(`Unknown driver '${format}'`);
  return format;
}

/** What a command asks of an untrusted image it opens. */
export interface UntrustedCliOpenOptions {
  format: string | undefined;
  snapshot?: string | undefined;
  /** Needs the backing chain (default true): an image with a backing file is then refused. */
  backing?: boolean;
  readOnly?: boolean;
  limits?: Partial<UntrustedLimits>;
}

/**
 * Open a file as an untrusted image; image problems stay Qcow2Errors (for callers with their
 * own "Could not open" wording, such as convert).
 *
 * @example
 * ```ts
 * const image = await openUntrustedFile('upload.qcow2', { format: 'qcow2' });
 * ```
 */
export async function openUntrustedFile(path: string, opts: Omit<UntrustedCliOpenOptions, 'format'> & { format: UntrustedFormat }): Promise<Image> {
  const readOnly = opts.readOnly ?? true;
  const storage = await NodeFileStorage.open(path, { readOnly });
  try {
    return await openUntrusted(storage, {
      format: opts.format,
      readOnly,
      codecs: nodeCodecs,
      ...(opts.snapshot !== undefined ? { snapshot: opts.snapshot } : {}),
      ...(opts.backing === false ? { openBacking: false } : {}),
      ...(opts.limits !== undefined ? { limits: opts.limits } : {}),
    });
  } catch (e) {
    await storage.close();
    throw e;
  }
}

/**
 * Open a file named on the command line as an untrusted image. Failures read
 * "Could not open 'NAME': reason", as with the ordinary open.
 *
 * @example
 * ```ts
 * const image = await openUntrustedForCli('upload.qcow2', { format: 'qcow2' });
 * ```
 */
export async function openUntrustedForCli(path: string, opts: UntrustedCliOpenOptions): Promise<Image> {
  const format = untrustedFormat(opts.format);
  try {
    return await openUntrustedFile(path, { ...opts, format });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(`Could not open '${path}': ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * For `check --untrusted`: the format must be declared and the metadata must fit the limits.
 * Returns the refcount-array cap to pass to checkQcow2.
 */
export async function prepareUntrustedCheck(storage: Storage, format: string | undefined, repair: 'none' | 'leaks' | 'all', path = storage.name): Promise<{ maxArrayBytes: number }> {
  if (untrustedFormat(format) === 'qcow2') {
    try {
      const facts = await readQcow2HeaderFacts(storage);
      await measureQcow2Metadata(storage, facts, { ...DEFAULT_UNTRUSTED_LIMITS }, { writable: repair !== 'none' });
    } catch (e) {
      if (e instanceof Qcow2Error) throw new CliError(`Could not open '${path}': ${e.message}`, { cause: e });
      throw e;
    }
  }
  return { maxArrayBytes: UNTRUSTED_CHECK_ARRAY_BYTES };
}

/** The report as indented "key: value" lines, for `info --untrusted` without --output=json. */
export function formatUntrustedReportHuman(r: UntrustedReport): string {
  const lines = ['Untrusted report:'];
  for (const [key, value] of Object.entries(r)) {
    const text = Array.isArray(value) ? (value.length === 0 ? '(none)' : value.join(', ')) : String(value);
    lines.push(`    ${key.replaceAll('-', ' ')}: ${text}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * `info --untrusted [-f fmt] [--output=human|json] FILE`: the usual information of the top
 * image (opened under the untrusted policy) plus an "untrusted-report" object. When the image
 * cannot be opened under that policy, the report is printed anyway (it says why in
 * "open-error") and the command fails with qemu-img's "Could not open" message and exit 1.
 *
 * @example
 * ```ts
 * const code = await infoUntrusted('upload.qcow2', { format: 'qcow2', output: 'json', backingChain: false }, io);
 * ```
 */
export async function infoUntrusted(file: string, opts: { format: string | undefined; output: 'human' | 'json'; backingChain: boolean }, io: CliIO): Promise<number> {
  const format = untrustedFormat(opts.format);
  if (opts.backingChain) throw new CliError('--backing-chain cannot be used with --untrusted: backing files of untrusted images are never opened');
  let storage: NodeFileStorage;
  try {
    storage = await NodeFileStorage.open(file, { readOnly: true });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(`Could not open '${file}': ${e.message}`, { cause: e });
    throw e;
  }
  try {
    const report = await inspectUntrusted(storage, { format, codecs: nodeCodecs });
    let info: ImageInfoJson | undefined;
    if (report['open-error'] === undefined) {
      const image = await openUntrusted(borrowStorage(storage), { format, openBacking: false, codecs: nodeCodecs }).catch((e: unknown) => {
        if (e instanceof Qcow2Error) return undefined;
        throw e;
      });
      if (image !== undefined) {
        try {
          info = await imageInfo(image, file);
        } finally {
          await image.close();
        }
      }
    }
    const base: ImageInfoJson = info ?? ({ filename: file, format } as ImageInfoJson);
    if (opts.output === 'json') {
      io.stdout.write(formatInfoJson({ ...base, 'untrusted-report': report } as unknown as ImageInfoJson));
    } else {
      if (info !== undefined) io.stdout.write(formatInfoHuman(info));
      io.stdout.write(formatUntrustedReportHuman(report));
    }
    if (info === undefined) {
      io.stderr.write(`${PROGRAM}: Could not open '${file}': ${report['open-error'] ?? 'the image could not be opened'}\n`);
      return 1;
    }
    return 0;
  } finally {
    await storage.close();
  }
}
