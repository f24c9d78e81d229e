/**
 * Untrusted images (uploads, downloads, disks a guest wrote): open them so that nothing outside
 * the image is touched and memory stays bounded, and report what a platform needs to accept
 * or reject them, the way cloud image services inspect uploads.
 *
 * Under the untrusted policy:
 * - no file named by the image is opened: a backing file is refused, an external data file is
 *   replaced by a stand-in whose every read or write fails (so `info` and `map` still work and
 *   any attempt to read guest data fails with DEPENDENCY_DENIED);
 * - no format is probed: the caller states the format;
 * - metadata memory is capped: the L1 table, refcount table, snapshot table and bitmap directory
 *   the header announces are measured against {@link UntrustedLimits} before the image is
 *   opened, and the L2 cache gets a small budget.
 *
 * Browser-safe: works on any Storage (a File, a Blob, an HTTP range store).
 */
import type { CodecSet } from '../codecs/codec.js';
import { invalidImage, Qcow2Error } from '../errors.js';
import { decodeBitmapsExtension } from '../format/qcow2/bitmap-directory.js';
import {
  AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, hasBit, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_EXTL2,
  isEmpty, KNOWN_AUTOCLEAR, KNOWN_COMPAT, KNOWN_INCOMPAT, setBits, unknownBits, type FeatureKind, type FeatureWord,
} from '../format/qcow2/features.js';
import {
  decodeExtensions, decodeFeatureTable, decodeStringExtension, EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_DATA_FILE,
  EXT_FEATURE_TABLE, findExtension, type FeatureNameEntry, type HeaderExtension,
} from '../format/qcow2/header-extensions.js';
import { decodeBackingName, decodeHeader, V2_HEADER_LENGTH, type Qcow2Header } from '../format/qcow2/header.js';
import { findSnapshot } from '../format/qcow2/qcow2-driver.js';
import { decodeSnapshotTable, snapshotTableExtent } from '../format/qcow2/snapshot-table.js';
import { validateHeaderFields, validateTables } from '../format/qcow2/validate-header.js';
import type { Image } from '../image/image.js';
import { openImage } from '../image/open-image.js';
import type { OpenPolicy } from '../image/open-policy.js';
import type { Storage } from '../storage/storage.js';
import { storageView } from '../storage/storage-view.js';
import { getU32BE } from '../util/bytes.js';

/** Caps on what an untrusted image may make us hold in memory. */
export interface UntrustedLimits {
  /** Active (or opened snapshot's) L1 table, bytes. QEMU allows 32 MiB. */
  maxL1Bytes: number;
  /** Refcount table (read on writable opens), bytes. QEMU allows 8 MiB. */
  maxRefcountTableBytes: number;
  /** Snapshot table, bytes. QEMU allows 64 MiB. */
  maxSnapshotTableBytes: number;
  /** Bitmap directory, bytes. QEMU allows 64 MiB. */
  maxBitmapDirectoryBytes: number;
  /** Sum of the above that one open may hold. */
  maxMetadataBytes: number;
  /** L2 table cache budget, bytes. */
  l2CacheBytes: number;
}

/**
 * Defaults: generous for real images (an 8 MiB L1 maps 512 TiB with 64 KiB clusters), far
 * below what QEMU accepts from a trusted file.
 */
export const DEFAULT_UNTRUSTED_LIMITS: Readonly<UntrustedLimits> = Object.freeze({
  maxL1Bytes: 8 << 20,
  maxRefcountTableBytes: 8 << 20,
  maxSnapshotTableBytes: 4 << 20,
  maxBitmapDirectoryBytes: 1 << 20,
  maxMetadataBytes: 16 << 20,
  l2CacheBytes: 4 << 20,
});

/** Formats an untrusted image may be declared as. */
export type UntrustedFormat = 'qcow2' | 'raw';

