/**
 * A qcow2 image opened for checking: QEMU's open in check mode (BDRV_O_CHECK). It validates
 * what QEMU validates at open but, like QEMU, accepts images whose refcount table is missing
 * and does not read the snapshot table (the check reads it itself, with repair). Encrypted
 * images and images with an external data file can be checked: nothing is decrypted and the
 * data file is not opened.
 */
import { invalidImage, Qcow2Error } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { viewOf, writeU64Parts } from '../../util/bytes.js';
import { decodeBitmapsExtension, type BitmapsExtension } from '../../format/qcow2/bitmap-directory.js';
import {
  AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, hasBit, INCOMPAT_DATA_FILE, INCOMPAT_EXTL2, isEmpty, KNOWN_AUTOCLEAR, unknownBits,
  type FeatureWord,
} from '../../format/qcow2/features.js';
import {
  decodeCryptoHeader, decodeExtensions, decodeFeatureTable, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE, EXT_FEATURE_TABLE,
  findExtension, type CryptoHeaderPointer,
} from '../../format/qcow2/header-extensions.js';
import { decodeHeader, V2_HEADER_LENGTH, type Qcow2Header } from '../../format/qcow2/header.js';
import { readBitmapDirectory } from '../../format/qcow2/read-bitmaps.js';
import {
  MAX_L1_BYTES, MAX_REFTABLE_BYTES, validateCompressionType, validateHeaderFields, validateIncompatibleFeatures, validateTable,
} from '../../format/qcow2/validate-header.js';
import type { CheckSnapshot } from './snapshot-entry.js';

/** Byte offsets of header fields the check rewrites. */
export const HEADER_REFTABLE_OFFSET = 48;
export const HEADER_NB_SNAPSHOTS = 60;
export const HEADER_INCOMPAT_FEATURES = 72;
export const HEADER_AUTOCLEAR_FEATURES = 88;

/** What the check state of the snapshot table is (read by the check itself, QEMU-style). */
export interface SnapshotState {
  nbSnapshots: number;
  snapshotsOffset: number;
  /** Bytes of the table as read (QEMU's snapshots_size). */
  snapshotsSize: number;
  snapshots: CheckSnapshot[];
}

/**
 * The image state a check works on. Mutable where QEMU's BDRVQcow2State changes during a
 * repair (refcount table after a rebuild, snapshot list, feature bits).
 *
 * @example
 * ```ts
 * const img = await CheckImage.open(storage, { writable: false });
 * console.log(img.clusterSize, img.reftableEntries);
 * ```
 */
export class CheckImage {
  readonly storage: Storage;
  readonly header: Qcow2Header;
  readonly writable: boolean;
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly refcountOrder: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** Bytes per L2 entry: 8, or 16 with extended L2 entries. */
  readonly l2EntrySize: number;
  readonly extendedL2: boolean;
  readonly hasDataFile: boolean;
  readonly l1Offset: number;
  readonly l1Size: number;
  /** The active L1 table as read at open (QEMU's s->l1_table); COPIED repairs update it. */
  readonly l1: Uint8Array;
  readonly crypto: CryptoHeaderPointer | undefined;
  /** The bitmaps extension, when the bitmaps autoclear bit says it is valid. */
  readonly bitmaps: BitmapsExtension | undefined;
  /** Guest clusters of the virtual disk. */
  readonly totalClusters: number;
  /** Raw refcount table entries (QEMU's s->refcount_table); replaced by a rebuild. */
  reftable: Uint8Array;
  reftableOffset: number;
  incompatibleFeatures: FeatureWord;
  autoclearFeatures: FeatureWord;
  snapshots: SnapshotState = { nbSnapshots: 0, snapshotsOffset: 0, snapshotsSize: 0, snapshots: [] };
  /** A corruption message was printed already (QEMU prints the first one only). */
  signaledCorruption = false;
  /**
   * A repair write was refused and the image marked corrupt: like QEMU, which drops the image
   * at that point, nothing more is written (pending refcount updates are discarded).
   */
  stopped = false;
  #fileSize: number;
  #reftableView: DataView | undefined;
  #l1View: DataView | undefined;

