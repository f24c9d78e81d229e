import { invalidImage, Qcow2Error } from '../../errors.js';
import { decodeText, encodeText, readU64, viewOf, writeU64 } from '../../util/bytes.js';

/** Payload size of the bitmaps header extension. */
export const BITMAPS_EXTENSION_SIZE = 24;
/** QEMU's QCOW2_MAX_BITMAPS. */
export const MAX_BITMAPS = 65535;
/** QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1 KiB per bitmap). */
export const MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS;
/** Fixed part of a directory entry, before extra data and name. */
export const BITMAP_ENTRY_HEADER_SIZE = 24;
/** QEMU's BME_MAX_TABLE_SIZE (entries). */
export const MAX_BITMAP_TABLE_SIZE = 0x8000000;
/** QEMU's BME_MAX_PHYS_SIZE: bitmap data may not exceed 512 MiB. */
export const MAX_BITMAP_PHYS_SIZE = 0x20000000;
export const MIN_BITMAP_GRANULARITY_BITS = 9;
export const MAX_BITMAP_GRANULARITY_BITS = 31;
/** QEMU's BME_MAX_NAME_SIZE. */
export const MAX_BITMAP_NAME_SIZE = 1023;
/** The only bitmap type: dirty tracking. */
export const BITMAP_TYPE_DIRTY_TRACKING = 1;

const FLAG_IN_USE = 1;
const FLAG_AUTO = 2;
/** QEMU treats every other bit, including the spec's extra_data_compatible, as reserved. */
const RESERVED_FLAGS = 0xfffffffc;

/** The bitmaps header extension: where the bitmap directory lives. */
export interface BitmapsExtension {
  nbBitmaps: number;
  /** Directory size in bytes. */
  directorySize: number;
  /** Directory offset in the image file (cluster aligned). */
  directoryOffset: number;
}

/** Bitmap flags QEMU knows. */
export interface BitmapFlags {
  /** The bitmap was not saved cleanly and must be considered inconsistent. */
  inUse: boolean;
  /** The bitmap tracks writes automatically when the image is opened read-write. */
  auto: boolean;
}

/** One persistent dirty bitmap as stored in the bitmap directory. */
export interface BitmapDirectoryEntry {
  name: string;
  /** Bytes covered by one bit: 2^granularityBits. */
  granularityBits: number;
  flags: BitmapFlags;
  /** Always 1 (dirty tracking) in images QEMU accepts. */
  type: number;
  /** Offset of the bitmap table (cluster aligned). */
  tableOffset: number;
  /** Entries in the bitmap table. */
  tableSize: number;
  /** Extra data as stored; QEMU 7.2 refuses bitmaps that have any. */
  extraData: Uint8Array;
}

/** Image facts the directory is checked against (QEMU's check_dir_entry). */
export interface BitmapDirectoryOptions {
  /** Bitmap count from the header extension. */
  nbBitmaps: number;
  clusterSize: number;
  /** Virtual disk size in bytes. */
  diskSize: number;
}

/** Exact decimal text of a u64 for an error message (not on any hot path). */
function u64Text(v: DataView, offset: number): string {
  return ((BigInt(v.getUint32(offset)) << 32n) | BigInt(v.getUint32(offset + 4))).toString();
}

/**
 * Decode and validate the 24-byte bitmaps header extension payload with QEMU's rules. Callers
 * first check the autoclear "bitmaps" bit: when it is clear, QEMU ignores the extension
 * (the bitmaps are inconsistent) instead of reading it.
 *
 * @example
 * ```ts
 * const ext = decodeBitmapsExtension(extension.data, clusterSize);
 * const dir = await read(ext.directoryOffset, ext.directorySize);
 * ```
 */
export function decodeBitmapsExtension(payload: Uint8Array, clusterSize: number): BitmapsExtension {
  if (payload.byteLength !== BITMAPS_EXTENSION_SIZE) {
    throw invalidImage('bitmaps_ext: Invalid extension length', { length: payload.byteLength });
  }
  const v = viewOf(payload);
  if (v.getUint32(4) !== 0) throw invalidImage('bitmaps_ext: Reserved field is not zero');
  const nbBitmaps = v.getUint32(0);
  if (nbBitmaps > MAX_BITMAPS) {
    throw invalidImage(`bitmaps_ext: Image has ${nbBitmaps} bitmaps, exceeding the QEMU supported maximum of ${MAX_BITMAPS}`, { nbBitmaps });
  }
  if (nbBitmaps === 0) throw invalidImage('found bitmaps extension with zero bitmaps');
  const offsetHi = v.getUint32(16);
  const directoryOffset = readU64(v, 16);
  if (offsetHi > 0x1fffff || directoryOffset % clusterSize !== 0) {
    throw invalidImage('bitmaps_ext: invalid bitmap directory offset', { offset: u64Text(v, 16) });
  }
  const directorySize = readU64(v, 8);
  if (v.getUint32(8) !== 0 || directorySize > MAX_BITMAP_DIRECTORY_SIZE) {
    throw invalidImage(
      `bitmaps_ext: bitmap directory size (${u64Text(v, 8)}) exceeds the maximum supported size (${MAX_BITMAP_DIRECTORY_SIZE})`,
      { size: u64Text(v, 8) },
    );
  }
  return { nbBitmaps, directorySize, directoryOffset };
}

