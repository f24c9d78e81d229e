import { invalidImage } from '../../errors.js';
import { decodeText, encodeText, readU64, viewOf, writeU64 } from '../../util/bytes.js';
import type { FeatureKind } from './features.js';

export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

/** One header extension as stored: type and payload (without padding). */
export interface HeaderExtension {
  type: number;
  data: Uint8Array;
}

export interface FeatureNameEntry {
  kind: FeatureKind;
  bit: number;
  name: string;
}

/** Longest backing format name QEMU accepts (its buffer is 16 bytes with the NUL). */
const MAX_BACKING_FORMAT_LENGTH = 15;
const FEATURE_ENTRY_SIZE = 48;

/**
 * Walk the extension area `[start, end)` of cluster 0. Stops at the end marker. Every length
 * is checked against the area before it is used.
 *
 * @example
 * ```ts
 * const exts = decodeExtensions(cluster0, header.headerLength, header.backingFileOffset || clusterSize);
 * ```
 */
export function decodeExtensions(cluster0: Uint8Array, start: number, end: number): HeaderExtension[] {
  const v = viewOf(cluster0);
  const out: HeaderExtension[] = [];
  const seen = new Set<number>();
  end = Math.min(end, cluster0.byteLength);
  let off = start;
  while (off < end) {
    if (off + 8 > end) throw invalidImage('Header extension too large', { offset: off });
    const type = v.getUint32(off);
    const len = v.getUint32(off + 4);
    off += 8;
    if (len > end - off) throw invalidImage('Header extension too large', { offset: off - 8, type, length: len });
    if (type === EXT_END) break;
    const data = cluster0.slice(off, off + len);
    if (type === EXT_BACKING_FORMAT && len > MAX_BACKING_FORMAT_LENGTH) {
      throw invalidImage(`ERROR: ext_backing_format: len=${len} too large (>=16)`, { length: len });
    }
    if (type === EXT_BITMAPS && len !== 24) {
      throw invalidImage('bitmaps_ext: Invalid extension length', { length: len });
    }
    if (type === EXT_CRYPTO_HEADER && len !== 16) {
      throw invalidImage(`Unable to read CRYPTO header extension`, { length: len });
    }
    // QEMU keeps the last of duplicates for known types; keep all but remember we saw it.
    seen.add(type);
    out.push({ type, data });
    off += (len + 7) & ~7;
  }
  return out;
}

/** Encode extensions (with padding and the end marker) into `dst` at `offset`; returns the end offset. */
export function encodeExtensions(exts: readonly HeaderExtension[], dst: Uint8Array, offset: number): number {
  const v = viewOf(dst);
  for (const e of exts) {
    v.setUint32(offset, e.type);
    v.setUint32(offset + 4, e.data.byteLength);
    dst.set(e.data, offset + 8);
    const padded = (e.data.byteLength + 7) & ~7;
    dst.fill(0, offset + 8 + e.data.byteLength, offset + 8 + padded);
    offset += 8 + padded;
  }
  v.setUint32(offset, EXT_END);
  v.setUint32(offset + 4, 0);
  return offset + 8;
}

/** Bytes `encodeExtensions` will write, end marker included. */
export function extensionsLength(exts: readonly HeaderExtension[]): number {
  let n = 8;
  for (const e of exts) n += 8 + ((e.data.byteLength + 7) & ~7);
  return n;
}

export function findExtension(exts: readonly HeaderExtension[], type: number): HeaderExtension | undefined {
  let found: HeaderExtension | undefined;
  for (const e of exts) if (e.type === type) found = e;
  return found;
}

export function decodeStringExtension(ext: HeaderExtension | undefined): string | undefined {
  return ext === undefined ? undefined : decodeText(ext.data);
}

export function stringExtension(type: number, text: string): HeaderExtension {
  return { type, data: encodeText(text) };
}

const KIND_CODES: readonly FeatureKind[] = ['incompatible', 'compatible', 'autoclear'];

/** Decode the feature name table; entries of unknown kind are skipped. */
export function decodeFeatureTable(ext: HeaderExtension | undefined): FeatureNameEntry[] {
  if (ext === undefined) return [];
  const out: FeatureNameEntry[] = [];
  for (let off = 0; off + FEATURE_ENTRY_SIZE <= ext.data.byteLength; off += FEATURE_ENTRY_SIZE) {
    const kind = KIND_CODES[ext.data[off] ?? 255];
    const bit = ext.data[off + 1] ?? 0;
    const raw = ext.data.subarray(off + 2, off + FEATURE_ENTRY_SIZE);
    const nul = raw.indexOf(0);
    if (kind === undefined) continue;
    out.push({ kind, bit, name: decodeText(nul < 0 ? raw : raw.subarray(0, nul)) });
  }
  return out;
}

export function encodeFeatureTable(entries: readonly FeatureNameEntry[]): HeaderExtension {
  const data = new Uint8Array(entries.length * FEATURE_ENTRY_SIZE);
  entries.forEach((e, i) => {
    const off = i * FEATURE_ENTRY_SIZE;
    data[off] = KIND_CODES.indexOf(e.kind);
    data[off + 1] = e.bit;
    data.set(encodeText(e.name).subarray(0, 46), off + 2);
  });
  return { type: EXT_FEATURE_TABLE, data };
}

/** The feature table QEMU writes into new images. */
export const QEMU_FEATURE_TABLE: readonly FeatureNameEntry[] = [
  { kind: 'incompatible', bit: 0, name: 'dirty bit' },
  { kind: 'incompatible', bit: 1, name: 'corrupt bit' },
  { kind: 'incompatible', bit: 2, name: 'external data file' },
  { kind: 'incompatible', bit: 3, name: 'compression type' },
  { kind: 'incompatible', bit: 4, name: 'extended L2 entries' },
  { kind: 'compatible', bit: 0, name: 'lazy refcounts' },
  { kind: 'autoclear', bit: 0, name: 'bitmaps' },
  { kind: 'autoclear', bit: 1, name: 'raw external data' },
];

/** Full-disk-encryption header pointer extension. */
export interface CryptoHeaderPointer {
  offset: number;
  length: number;
}

export function decodeCryptoHeader(ext: HeaderExtension | undefined): CryptoHeaderPointer | undefined {
  if (ext === undefined) return undefined;
  const v = viewOf(ext.data);
  return { offset: readU64(v, 0), length: readU64(v, 8) };
}

export function encodeCryptoHeader(p: CryptoHeaderPointer): HeaderExtension {
  const data = new Uint8Array(16);
  const v = viewOf(data);
  writeU64(v, 0, p.offset);
  writeU64(v, 8, p.length);
  return { type: EXT_CRYPTO_HEADER, data };
}
