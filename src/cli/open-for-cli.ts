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
}

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