/**
 * Encode the bitmaps header extension payload (24 bytes).
 *
 * @example
 * ```ts
 * const payload = encodeBitmapsExtension({ nbBitmaps: 1, directorySize: 32, directoryOffset: 0x50000 });
 * ```
 */
export function encodeBitmapsExtension(ext: BitmapsExtension): Uint8Array {
  const out = new Uint8Array(BITMAPS_EXTENSION_SIZE);
  const v = viewOf(out);
  v.setUint32(0, ext.nbBitmaps);
  writeU64(v, 8, ext.directorySize);
  writeU64(v, 16, ext.directoryOffset);
  return out;
}

function entryLength(extraSize: number, nameSize: number): number {
  return (BITMAP_ENTRY_HEADER_SIZE + extraSize + nameSize + 7) & ~7;
}

/** QEMU's check_dir_entry: true when the entry is acceptable. */
function entrySatisfiesConstraints(e: BitmapDirectoryEntry, nameSize: number, flagsRaw: number, opts: BitmapDirectoryOptions): boolean {
  const badFields =
    e.tableSize === 0 ||
    e.tableOffset === 0 ||
    e.tableOffset % opts.clusterSize !== 0 ||
    e.tableSize > MAX_BITMAP_TABLE_SIZE ||
    e.granularityBits > MAX_BITMAP_GRANULARITY_BITS ||
    e.granularityBits < MIN_BITMAP_GRANULARITY_BITS ||
    (flagsRaw & RESERVED_FLAGS) !== 0 ||
    nameSize > MAX_BITMAP_NAME_SIZE ||
    e.type !== BITMAP_TYPE_DIRTY_TRACKING;
  if (badFields) return false;
  const physBytes = e.tableSize * opts.clusterSize;
  if (physBytes > MAX_BITMAP_PHYS_SIZE) return false;
  // A consistent bitmap must cover the disk; an in-use one may be stale after a resize.
  if (!e.flags.inUse && opts.diskSize > physBytes * 8 * 2 ** e.granularityBits) return false;
  return true;
}

/**
 * Decode the bitmap directory (`bytes` is exactly the `directorySize` bytes the extension
 * names) with QEMU's rules: entry count must match the extension, entries must fit, no extra
 * data, and each entry must pass check_dir_entry (granularity 2^9..2^31, name at most 1023
 * bytes, table cluster aligned and at most 2^27 entries, at most 512 MiB of bitmap data,
 * type 1, no reserved flags, covering the disk unless in use).
 *
 * @example
 * ```ts
 * const bitmaps = decodeBitmapDirectory(dirBytes, { nbBitmaps: ext.nbBitmaps, clusterSize, diskSize: header.size });
 * ```
 */