/** Options of {@link openUntrusted}. */
export interface UntrustedOpenOptions {
  /** The format, as declared by whoever supplied the image. Never probed. */
  format: string;
  /** Default true. */
  readOnly?: boolean;
  /** Read this internal snapshot (id or name). */
  snapshot?: string;
  /**
   * Whether a backing file would be needed (default true: an image with a backing file is then
   * refused). `info` passes false: it reads only the top image.
   */
  openBacking?: boolean;
  limits?: Partial<UntrustedLimits>;
  codecs?: CodecSet;
}

/** Storage standing in for an external data file that must not be opened. */
class DeniedStorage implements Storage {
  readonly name: string;
  readonly readOnly = true;

  constructor(name: string) {
    this.name = name;
  }

  #deny(): never {
    throw new Qcow2Error('DEPENDENCY_DENIED', `Refusing to access data file '${this.name}': the image is untrusted`, { role: 'data-file', name: this.name });
  }

  async read(): Promise<void> {
    this.#deny();
  }

  async write(): Promise<void> {
    this.#deny();
  }

  async size(): Promise<number> {
    this.#deny();
  }

  async resize(): Promise<void> {
    this.#deny();
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {}
}

/**
 * The open policy for untrusted images: backing files refused, data files replaced by a
 * stand-in that refuses every access, nothing probed.
 *
 * @example
 * ```ts
 * const image = await openImage(storage, { format: 'qcow2', policy: untrustedPolicy(), openBacking: false });
 * ```
 */
export function untrustedPolicy(): OpenPolicy {
  return {
    mode: 'custom',
    probeFormat: false,
    async open(request) {
      if (request.role === 'data-file') return { storage: new DeniedStorage(request.name) };
      return undefined;
    },
  };
}

function limitsOf(partial: Partial<UntrustedLimits> | undefined): UntrustedLimits {
  return { ...DEFAULT_UNTRUSTED_LIMITS, ...partial };
}

function overLimit(what: string, bytes: number, limit: number): Qcow2Error {
  return new Qcow2Error('UNSUPPORTED', `${what} needs ${bytes} bytes, more than the untrusted-image limit of ${limit} bytes`, { limit: what, bytes, max: limit });
}

/** What the first cluster of a qcow2 image says, decoded without opening anything else. */
export interface Qcow2HeaderFacts {
  header: Qcow2Header;
  clusterSize: number;
  extensions: HeaderExtension[];
  featureTable: FeatureNameEntry[];
  backingName: string | undefined;
  backingFormat: string | undefined;
  dataFileName: string | undefined;
}

/** Decode and validate the header and extensions (QEMU's first open checks). Throws Qcow2Error. */
export async function readQcow2HeaderFacts(storage: Storage): Promise<Qcow2HeaderFacts> {
  const first = new Uint8Array(4096);
  await storage.read(first, 0);
  let header = decodeHeader(first);
  validateHeaderFields(header);
  const clusterSize = 2 ** header.clusterBits;
  let cluster0 = first.subarray(0, Math.min(clusterSize, first.byteLength));
  if (clusterSize > first.byteLength) {
    cluster0 = new Uint8Array(clusterSize);
    await storage.read(cluster0, 0);
    header = decodeHeader(cluster0);
  }
  const extStart = header.version === 2 ? V2_HEADER_LENGTH : header.headerLength;
  const extEnd = header.backingFileOffset !== 0 ? header.backingFileOffset : clusterSize;
  const extensions = decodeExtensions(cluster0, extStart, extEnd);
  const name = decodeBackingName(cluster0, header);
  return {
    header,
    clusterSize,
    extensions,
    featureTable: decodeFeatureTable(findExtension(extensions, EXT_FEATURE_TABLE)),
    backingName: name === '' ? undefined : name,
    backingFormat: decodeStringExtension(findExtension(extensions, EXT_BACKING_FORMAT)),
    dataFileName: decodeStringExtension(findExtension(extensions, EXT_DATA_FILE)),
  };
}

