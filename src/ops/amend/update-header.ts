/**
 * QEMU's qcow2_update_header as amend uses it: rewrite cluster 0 from the in-memory header,
 * with the header extensions QEMU writes, in its order (backing format, data file name,
 * encryption header pointer, feature name table for v3, bitmaps, then unknown extensions as
 * they were), then the backing file name.
 */
import {
  EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE, EXT_FEATURE_TABLE, encodeFeatureTable,
  QEMU_FEATURE_TABLE, stringExtension, type HeaderExtension,
} from '../../format/qcow2/header-extensions.js';
import { V3_HEADER_LENGTH } from '../../format/qcow2/header.js';
import type { Qcow2Metadata } from '../../format/qcow2/qcow2-metadata.js';
import type { Qcow2State } from '../../format/qcow2/qcow2-state.js';
import type { Qcow2Writer } from '../../format/qcow2/qcow2-writer.js';
import { rewriteCluster0 } from '../../format/qcow2/rewrite-cluster0.js';

const KNOWN = new Set([EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_CRYPTO_HEADER, EXT_FEATURE_TABLE, EXT_BITMAPS]);

/**
 * The extensions QEMU would write for `meta` as it is now.
 *
 * @example
 * ```ts
 * const exts = qemuHeaderExtensions(state.meta); // v3: includes the feature name table
 * ```
 */
export function qemuHeaderExtensions(meta: Qcow2Metadata): HeaderExtension[] {
  const last = (type: number): HeaderExtension | undefined => {
    let found: HeaderExtension | undefined;
    for (const e of meta.extensions) if (e.type === type) found = e;
    return found;
  };
  const out: HeaderExtension[] = [];
  if (meta.backingFormat !== undefined && meta.backingName !== undefined && meta.backingName !== '') {
    out.push(stringExtension(EXT_BACKING_FORMAT, meta.backingFormat));
  }
  if (meta.dataFileName !== undefined) out.push(stringExtension(EXT_DATA_FILE, meta.dataFileName));
  const crypto = last(EXT_CRYPTO_HEADER);
  if (crypto !== undefined) out.push(crypto);
  if (meta.header.version >= 3) out.push(encodeFeatureTable(QEMU_FEATURE_TABLE));
  const bitmaps = last(EXT_BITMAPS);
  if (bitmaps !== undefined && meta.bitmaps.length > 0) out.push(bitmaps);
  for (const e of meta.extensions) if (!KNOWN.has(e.type)) out.push(e);
  return out;
}

/**
 * Make everything else durable, then rewrite cluster 0 (the commit point) and flush. Call with
 * the metadata lock held.
 */
export async function updateHeaderLocked(s: Qcow2State, w: Qcow2Writer): Promise<void> {
  await w.flushLocked();
  const h = s.meta.header;
  if (h.version >= 3) {
    // QEMU always writes its own fixed header length and drops header fields it does not know.
    h.headerLength = V3_HEADER_LENGTH;
    h.unknownFields = new Uint8Array(0);
  }
  const exts = qemuHeaderExtensions(s.meta);
  await rewriteCluster0(s, exts);
  await s.storage.flush();
  s.meta.extensions = exts;
  if (s.meta.header.version >= 3) s.meta.featureTable = [...QEMU_FEATURE_TABLE];
}
