import { Qcow2Error } from '../../errors.js';
import { encodeText } from '../../util/bytes.js';
import { encodeExtensions, extensionsLength, type HeaderExtension } from './header-extensions.js';
import { encodeHeader, V2_HEADER_LENGTH } from './header.js';
import type { Qcow2State } from './qcow2-state.js';

/**
 * Rewrite the whole first cluster the way QEMU's qcow2_update_header does: the fixed header
 * from `meta.header`, the given extensions, the end marker, then the backing file name (its
 * offset and size in the header follow). Call with the metadata lock held, after everything
 * the new header points to is durable; the caller flushes afterwards and then commits
 * `exts` to `meta.extensions`.
 *
 * @example
 * ```ts
 * await writer.flushLocked();
 * await rewriteCluster0(state, exts);
 * await state.storage.flush();
 * state.meta.extensions = exts;
 * ```
 */
export async function rewriteCluster0(s: Qcow2State, exts: readonly HeaderExtension[]): Promise<void> {
  const h = s.meta.header;
  const name = s.meta.backingName;
  const hasName = name !== undefined && name !== '';
  const nameBytes = encodeText(hasName ? name : '');
  const extStart = h.version === 2 ? V2_HEADER_LENGTH : h.headerLength;
  if (extStart + extensionsLength(exts) + nameBytes.byteLength > s.clusterSize) {
    throw new Qcow2Error('UNSUPPORTED', 'Header extensions and backing file name do not fit in the first cluster', {});
  }
  const cluster0 = new Uint8Array(s.clusterSize);
  const nameAt = encodeExtensions(exts, cluster0, extStart);
  h.backingFileOffset = hasName ? nameAt : 0;
  h.backingFileSize = hasName ? nameBytes.byteLength : 0;
  cluster0.set(nameBytes, nameAt);
  encodeHeader(h, cluster0);
  await s.storage.write(cluster0, 0);
  s.headerDirty = false;
}
