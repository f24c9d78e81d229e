import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import { openImageFile } from '../open-image-file-node.js';
import { CliError } from './cli-error.js';

/** What a command asks of an image it opens. */
export interface CliOpenOptions {
  format?: string | undefined;
  snapshot?: string | undefined;
  /** Open the backing chain (default true; `info` without --backing-chain does not). */
  backing?: boolean;
  readOnly?: boolean;
  /** The command reads the image front to back once (see {@link SEQUENTIAL_L2_CACHE_BYTES}). */
  sequential?: boolean;
}

/**
 * L2 cache budget for commands that walk an image once in order (map, convert's sources):
 * such a scan never returns to a table, and a cache that stays small reuses its memory
 * instead of touching fresh pages for every table (the read-only driver recycles evicted
 * tables). qemu-img caches enough to cover the image; `map` of a 64 GiB image then touches
 * 8 MiB.
 */
export const SEQUENTIAL_L2_CACHE_BYTES = 1 << 20;

/**
 * Open an image the way qemu-img does for its commands: backing files are followed relative
 * to the image and probed when the image does not name their format; failures read
 * "Could not open 'NAME': reason".
 */
export async function openForCli(path: string, opts: CliOpenOptions = {}): Promise<Image> {
  if (opts.format !== undefined && opts.format !== 'qcow2' && opts.format !== 'raw') {
    throw new CliError(`Could not open '${path}': Unknown driver '${opts.format}'`);
  }
  try {
    return await openImageFile(path, {
      dependencies: 'follow-and-probe',
      readOnly: opts.readOnly ?? true,
      ...(opts.format !== undefined ? { format: opts.format } : {}),
      ...(opts.snapshot !== undefined ? { snapshot: opts.snapshot } : {}),
      ...(opts.backing === false ? { openBacking: false } : {}),
      ...(opts.sequential === true ? { l2CacheBytes: SEQUENTIAL_L2_CACHE_BYTES } : {}),
    });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(`Could not open '${path}': ${e.message}`, { cause: e });
    throw e;
  }
}

/** qemu-img's --output values. */
export function parseOutputFormat(value: string | undefined): 'human' | 'json' {
  if (value === undefined || value === 'human') return 'human';
  if (value === 'json') return 'json';
  throw new CliError('--output must be used with human or json as argument.');
}