/** Bytes of metadata a full open would hold, per structure (after checking the limits). */
export interface MetadataBudget {
  l1: number;
  refcountTable: number;
  snapshotTable: number;
  bitmapDirectory: number;
  total: number;
}

/**
 * Measure the metadata a qcow2 open would load against `limits`, reading at most the capped
 * number of bytes of the snapshot table to find its length. Throws Qcow2Error('UNSUPPORTED')
 * with `context.limit` naming the structure when a limit is exceeded.
 */
export async function measureQcow2Metadata(
  storage: Storage, facts: Qcow2HeaderFacts, limits: UntrustedLimits, opts: { writable: boolean; snapshot?: string },
): Promise<MetadataBudget> {
  const h = facts.header;
  // QEMU's table checks first (aligned offsets that do not overflow, counts within its limits):
  // nothing below reads at an offset the header made up.
  validateTables(h, facts.clusterSize / (hasBit(h.incompatibleFeatures, INCOMPAT_EXTL2) ? 16 : 8));
  let l1 = h.l1Size * 8;
  if (l1 > limits.maxL1Bytes) throw overLimit('L1 table', l1, limits.maxL1Bytes);
  const refcountTable = opts.writable ? h.refcountTableClusters * facts.clusterSize : 0;
  if (refcountTable > limits.maxRefcountTableBytes) throw overLimit('Refcount table', refcountTable, limits.maxRefcountTableBytes);

  let snapshotTable = 0;
  if (h.nbSnapshots > 0) {
    // Grow the buffer only as far as the entry headers say, never past the limit.
    let buf = new Uint8Array(0);
    for (;;) {
      const ext = snapshotTableExtent(buf, h.nbSnapshots);
      if (ext.complete) {
        snapshotTable = ext.length;
        break;
      }
      if (ext.needed > limits.maxSnapshotTableBytes) throw overLimit('Snapshot table', ext.needed, limits.maxSnapshotTableBytes);
      const next = new Uint8Array(Math.min(limits.maxSnapshotTableBytes, Math.max(ext.needed, buf.byteLength * 2, 4096)));
      if (h.snapshotsOffset + next.byteLength > Number.MAX_SAFE_INTEGER) throw invalidImage('Snapshot table offset invalid', { offset: h.snapshotsOffset });
      next.set(buf);
      await storage.read(next.subarray(buf.byteLength), h.snapshotsOffset + buf.byteLength);
      buf = next;
    }
    if (opts.snapshot !== undefined) {
      const snap = findSnapshot(decodeSnapshotTable(buf.subarray(0, snapshotTable), h.nbSnapshots), opts.snapshot);
      if (snap !== undefined) {
        l1 = snap.l1Size * 8;
        if (l1 > limits.maxL1Bytes) throw overLimit('Snapshot L1 table', l1, limits.maxL1Bytes);
      }
    }
  }

  let bitmapDirectory = 0;
  const bitmaps = findExtension(facts.extensions, EXT_BITMAPS);
  if (bitmaps !== undefined && hasBit(h.autoclearFeatures, AUTOCLEAR_BITMAPS)) {
    bitmapDirectory = decodeBitmapsExtension(bitmaps.data, facts.clusterSize).directorySize;
    if (bitmapDirectory > limits.maxBitmapDirectoryBytes) throw overLimit('Bitmap directory', bitmapDirectory, limits.maxBitmapDirectoryBytes);
  }
  const total = l1 + refcountTable + snapshotTable + bitmapDirectory;
  if (total > limits.maxMetadataBytes) throw overLimit('Image metadata', total, limits.maxMetadataBytes);
  return { l1, refcountTable, snapshotTable, bitmapDirectory, total };
}

function checkFormat(format: string): UntrustedFormat {
  if (format !== 'qcow2' && format !== 'raw') {
    throw new Qcow2Error('INVALID_ARGUMENT', `Unknown driver '${format}'`, { format });
  }
  return format;
}

