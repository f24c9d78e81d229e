import { invalidImage, Qcow2Error } from '../../errors.js';
import {
  featureHex, hasBit, INCOMPAT_COMPRESSION, INCOMPAT_CORRUPT, INCOMPAT_EXTL2, isEmpty, KNOWN_INCOMPAT, setBits, unknownBits,
} from './features.js';
import type { FeatureNameEntry } from './header-extensions.js';
import { MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, type Qcow2Header } from './header.js';

/** QEMU's limits (block/qcow2.h). */
export const MAX_REFTABLE_BYTES = 8 << 20;
export const MAX_L1_BYTES = 32 << 20;
export const MAX_SNAPSHOTS = 65536;
const SNAPSHOT_HEADER_SIZE = 40;
const MAX_BACKING_NAME = 1023;

/** Checks that need only the fixed header, in the order QEMU's open applies them. */
export function validateHeaderFields(h: Qcow2Header): void {
  if (h.clusterBits < MIN_CLUSTER_BITS || h.clusterBits > MAX_CLUSTER_BITS) {
    throw new Qcow2Error('UNSUPPORTED', `Unsupported cluster size: 2^${h.clusterBits}`, { clusterBits: h.clusterBits });
  }
  const clusterSize = 2 ** h.clusterBits;
  if (h.headerLength > clusterSize) throw invalidImage('qcow2 header exceeds cluster size', { headerLength: h.headerLength });
  if (h.backingFileOffset > clusterSize) throw invalidImage('Invalid backing file offset', { offset: h.backingFileOffset });
  if (h.backingFileOffset !== 0 && (h.backingFileSize > MAX_BACKING_NAME || h.backingFileSize > clusterSize - h.backingFileOffset)) {
    throw invalidImage('Backing file name too long', { length: h.backingFileSize });
  }
  if (h.refcountOrder > 6) {
    throw invalidImage('Reference count entry width too large; may not exceed 64 bits', { refcountOrder: h.refcountOrder });
  }
  if (h.version === 2 && h.refcountOrder !== 4) throw invalidImage('Invalid refcount order for a version 2 image');
}

/** The compression type and its incompatible bit must agree (QEMU's validate_compression_type). */
export function validateCompressionType(h: Qcow2Header): void {
  const bit = hasBit(h.incompatibleFeatures, INCOMPAT_COMPRESSION);
  if (h.compressionType === 0 && bit) {
    throw invalidImage('Compression type incompatible feature bit must not be set');
  }
  if (h.compressionType > 1) {
    throw new Qcow2Error('UNSUPPORTED', `qcow2: unknown compression type: ${h.compressionType}`, { compressionType: h.compressionType });
  }
  if (h.compressionType !== 0 && !bit) {
    throw invalidImage('Compression type incompatible feature bit must be set');
  }
}

/**
 * Refuse unknown incompatible features, naming them from the image's own feature table as QEMU
 * does; refuse read-write opens of corrupt images.
 */
export function validateIncompatibleFeatures(h: Qcow2Header, table: readonly FeatureNameEntry[], readOnly: boolean): void {
  const unknown = unknownBits(h.incompatibleFeatures, KNOWN_INCOMPAT);
  if (!isEmpty(unknown)) {
    const names: string[] = [];
    let rest = { ...unknown };
    for (const bit of setBits(unknown)) {
      const entry = table.find((e) => e.kind === 'incompatible' && e.bit === bit);
      if (entry !== undefined) {
        names.push(entry.name);
        rest = bit < 32 ? { hi: rest.hi, lo: (rest.lo & ~(1 << bit)) >>> 0 } : { hi: (rest.hi & ~(1 << (bit - 32))) >>> 0, lo: rest.lo };
      }
    }
    if (!isEmpty(rest)) names.push(`Unknown incompatible feature: ${featureHex(rest).slice(2)}`);
    throw new Qcow2Error('UNSUPPORTED', `Unsupported qcow2 feature(s): ${names.join(', ')}`, { features: featureHex(unknown) });
  }
  if (hasBit(h.incompatibleFeatures, INCOMPAT_CORRUPT) && !readOnly) {
    throw new Qcow2Error('CORRUPT', 'qcow2: Image is corrupt; cannot be opened read/write', {});
  }
  if (hasBit(h.incompatibleFeatures, INCOMPAT_EXTL2) && h.clusterBits < 14) {
    throw invalidImage('The cluster size is too small for extended L2 entries');
  }
}

/** QEMU's qcow2_validate_table: bounded entry count, aligned offset that does not overflow. */
export function validateTable(name: string, offset: number, entries: number, entryLength: number, maxBytes: number, clusterSize: number): void {
  if (entries > Math.floor(maxBytes / entryLength)) throw invalidImage(`${name} too large`, { table: name, entries });
  if (offset % clusterSize !== 0 || offset + entries * entryLength > Number.MAX_SAFE_INTEGER) {
    throw invalidImage(`${name} offset invalid`, { table: name, offset });
  }
}

/** Table checks done at open: refcount table, snapshot table, active L1. */
export function validateTables(h: Qcow2Header, l2Entries: number): void {
  const clusterSize = 2 ** h.clusterBits;
  if (h.refcountTableClusters === 0) throw invalidImage('Image does not contain a reference count table');
  validateTable('Reference count table', h.refcountTableOffset, h.refcountTableClusters, clusterSize, MAX_REFTABLE_BYTES, clusterSize);
  validateTable('Snapshot table', h.snapshotsOffset, h.nbSnapshots, SNAPSHOT_HEADER_SIZE, SNAPSHOT_HEADER_SIZE * MAX_SNAPSHOTS, clusterSize);
  validateTable('Active L1 table', h.l1TableOffset, h.l1Size, 8, MAX_L1_BYTES, clusterSize);
  const needed = Math.ceil(h.size / (clusterSize * l2Entries));
  if (h.l1Size < needed) throw invalidImage('L1 table is too small', { l1Size: h.l1Size, needed });
}
