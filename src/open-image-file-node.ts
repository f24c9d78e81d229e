// Node-only: open an image file and its chain from the local file system. Kept apart from
// the `node.ts` entry point so the CLI loads only what opening needs.
import { nodeCodecs } from './codecs/codecs-node.js';
import type { Image } from './image/image.js';
import { openImage, type OpenImageOptions } from './image/open-image.js';
import type { OpenPolicy } from './image/open-policy.js';
import { NodeFileResolver, NodeFileStorage } from './storage/node-file-storage.js';
import { withoutFlush, withoutFlushResolver } from './storage/no-flush-storage.js';
import { Qcow2Error } from './errors.js';

/** Options for {@link openImageFile}. */
export interface OpenImageFileOptions extends Omit<OpenImageOptions, 'policy'> {
  /**
   * How backing and data files are found. Default: follow them relative to the image's
   * directory, without probing the format of a backing file that does not name one.
   * `'deny'` refuses images that name any other file (use it for untrusted images).
   */
  dependencies?: 'follow' | 'follow-and-probe' | 'deny' | OpenPolicy;
  /**
   * QEMU's cache=unsafe: flushes are not passed on to the files (the image and the files it
   * follows), so nothing is forced to disk; writes still happen in order. Default false.
   */
  ignoreFlush?: boolean;
}

/**
 * Open an image file (and its backing chain) from the local file system.
 *
 * @example
 * ```ts
 * import { openImageFile } from 'qcow2kit/node';
 * const image = await openImageFile('disk.qcow2');
 * const sector = new Uint8Array(512);
 * await image.read(sector, 0);
 * console.log(await image.blockStatus(0, image.size));
 * await image.close();
 * ```
 */
export async function openImageFile(path: string, options: OpenImageFileOptions = {}): Promise<Image> {
  const { dependencies = 'follow', ignoreFlush = false, ...rest } = options;
  const resolver = ignoreFlush ? withoutFlushResolver(new NodeFileResolver()) : new NodeFileResolver();
  const policy: OpenPolicy =
    dependencies === 'follow' ? { mode: 'follow', resolver }
    : dependencies === 'follow-and-probe' ? { mode: 'follow', resolver, probeFormat: true }
    : dependencies === 'deny' ? { mode: 'deny' }
    : dependencies;
  const file = await NodeFileStorage.open(path, { readOnly: rest.readOnly ?? true });
  const storage = ignoreFlush ? withoutFlush(file) : file;
  try {
    return await openImage(storage, {
      codecs: nodeCodecs,
      // Like QEMU: a dirty image (crashed lazy-refcounts writer) is repaired on a writable open.
      repairDirty: async (s) => {
        // Loaded on demand: most opens never need the checker.
        const { checkQcow2 } = await import('./ops/check/check-qcow2.js');
        const outcome = await checkQcow2(s, { repair: 'all' });
        if (outcome.exitCode !== 0) throw new Qcow2Error('CORRUPT', 'Could not repair dirty image', { exitCode: outcome.exitCode });
      },
      ...rest,
      policy,
    });
  } catch (e) {
    await storage.close();
    throw e;
  }
}
