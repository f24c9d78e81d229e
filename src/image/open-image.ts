import type { CodecSet } from '../codecs/codec.js';
import { jsCodecs } from '../codecs/codecs-js.js';
import { Qcow2Error } from '../errors.js';
import type { DependencyRequest, FormatDriver } from '../format/driver.js';
import { probeFormat } from '../format/probe.js';
import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import { RawDriver } from '../format/raw/raw-driver.js';
import type { Storage } from '../storage/storage.js';
import { Image } from './image.js';
import type { OpenedDependency, OpenPolicy } from './open-policy.js';

/** Options for {@link openImage}. */
export interface OpenImageOptions {
  /** Format of the top image; probed from its first bytes when omitted. */
  format?: string;
  /** Open read-only (the default until the write path lands). */
  readOnly?: boolean;
  /** Read this internal snapshot (id or name) of the top image. */
  snapshot?: string;
  /** Compression codecs; defaults to the browser-safe set. */
  codecs?: CodecSet;
  /** How backing and data files are found. Default: deny (an image naming one fails to open). */
  policy?: OpenPolicy;
  /** Longest backing chain accepted, top included. Default 256. */
  maxChainDepth?: number;
  /** Open the backing chain (default true). `info` reads only the top image, like qemu-img. */
  openBacking?: boolean;
  /**
   * Called when a writable open finds the image dirty (a lazy-refcounts writer crashed):
   * repair the storage (e.g. `checkQcow2(storage, { repair: 'all' })`), then the open is
   * retried once, as QEMU repairs such images on open. Without it the open fails.
   */
  repairDirty?: (storage: Storage) => Promise<void>;
  /** L2 cache budget per qcow2 layer, in bytes. */
  l2CacheBytes?: number;
}

const DEFAULT_MAX_CHAIN = 256;

/**
 * Open an image and its backing chain on top of a storage.
 *
 * @example
 * ```ts
 * const image = await openImage(new MemoryStorage(bytes), { format: 'qcow2' });
 * const buf = new Uint8Array(512);
 * await image.read(buf, 0);
 * await image.close();
 * ```
 */
export async function openImage(storage: Storage, options: OpenImageOptions = {}): Promise<Image> {
  const policy = options.policy ?? { mode: 'deny' };
  const codecs = options.codecs ?? jsCodecs;
  const maxDepth = options.maxChainDepth ?? DEFAULT_MAX_CHAIN;
  const seen = new Set<string>();
  const opened: Storage[] = [];
  const format = options.format ?? (await probeFormat(storage));

  const openLayer = async (st: Storage, fmt: string, depth: number, top: boolean): Promise<Image> => {
    if (depth >= maxDepth) throw new Qcow2Error('CHAIN_LOOP', `Backing chain is deeper than ${maxDepth} images`, { depth });
    const id = (await st.identity?.()) ?? `name:${st.name}`;
    if (seen.has(id)) throw new Qcow2Error('CHAIN_LOOP', `Backing chain loop detected: '${st.name}' appears twice in the chain`, { name: st.name });
    seen.add(id);
    const driver = await openDriver(st, fmt, {
      readOnly: top ? (options.readOnly ?? true) : true,
      codecs,
      openDataFile: async (req) => (await openDependency(policy, req, st, top ? (options.readOnly ?? true) : true)).storage,
      ...(top && options.snapshot !== undefined ? { snapshot: options.snapshot } : {}),
      ...(options.l2CacheBytes !== undefined ? { l2CacheBytes: options.l2CacheBytes } : {}),
    });
    try {
      const req = driver.backing;
      if (req === undefined || options.openBacking === false) return new Image(driver);
      let dep: OpenedDependency;
      try {
        dep = await openDependency(policy, req, st, true);
      } catch (e) {
        throw wrapBacking(e);
      }
      opened.push(dep.storage);
      const backingFormat = req.format ?? dep.format ?? (await probeIfAllowed(policy, dep.storage, req));
      let below: Image;
      try {
        below = await openLayer(dep.storage, backingFormat, depth + 1, false);
      } catch (e) {
        throw e instanceof Qcow2Error && e.code === 'CHAIN_LOOP' ? e : wrapBacking(e);
      }
      return new Image(driver, below);
    } catch (e) {
      await driver.close().catch(() => {});
      throw e;
    }
  };

  try {
    try {
      return await openLayer(storage, format, 0, true);
    } catch (e) {
      if (!(e instanceof Qcow2Error && e.context['dirty'] === true && options.repairDirty !== undefined)) throw e;
      await Promise.allSettled(opened.splice(0).map((s) => s.close()));
      seen.clear();
      await options.repairDirty(storage);
      return await openLayer(storage, format, 0, true);
    }
  } catch (e) {
    await Promise.allSettled(opened.map((s) => s.close()));
    throw e;
  }
}

async function openDriver(storage: Storage, format: string, opts: Parameters<typeof Qcow2Driver.open>[1]): Promise<FormatDriver> {
  switch (format) {
    case 'qcow2':
      return Qcow2Driver.open(storage, opts);
    case 'raw':
      return RawDriver.open(storage);
    default:
      throw new Qcow2Error('UNSUPPORTED', `Unknown driver '${format}'`, { format });
  }
}

async function openDependency(policy: OpenPolicy, req: DependencyRequest, from: Storage, readOnly: boolean): Promise<OpenedDependency> {
  switch (policy.mode) {
    case 'deny':
      throw new Qcow2Error('DEPENDENCY_DENIED', `Refusing to open ${req.role === 'backing' ? 'backing file' : 'data file'} '${req.name}': dependencies are denied by the open policy`, { ...req });
    case 'follow':
      return { storage: await policy.resolver.open(req.name, from, { readOnly }) };
    case 'custom': {
      const dep = await policy.open(req, from, readOnly);
      if (dep === undefined) {
        throw new Qcow2Error('DEPENDENCY_DENIED', `Refusing to open ${req.role === 'backing' ? 'backing file' : 'data file'} '${req.name}': refused by the open policy`, { ...req });
      }
      return dep;
    }
  }
}

async function probeIfAllowed(policy: OpenPolicy, storage: Storage, req: DependencyRequest): Promise<string> {
  if (policy.mode !== 'deny' && policy.probeFormat === true) return probeFormat(storage);
  throw new Qcow2Error('DEPENDENCY_DENIED', `Backing file '${req.name}' has no format stored in the image and format probing is disabled`, { ...req });
}

function wrapBacking(e: unknown): unknown {
  if (!(e instanceof Qcow2Error)) return e;
  return new Qcow2Error(e.code, `Could not open backing file: ${e.message}`, e.context, { cause: e });
}