/**
 * Open an untrusted image: nothing it names is opened, its format is the declared one, and its
 * metadata must fit the limits.
 *
 * @example
 * ```ts
 * const image = await openUntrusted(storage, { format: 'qcow2' });
 * const sector = new Uint8Array(512);
 * await image.read(sector, 0);
 * await image.close();
 * ```
 */
export async function openUntrusted(storage: Storage, opts: UntrustedOpenOptions): Promise<Image> {
  const format = checkFormat(opts.format);
  const limits = limitsOf(opts.limits);
  const readOnly = opts.readOnly ?? true;
  if (format === 'qcow2') {
    const facts = await readQcow2HeaderFacts(storage);
    await measureQcow2Metadata(storage, facts, limits, { writable: !readOnly, ...(opts.snapshot !== undefined ? { snapshot: opts.snapshot } : {}) });
  }
  return openImage(storage, {
    format,
    readOnly,
    policy: untrustedPolicy(),
    maxChainDepth: 1,
    l2CacheBytes: limits.l2CacheBytes,
    ...(opts.openBacking === false ? { openBacking: false } : {}),
    ...(opts.snapshot !== undefined ? { snapshot: opts.snapshot } : {}),
    ...(opts.codecs !== undefined ? { codecs: opts.codecs } : {}),
  });
}

/** Why a platform may want to refuse an image (see {@link UntrustedReport}). */
export type UntrustedReason =
  | 'backing-file'
  | 'data-file'
  | 'unknown-incompatible-features'
  | 'encrypted'
  | 'corrupt'
  | 'dirty'
  | 'format-mismatch'
  | 'invalid-image'
  | 'metadata-limit';

/**
 * What an upload checker needs to decide about an image, in qemu-img's JSON naming style.
 * `reasons` lists every property a cautious platform rejects; `safe` is true when there is none.
 */
export interface UntrustedReport {
  /** The declared format the image was inspected as. */
  format: UntrustedFormat;
  /** The format the first bytes look like ('raw' when none), never acted upon. */
  'format-signature': string;
  'virtual-size'?: number;
  'cluster-size'?: number;
  /** qcow2 version (2 or 3). */
  'qcow2-version'?: number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  /** External data file name stored in the header. */
  'data-file'?: string;
  /** The "external data file" incompatible bit is set. */
  'external-data-file'?: boolean;
  'data-file-raw'?: boolean;
  encrypted: boolean;
  /** 'aes', 'luks' or 'method N'. */
  'encryption-format'?: string;
  /** Unknown incompatible features: names from the image's feature table, else 'bit N'. */
  'unknown-incompatible-features'?: string[];
  'unknown-compatible-features'?: string[];
  'unknown-autoclear-features'?: string[];
  dirty: boolean;
  corrupt: boolean;
  /** Snapshot count from the header. */
  snapshots?: number;
  /** Persistent bitmap count from the bitmaps extension (when valid). */
  bitmaps?: number;
  /** Metadata bytes a full open holds (L1, snapshot table, bitmap directory). */
  'metadata-bytes'?: number;
  /** Why opening under the untrusted policy failed, if it did. */
  'open-error'?: string;
  'open-error-code'?: string;
  safe: boolean;
  reasons: UntrustedReason[];
}

const SIGNATURES: readonly { format: string; at: number; bytes: string }[] = [
  { format: 'qed', at: 0, bytes: 'QED\0' },
  { format: 'vmdk', at: 0, bytes: 'KDMV' },
  { format: 'vmdk', at: 0, bytes: '# Disk DescriptorFile' },
  { format: 'vhdx', at: 0, bytes: 'vhdxfile' },
  { format: 'vpc', at: 0, bytes: 'conectix' },
  { format: 'vdi', at: 0, bytes: '<<< ' },
  { format: 'luks', at: 0, bytes: 'LUKS\xba\xbe' },
  { format: 'parallels', at: 0, bytes: 'WithoutFreeSpace' },
  { format: 'parallels', at: 0, bytes: 'WithouFreSpacExt' },
  { format: 'cloop', at: 0, bytes: '#!/bin/sh\n#V2.0 Format' },
  { format: 'bochs', at: 0, bytes: 'Bochs Virtual HD Image' },
  { format: 'dmg', at: 0, bytes: 'koly' },
];

