import { invalidImage, Qcow2Error } from '../../errors.js';
import { decodeText, encodeText, readU64, viewOf, writeU64, writeU64Parts } from '../../util/bytes.js';
import type { FeatureWord } from './features.js';

export const QCOW2_MAGIC = 0x514649fb;
/** Fixed part of a v2 header. */
export const V2_HEADER_LENGTH = 72;
/** Fixed part of a v3 header without optional fields. */
export const V3_MIN_HEADER_LENGTH = 104;
/** What QEMU writes for v3: 104 + compression type byte + 7 bytes padding. */
export const V3_HEADER_LENGTH = 112;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;

/** The fixed header fields, decoded. Offsets and sizes are exact numbers (< 2^53, checked). */
export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: FeatureWord;
  compatibleFeatures: FeatureWord;
  autoclearFeatures: FeatureWord;
  refcountOrder: number;
  headerLength: number;
  /** 0 = zlib, 1 = zstd (header byte 104 when headerLength > 104). */
  compressionType: number;
  /** Header bytes past the fields we know (from 112, or 105, up to headerLength), kept verbatim. */
  unknownFields: Uint8Array;
}

function u64Field(view: DataView, offset: number, name: string): number {
  const hi = view.getUint32(offset);
  if (hi > 0x1fffff) throw invalidImage(`Image header field ${name} is too large`, { field: name });
  return readU64(view, offset);
}

function featureWord(view: DataView, offset: number): FeatureWord {
  return { hi: view.getUint32(offset), lo: view.getUint32(offset + 4) };
}

/**
 * Decode the fixed header from the first bytes of the image (at least 104 bytes, or 72 for
 * v2). Checks only what is needed to decode safely; `validateHeader` applies QEMU's open rules.
 *
 * @example
 * ```ts
 * const h = decodeHeader(firstCluster);
 * console.log(h.version, 1 << h.clusterBits);
 * ```
 */
export function decodeHeader(bytes: Uint8Array): Qcow2Header {
  if (bytes.byteLength < V2_HEADER_LENGTH) throw invalidImage('Image is not in qcow2 format');
  const v = viewOf(bytes);
  if (v.getUint32(0) !== QCOW2_MAGIC) throw invalidImage('Image is not in qcow2 format');
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) {
    throw new Qcow2Error('UNSUPPORTED', `Unsupported qcow2 version ${version}`, { version });
  }
  const clusterBits = v.getUint32(20);
  const common = {
    backingFileOffset: u64Field(v, 8, 'backing_file_offset'),
    backingFileSize: v.getUint32(16),
    clusterBits,
    size: u64Field(v, 24, 'size'),
    cryptMethod: v.getUint32(32),
    l1Size: v.getUint32(36),
    l1TableOffset: u64Field(v, 40, 'l1_table_offset'),
    refcountTableOffset: u64Field(v, 48, 'refcount_table_offset'),
    refcountTableClusters: v.getUint32(56),
    nbSnapshots: v.getUint32(60),
    snapshotsOffset: u64Field(v, 64, 'snapshots_offset'),
  };
  if (version === 2) {
    return {
      version,
      ...common,
      incompatibleFeatures: { hi: 0, lo: 0 },
      compatibleFeatures: { hi: 0, lo: 0 },
      autoclearFeatures: { hi: 0, lo: 0 },
      refcountOrder: 4,
      headerLength: V2_HEADER_LENGTH,
      compressionType: 0,
      unknownFields: new Uint8Array(0),
    };
  }
  if (bytes.byteLength < V3_MIN_HEADER_LENGTH) throw invalidImage('qcow2 header too short');
  const headerLength = v.getUint32(100);
  if (headerLength < V3_MIN_HEADER_LENGTH) throw invalidImage('qcow2 header too short', { headerLength });
  if (headerLength > bytes.byteLength) {
    throw invalidImage('qcow2 header exceeds cluster size', { headerLength });
  }
  const compressionType = headerLength > 104 ? (bytes[104] ?? 0) : 0;
  const knownEnd = Math.min(headerLength, V3_HEADER_LENGTH);
  return {
    version,
    ...common,
    incompatibleFeatures: featureWord(v, 72),
    compatibleFeatures: featureWord(v, 80),
    autoclearFeatures: featureWord(v, 88),
    refcountOrder: v.getUint32(96),
    headerLength,
    compressionType,
    unknownFields: bytes.slice(knownEnd, headerLength),
  };
}

/**
 * Encode the fixed header (and kept unknown fields) into `dst` at offset 0. Returns the number
 * of bytes written (= headerLength).
 */
export function encodeHeader(h: Qcow2Header, dst: Uint8Array): number {
  const v = viewOf(dst);
  v.setUint32(0, QCOW2_MAGIC);
  v.setUint32(4, h.version);
  writeU64(v, 8, h.backingFileOffset);
  v.setUint32(16, h.backingFileSize);
  v.setUint32(20, h.clusterBits);
  writeU64(v, 24, h.size);
  v.setUint32(32, h.cryptMethod);
  v.setUint32(36, h.l1Size);
  writeU64(v, 40, h.l1TableOffset);
  writeU64(v, 48, h.refcountTableOffset);
  v.setUint32(56, h.refcountTableClusters);
  v.setUint32(60, h.nbSnapshots);
  writeU64(v, 64, h.snapshotsOffset);
  if (h.version === 2) return V2_HEADER_LENGTH;
  writeU64Parts(v, 72, h.incompatibleFeatures.hi, h.incompatibleFeatures.lo);
  writeU64Parts(v, 80, h.compatibleFeatures.hi, h.compatibleFeatures.lo);
  writeU64Parts(v, 88, h.autoclearFeatures.hi, h.autoclearFeatures.lo);
  v.setUint32(96, h.refcountOrder);
  v.setUint32(100, h.headerLength);
  if (h.headerLength > 104) {
    dst.fill(0, 104, Math.min(h.headerLength, V3_HEADER_LENGTH));
    dst[104] = h.compressionType;
  }
  dst.set(h.unknownFields, Math.min(h.headerLength, V3_HEADER_LENGTH));
  return h.headerLength;
}

/** Read the backing file name stored in cluster 0. */
export function decodeBackingName(cluster0: Uint8Array, h: Qcow2Header): string | undefined {
  if (h.backingFileOffset === 0) return undefined;
  return decodeText(cluster0.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize));
}

export function encodeBackingName(name: string): Uint8Array {
  return encodeText(name);
}
