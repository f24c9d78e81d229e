import type { Storage } from '../../storage/storage.js';
import type { BitmapDirectoryEntry } from './bitmap-directory.js';
import type { CryptoHeaderPointer, FeatureNameEntry, HeaderExtension } from './header-extensions.js';
import type { Qcow2Header } from './header.js';
import type { SnapshotEntry } from './snapshot-table.js';

/** Everything read from a qcow2 image's header area at open, decoded and validated. */
export interface Qcow2Metadata {
  header: Qcow2Header;
  clusterSize: number;
  /** Entries per L2 table (cluster_size / 8, or / 16 with extended L2). */
  l2Entries: number;
  extendedL2: boolean;
  extensions: HeaderExtension[];
  featureTable: FeatureNameEntry[];
  backingName: string | undefined;
  backingFormat: string | undefined;
  /** External data file name from the header, if any. */
  dataFileName: string | undefined;
  /** The external data file is a valid raw image (autoclear bit 1). */
  dataFileRaw: boolean;
  crypto: CryptoHeaderPointer | undefined;
  snapshots: SnapshotEntry[];
  bitmaps: BitmapDirectoryEntry[];
  /** The storage holding guest data: the image itself or its external data file. */
  dataStorage: Storage;
}