  private constructor(storage: Storage, header: Qcow2Header, writable: boolean, fileSize: number, l1: Uint8Array, reftable: Uint8Array,
    crypto: CryptoHeaderPointer | undefined, bitmaps: BitmapsExtension | undefined, hasDataFile: boolean) {
    this.storage = storage;
    this.header = header;
    this.writable = writable;
    this.clusterBits = header.clusterBits;
    this.clusterSize = 2 ** header.clusterBits;
    this.refcountOrder = header.refcountOrder;
    this.extendedL2 = hasBit(header.incompatibleFeatures, INCOMPAT_EXTL2);
    this.l2EntrySize = this.extendedL2 ? 16 : 8;
    this.l2Entries = this.clusterSize / this.l2EntrySize;
    this.hasDataFile = hasDataFile;
    this.l1Offset = header.l1TableOffset;
    this.l1Size = header.l1Size;
    this.l1 = l1;
    this.reftable = reftable;
    this.reftableOffset = header.refcountTableOffset;
    this.crypto = crypto;
    this.bitmaps = bitmaps;
    this.incompatibleFeatures = { ...header.incompatibleFeatures };
    this.autoclearFeatures = { ...header.autoclearFeatures };
    this.totalClusters = Math.ceil(header.size / this.clusterSize);
    this.#fileSize = fileSize;
  }

  /** Entries in the refcount table (QEMU's refcount_table_size). */
  get reftableEntries(): number {
    return this.reftable.byteLength / 8;
  }

  /** Refcounts per refcount block. */
  get refblockEntries(): number {
    return (this.clusterSize * 8) >>> this.refcountOrder;
  }

  /** Size of the image file (kept current across resizes done by the check). */
  get fileSize(): number {
    return this.#fileSize;
  }

  async refreshFileSize(): Promise<number> {
    this.#fileSize = await this.storage.size();
    return this.#fileSize;
  }

  /**
   * Open `storage` for a check. Throws Qcow2Error with QEMU's open error for images QEMU
   * refuses to open even in check mode.
   */
  static async open(storage: Storage, opts: { writable: boolean }): Promise<CheckImage> {
    const fileSize = await storage.size();
    const first = new Uint8Array(4096);
    await storage.read(first, 0);
    let header = decodeHeader(precheckRawHeader(first));
    validateHeaderFields(header);
    const clusterSize = 2 ** header.clusterBits;
    let cluster0 = first.subarray(0, clusterSize);
    if (clusterSize > first.byteLength) {
      cluster0 = new Uint8Array(clusterSize);
      await storage.read(cluster0, 0);
      header = decodeHeader(precheckRawHeader(cluster0));
    }
    validateCompressionType(header);
    const extStart = header.version === 2 ? V2_HEADER_LENGTH : header.headerLength;
    const extEnd = header.backingFileOffset !== 0 ? header.backingFileOffset : clusterSize;
    const extensions = decodeExtensions(cluster0, extStart, extEnd);
    // Check mode may write to corrupt images (that is how they get repaired).
    validateIncompatibleFeatures(header, decodeFeatureTable(findExtension(extensions, EXT_FEATURE_TABLE)), true);

    validateTable('Reference count table', header.refcountTableOffset, header.refcountTableClusters, clusterSize, MAX_REFTABLE_BYTES, clusterSize);
    validateTable('Active L1 table', header.l1TableOffset, header.l1Size, 8, MAX_L1_BYTES, clusterSize);
    const l2Entries = clusterSize / (hasBit(header.incompatibleFeatures, INCOMPAT_EXTL2) ? 16 : 8);
    const needed = Math.ceil(header.size / (clusterSize * l2Entries));
    if (needed > 0x7fffffff) throw new Qcow2Error('INVALID_IMAGE', 'Image is too big', { needed });
    if (header.l1Size < needed) throw invalidImage('L1 table is too small', { l1Size: header.l1Size, needed });

    const l1 = new Uint8Array(header.l1Size * 8);
    if (l1.byteLength > 0) await storage.read(l1, header.l1TableOffset);
    const reftable = new Uint8Array(header.refcountTableClusters * clusterSize);
    if (reftable.byteLength > 0) await storage.read(reftable, header.refcountTableOffset);

    const hasDataFile = hasBit(header.incompatibleFeatures, INCOMPAT_DATA_FILE);
    if (hasDataFile && findExtension(extensions, EXT_DATA_FILE) === undefined) {
      throw new Qcow2Error('INVALID_ARGUMENT', "'data-file' is required for this image", {});
    }
    if (!hasDataFile && hasBit(header.autoclearFeatures, AUTOCLEAR_DATA_FILE_RAW)) {
      throw invalidImage('data-file-raw requires a data file');
    }
    const cryptoExt = findExtension(extensions, EXT_CRYPTO_HEADER);
    if (cryptoExt !== undefined && header.cryptMethod !== 2) {
      throw invalidImage('CRYPTO header extension only expected with LUKS encryption method');
    }
    if (header.cryptMethod === 2 && cryptoExt === undefined) {
      throw invalidImage(`Missing CRYPTO header for crypt method ${header.cryptMethod}`);
    }
    if (header.cryptMethod > 2) {
      throw new Qcow2Error('UNSUPPORTED', `Unsupported encryption method: ${header.cryptMethod}`, { cryptMethod: header.cryptMethod });
    }
    const crypto = decodeCryptoHeader(cryptoExt);
    const bitmapsExt = findExtension(extensions, EXT_BITMAPS);
    let bitmaps: BitmapsExtension | undefined;
    // Without the autoclear bit the extension is stale and QEMU ignores it.
    if (bitmapsExt !== undefined && hasBit(header.autoclearFeatures, AUTOCLEAR_BITMAPS)) {
      bitmaps = decodeBitmapsExtension(bitmapsExt.data, clusterSize);
      await readBitmapDirectory(storage, bitmapsExt.data, clusterSize, header.size);
    }
    return new CheckImage(storage, header, opts.writable, fileSize, l1, reftable, crypto, bitmaps, hasDataFile);
  }