/**
 * The image format whose magic the first bytes carry ('raw' when none matches). Detection
 * only, for reporting: nothing is opened or interpreted because of it.
 *
 * @example
 * ```ts
 * formatSignature(new TextEncoder().encode('QFI\xfb\0\0\0\x03')); // 'qcow2'
 * ```
 */
export function formatSignature(head: Uint8Array): string {
  if (head.byteLength >= 8 && head[0] === 0x51 && head[1] === 0x46 && head[2] === 0x49 && head[3] === 0xfb) {
    return getU32BE(head, 4) === 1 ? 'qcow' : 'qcow2';
  }
  for (const s of SIGNATURES) {
    if (head.byteLength < s.at + s.bytes.length) continue;
    let match = true;
    for (let i = 0; i < s.bytes.length && match; i++) match = head[s.at + i] === s.bytes.charCodeAt(i);
    if (match) return s.format;
  }
  // VDI: the text header varies; the binary signature 0xbeda107f sits at 0x40 (little-endian).
  if (head.byteLength >= 0x44 && head[0x40] === 0x7f && head[0x41] === 0x10 && head[0x42] === 0xda && head[0x43] === 0xbe) return 'vdi';
  return 'raw';
}

function featureNames(word: FeatureWord, kind: FeatureKind, table: readonly FeatureNameEntry[]): string[] {
  return setBits(word).map((bit) => table.find((e) => e.kind === kind && e.bit === bit)?.name ?? `bit ${bit}`);
}

function reasonForError(e: Qcow2Error): UntrustedReason | undefined {
  if (e.context['limit'] !== undefined) return 'metadata-limit';
  if (e.code === 'INVALID_IMAGE' || e.code === 'CORRUPT') return 'invalid-image';
  return undefined;
}

/**
 * Inspect an untrusted image: decode what it declares, then try a bounded open under the
 * untrusted policy (nothing named by the image is opened). Never throws for problems of the
 * image itself: they end up in `open-error` and `reasons`. Throws Qcow2Error for an unknown
 * declared format or when the storage cannot be read.
 *
 * @example
 * ```ts
 * const report = await inspectUntrusted(storage, { format: 'qcow2' });
 * if (!report.safe) reject(report.reasons); // e.g. ['backing-file']
 * ```
 */
export async function inspectUntrusted(storage: Storage, opts: { format: string; limits?: Partial<UntrustedLimits>; codecs?: CodecSet }): Promise<UntrustedReport> {
  const format = checkFormat(opts.format);
  const limits = limitsOf(opts.limits);
  const head = new Uint8Array(512);
  await storage.read(head, 0);
  const signature = formatSignature(head);
  const report: UntrustedReport = { format, 'format-signature': signature, encrypted: false, dirty: false, corrupt: false, safe: false, reasons: [] };
  const reasons = new Set<UntrustedReason>();
  const fail = (e: unknown): void => {
    if (!(e instanceof Qcow2Error)) throw e;
    report['open-error'] = e.message;
    report['open-error-code'] = e.code;
    const r = reasonForError(e);
    if (r !== undefined) reasons.add(r);
  };

  if (format === 'raw') {
    report['virtual-size'] = await storage.size();
    if (signature !== 'raw') reasons.add('format-mismatch');
  } else {
    await inspectQcow2(storage, report, reasons, limits, fail);
  }
  if (report['open-error'] === undefined) {
    let image: Image | undefined;
    try {
      image = await openUntrusted(borrowStorage(storage), { format, openBacking: false, limits, ...(opts.codecs !== undefined ? { codecs: opts.codecs } : {}) });
    } catch (e) {
      fail(e);
    } finally {
      await image?.close();
    }
  }
  report.reasons = [...reasons];
  report.safe = report.reasons.length === 0;
  return report;
}