export function decodeBitmapDirectory(bytes: Uint8Array, opts: BitmapDirectoryOptions): BitmapDirectoryEntry[] {
  if (bytes.byteLength === 0) throw invalidImage('Requested bitmap directory size is zero');
  if (bytes.byteLength > MAX_BITMAP_DIRECTORY_SIZE) throw invalidImage('Requested bitmap directory size is too big');
  const v = viewOf(bytes);
  const end = bytes.byteLength;
  const out: BitmapDirectoryEntry[] = [];
  let off = 0;
  while (off < end) {
    if (off + BITMAP_ENTRY_HEADER_SIZE > end) throw invalidImage('Broken bitmap directory', { offset: off });
    if (out.length + 1 > opts.nbBitmaps) throw invalidImage('More bitmaps found than specified in header extension');
    const tableOffsetHi = v.getUint32(off);
    const flagsRaw = v.getUint32(off + 12);
    const nameSize = v.getUint16(off + 18);
    const extraSize = v.getUint32(off + 20);
    // QEMU compares the padded entry end with the directory end.
    if (off + entryLength(extraSize, nameSize) > end) throw invalidImage('Broken bitmap directory', { offset: off });
    const nameStart = off + BITMAP_ENTRY_HEADER_SIZE + extraSize;
    const nameBytes = bytes.subarray(nameStart, nameStart + nameSize);
    if (extraSize !== 0) {
      throw new Qcow2Error('UNSUPPORTED', 'Bitmap extra data is not supported', { offset: off, extraDataSize: extraSize });
    }
    const entry: BitmapDirectoryEntry = {
      name: decodeText(nameBytes),
      granularityBits: v.getUint8(off + 17),
      flags: { inUse: (flagsRaw & FLAG_IN_USE) !== 0, auto: (flagsRaw & FLAG_AUTO) !== 0 },
      type: v.getUint8(off + 16),
      tableOffset: readU64(v, off),
      tableSize: v.getUint32(off + 8),
      extraData: bytes.slice(off + BITMAP_ENTRY_HEADER_SIZE, nameStart),
    };
    // An offset at or above 2^53 is far beyond any file; treat it like any bad offset.
    if (tableOffsetHi > 0x1fffff || !entrySatisfiesConstraints(entry, nameSize, flagsRaw, opts)) {
      throw invalidImage(`Bitmap '${entry.name}' doesn't satisfy the constraints`, { offset: off, name: entry.name });
    }
    out.push(entry);
    off += entryLength(extraSize, nameSize);
  }
  if (out.length !== opts.nbBitmaps) throw invalidImage('Less bitmaps found than specified in header extension');
  return out;
}

/** Bytes `encodeBitmapDirectory` produces for these entries. */
export function bitmapDirectorySize(entries: readonly BitmapDirectoryEntry[]): number {
  let size = 0;
  for (const e of entries) size += entryLength(e.extraData.byteLength, encodeText(e.name).byteLength);
  return size;
}

/**
 * Encode the bitmap directory: each entry 8-byte aligned with zero padding. Store
 * `entries.length` and the returned length in the extension.
 *
 * @example
 * ```ts
 * const dir = encodeBitmapDirectory(bitmaps);
 * const ext = encodeBitmapsExtension({ nbBitmaps: bitmaps.length, directorySize: dir.byteLength, directoryOffset });
 * ```
 */
export function encodeBitmapDirectory(entries: readonly BitmapDirectoryEntry[]): Uint8Array {
  if (entries.length > MAX_BITMAPS) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Too many bitmaps (${entries.length} > ${MAX_BITMAPS})`, { count: entries.length });
  }
  const names = entries.map((e) => encodeText(e.name));
  let size = 0;
  entries.forEach((e, i) => {
    const nameSize = names[i]!.byteLength;
    if (nameSize === 0 || nameSize > MAX_BITMAP_NAME_SIZE) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Bitmap name must be 1 to ${MAX_BITMAP_NAME_SIZE} bytes`, { name: e.name });
    }
    if (!Number.isSafeInteger(e.tableOffset) || e.tableOffset < 0 || !Number.isInteger(e.tableSize) || e.tableSize < 0 || e.tableSize > 0xffffffff) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Bitmap '${e.name}' has an invalid table offset or size`, { name: e.name });
    }
    if (!Number.isInteger(e.granularityBits) || e.granularityBits < 0 || e.granularityBits > 255 || !Number.isInteger(e.type) || e.type < 0 || e.type > 255) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Bitmap '${e.name}' has an invalid type or granularity`, { name: e.name });
    }
    size += entryLength(e.extraData.byteLength, nameSize);
  });
  if (size > MAX_BITMAP_DIRECTORY_SIZE) {
    throw new Qcow2Error('INVALID_ARGUMENT', 'Bitmap directory is too large', { size });
  }
  const out = new Uint8Array(size);
  const v = viewOf(out);
  let off = 0;
  entries.forEach((e, i) => {
    const name = names[i]!;
    writeU64(v, off, e.tableOffset);
    v.setUint32(off + 8, e.tableSize);
    v.setUint32(off + 12, (e.flags.inUse ? FLAG_IN_USE : 0) | (e.flags.auto ? FLAG_AUTO : 0));
    v.setUint8(off + 16, e.type);
    v.setUint8(off + 17, e.granularityBits);
    v.setUint16(off + 18, name.byteLength);
    v.setUint32(off + 20, e.extraData.byteLength);
    out.set(e.extraData, off + BITMAP_ENTRY_HEADER_SIZE);
    out.set(name, off + BITMAP_ENTRY_HEADER_SIZE + e.extraData.byteLength);
    off += entryLength(e.extraData.byteLength, name.byteLength);
  });
  return out;
}
