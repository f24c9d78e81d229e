import type { ClusterCompressor, ClusterDecompressor } from '../../codecs/codec.js';
import type { Storage } from '../../storage/storage.js';
import { AsyncMutex } from '../../util/async-mutex.js';
import type { Qcow2Metadata } from './qcow2-metadata.js';
import type { Refcounts } from './refcounts.js';
import type { TableCache } from './table-cache.js';

/**
 * The mutable state of an open qcow2 image, shared by the read path (Qcow2Driver) and the
 * write path (Qcow2Writer).
 */
export interface Qcow2State {
  readonly storage: Storage;
  readonly meta: Qcow2Metadata;
  readonly clusterSize: number;
  readonly clusterBits: number;
  /** Active L1 table (or a snapshot's, read-only). */
  l1: DataView;
  l1Entries: number;
  l1Dirty: boolean;
  readonly l2: TableCache;
  readonly decompressor: ClusterDecompressor;
  readonly compressor: ClusterCompressor;
  /** Present when the image is writable. */
  refcounts: Refcounts | undefined;
  /** Serialises metadata changes that span awaits; reads never take it. */
  readonly lock: AsyncMutex;
  /** The fixed header must be rewritten at the next flush. */
  headerDirty: boolean;
  readonly readOnly: boolean;
}