async function inspectQcow2(
  storage: Storage, report: UntrustedReport, reasons: Set<UntrustedReason>, limits: UntrustedLimits, fail: (e: unknown) => void,
): Promise<void> {
  if (report['format-signature'] !== 'qcow2') {
    reasons.add(report['format-signature'] === 'raw' ? 'invalid-image' : 'format-mismatch');
    fail(invalidImage('Image is not in qcow2 format'));
    return;
  }
  let facts: Qcow2HeaderFacts;
  try {
    facts = await readQcow2HeaderFacts(storage);
  } catch (e) {
    fail(e);
    return;
  }
  const h = facts.header;
  report['virtual-size'] = h.size;
  report['cluster-size'] = facts.clusterSize;
  report['qcow2-version'] = h.version;
  if (facts.backingName !== undefined) {
    report['backing-filename'] = facts.backingName;
    reasons.add('backing-file');
    if (facts.backingFormat !== undefined) report['backing-filename-format'] = facts.backingFormat;
  }
  const externalData = hasBit(h.incompatibleFeatures, INCOMPAT_DATA_FILE);
  // A name without the bit is ignored by QEMU today, but a later amend could make it live.
  if (facts.dataFileName !== undefined) {
    report['data-file'] = facts.dataFileName;
    reasons.add('data-file');
  }
  if (externalData) {
    report['external-data-file'] = true;
    reasons.add('data-file');
  }
  if (hasBit(h.autoclearFeatures, AUTOCLEAR_DATA_FILE_RAW)) report['data-file-raw'] = true;
  if (h.cryptMethod !== 0) {
    report.encrypted = true;
    report['encryption-format'] = h.cryptMethod === 1 ? 'aes' : h.cryptMethod === 2 ? 'luks' : `method ${h.cryptMethod}`;
    reasons.add('encrypted');
  }
  const unknownIncompat = unknownBits(h.incompatibleFeatures, KNOWN_INCOMPAT);
  if (!isEmpty(unknownIncompat)) {
    report['unknown-incompatible-features'] = featureNames(unknownIncompat, 'incompatible', facts.featureTable);
    reasons.add('unknown-incompatible-features');
  }
  const unknownCompat = unknownBits(h.compatibleFeatures, KNOWN_COMPAT);
  if (!isEmpty(unknownCompat)) report['unknown-compatible-features'] = featureNames(unknownCompat, 'compatible', facts.featureTable);
  const unknownAutoclear = unknownBits(h.autoclearFeatures, KNOWN_AUTOCLEAR);
  if (!isEmpty(unknownAutoclear)) report['unknown-autoclear-features'] = featureNames(unknownAutoclear, 'autoclear', facts.featureTable);
  report.dirty = hasBit(h.incompatibleFeatures, INCOMPAT_DIRTY);
  report.corrupt = hasBit(h.incompatibleFeatures, INCOMPAT_CORRUPT);
  if (report.dirty) reasons.add('dirty');
  if (report.corrupt) reasons.add('corrupt');
  report.snapshots = h.nbSnapshots;
  const bitmaps = findExtension(facts.extensions, EXT_BITMAPS);
  if (bitmaps !== undefined && hasBit(h.autoclearFeatures, AUTOCLEAR_BITMAPS) && bitmaps.data.byteLength >= 4) {
    report.bitmaps = new DataView(bitmaps.data.buffer, bitmaps.data.byteOffset, 4).getUint32(0);
  }
  try {
    report['metadata-bytes'] = (await measureQcow2Metadata(storage, facts, limits, { writable: false })).total;
  } catch (e) {
    fail(e);
  }
}

/**
 * The same storage, except that closing it is left to its owner: lets a caller open an Image
 * (whose close() closes its storage) over a storage it keeps using.
 */
export function borrowStorage(storage: Storage): Storage {
  return storageView(storage, { close: async () => {} });
}