  /** Raw refcount table entry `index` as [hi, lo]. */
  reftableEntry(index: number): [number, number] {
    if (this.#reftableView?.buffer !== this.reftable.buffer) this.#reftableView = viewOf(this.reftable);
    const v = this.#reftableView;
    return [v.getUint32(index * 8), v.getUint32(index * 8 + 4)];
  }

  /** Active L1 entry `index` as [hi, lo]. */
  l1Entry(index: number): [number, number] {
    this.#l1View ??= viewOf(this.l1);
    return [this.#l1View.getUint32(index * 8), this.#l1View.getUint32(index * 8 + 4)];
  }

  /**
   * What opening read-write does first in QEMU: clear autoclear bits it does not know.
   * Returns true when the header was changed.
   */
  async clearUnknownAutoclear(): Promise<boolean> {
    if (!this.writable || this.header.version < 3) return false;
    const unknown = unknownBits(this.autoclearFeatures, KNOWN_AUTOCLEAR);
    if (isEmpty(unknown)) return false;
    this.autoclearFeatures = { hi: (this.autoclearFeatures.hi & KNOWN_AUTOCLEAR.hi) >>> 0, lo: (this.autoclearFeatures.lo & KNOWN_AUTOCLEAR.lo) >>> 0 };
    await this.#writeFeatureWord(HEADER_AUTOCLEAR_FEATURES, this.autoclearFeatures);
    return true;
  }

  /** Rewrite the incompatible feature bits (dirty and corrupt bits). */
  async writeIncompatibleFeatures(word: FeatureWord): Promise<void> {
    this.incompatibleFeatures = { ...word };
    await this.#writeFeatureWord(HEADER_INCOMPAT_FEATURES, word);
  }

  async #writeFeatureWord(offset: number, word: FeatureWord): Promise<void> {
    const bytes = new Uint8Array(8);
    writeU64Parts(viewOf(bytes), 0, word.hi, word.lo);
    await this.storage.flush();
    await this.storage.write(bytes, offset);
    await this.storage.flush();
  }

  /** Read the snapshot table pointer from the header on disk (QEMU re-reads it in check mode). */
  async readSnapshotPointer(): Promise<{ nbSnapshots: number; offsetHi: number; offsetLo: number }> {
    const bytes = new Uint8Array(12);
    await this.storage.read(bytes, HEADER_NB_SNAPSHOTS);
    const v = viewOf(bytes);
    return { nbSnapshots: v.getUint32(0), offsetHi: v.getUint32(4), offsetLo: v.getUint32(8) };
  }
}

/**
 * QEMU's open checks on raw 64-bit header fields that the shared decoder cannot represent,
 * with QEMU's messages. Returns the bytes to decode: the snapshot table pointer is zeroed,
 * because open in check mode ignores it (the check reads and validates it itself).
 */
function precheckRawHeader(raw: Uint8Array): Uint8Array {
  const v = viewOf(raw);
  if (raw.byteLength < 104 || v.getUint32(0) !== 0x514649fb) return raw;
  const version = v.getUint32(4);
  const clusterBits = v.getUint32(20);
  if ((version !== 2 && version !== 3) || clusterBits < 9 || clusterBits > 21) return raw;
  const clusterSize = 2 ** clusterBits;
  const headerLength = version === 2 ? 72 : v.getUint32(100);
  if (version === 3 && (headerLength < 104 || headerLength > clusterSize)) return raw;
  if (v.getUint32(8) !== 0 || v.getUint32(12) > clusterSize) throw invalidImage('Invalid backing file offset');
  // Tables at 2^53 and beyond: QEMU rejects most such offsets (unaligned or past INT64_MAX)
  // and the rest lie past the end of any file; both are refused here with QEMU's message.
  if (v.getUint32(48) > 0x1fffff) throw invalidImage('Reference count table offset invalid');
  if (v.getUint32(40) > 0x1fffff) throw invalidImage('Active L1 table offset invalid');
  const copy = raw.slice();
  copy.fill(0, 64, 72);
  return copy;
}
