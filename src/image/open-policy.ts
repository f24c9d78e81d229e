import type { DependencyRequest } from '../format/driver.js';
import type { Storage, StorageResolver } from '../storage/storage.js';

/** A dependency opened by a policy: the storage and, when known, its format. */
export interface OpenedDependency {
  storage: Storage;
  format?: string;
}

/**
 * How files named by an image (backing files, external data files) are found.
 *
 * - `follow`: open them through `resolver` (for files: relative to the image's directory).
 *   A backing file without a stored format is probed only when `probeFormat` is true.
 * - `deny`: refuse any image that names a dependency (upload checkers, untrusted input).
 * - `custom`: the caller decides; return `undefined` to refuse.
 *
 * @example
 * ```ts
 * const policy: OpenPolicy = { mode: 'follow', resolver: new NodeFileResolver(), probeFormat: false };
 * ```
 */
export type OpenPolicy =
  | { mode: 'follow'; resolver: StorageResolver; probeFormat?: boolean }
  | { mode: 'deny' }
  | { mode: 'custom'; open(request: DependencyRequest, from: Storage, readOnly: boolean): Promise<OpenedDependency | undefined>; probeFormat?: boolean };
