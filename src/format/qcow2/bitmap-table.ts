import { invalidImage, Qcow2Error } from '../../errors.js';
import { viewOf, writeU64Parts } from '../../util/bytes.js';

/**
 * A bitmap table entry in memory: `BITMAP_CLUSTER_ZERO` (no data cluster, all bits clear),
 * `BITMAP_CLUSTER_ONES` (no data cluster, all bits set) or the host offset of the data
 * cluster. Data offsets are cluster aligned and never 0 or 1, so one number says it all.
 */
export type BitmapTableEntry = number;

export const BITMAP_CLUSTER_ZERO = 0;
export const BITMAP_CLUSTER_ONES = 1;

/** Bytes per bitmap table entry. */
export const BITMAP_TABLE_ENTRY_SIZE = 8;

// BME_TABLE_ENTRY_RESERVED_MASK 0xff000000000001fe, offset bits 9-55, bit 0 = all ones.
const RESERVED_HI = 0xff000000;
const RESERVED_LO = 0x000001fe;
const OFFSET_HI = 0x00ffffff;
const OFFSET_LO = 0xfffffe00;
const FLAG_ALL_ONES = 1;

/**
 * Decode a bitmap table with QEMU's check_table_entry rules: no reserved bits, a data offset
 * cluster aligned and without the all-ones flag.
 *
 * @example
 * ```ts
 * const entries = decodeBitmapTable(tableBytes, clusterSize);
 * if (entries[0] === BITMAP_CLUSTER_ONES) { ... }
 * ```
 */
export function decodeBitmapTable(bytes: Uint8Array, clusterSize: number): BitmapTableEntry[] {
  if (bytes.byteLength % BITMAP_TABLE_ENTRY_SIZE !== 0) throw invalidImage('Bitmap table size is not a multiple of 8', { length: bytes.byteLength });
  const v = viewOf(bytes);
  const n = bytes.byteLength / BITMAP_TABLE_ENTRY_SIZE;
  const out: BitmapTableEntry[] = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const hi = v.getUint32(i * 8);
    const lo = v.getUint32(i * 8 + 4);
    if ((hi & RESERVED_HI) !== 0 || (lo & RESERVED_LO) !== 0) {
      throw invalidImage('Bitmap table entry has reserved bits set', { index: i });
    }
    const offset = (hi & OFFSET_HI) * 0x1_0000_0000 + ((lo & OFFSET_LO) >>> 0);
    if (offset === 0) {
      out[i] = (lo & FLAG_ALL_ONES) !== 0 ? BITMAP_CLUSTER_ONES : BITMAP_CLUSTER_ZERO;
      continue;
    }
    if ((lo & FLAG_ALL_ONES) !== 0) throw invalidImage('Bitmap table entry has a data offset and the all-ones flag', { index: i });
    if (offset % clusterSize !== 0) throw invalidImage('Bitmap data cluster offset is not cluster aligned', { index: i, offset });
    out[i] = offset;
  }
  return out;
}

/**
 * Encode a bitmap table (8 bytes per entry, big endian).
 *
 * @example
 * ```ts
 * const bytes = encodeBitmapTable([BITMAP_CLUSTER_ZERO, 0x50000, BITMAP_CLUSTER_ONES]);
 * ```
 */
export function encodeBitmapTable(entries: readonly BitmapTableEntry[]): Uint8Array {
  const out = new Uint8Array(entries.length * BITMAP_TABLE_ENTRY_SIZE);
  const v = viewOf(out);
  entries.forEach((e, i) => {
    if (e === BITMAP_CLUSTER_ZERO) return;
    if (e === BITMAP_CLUSTER_ONES) {
      v.setUint32(i * 8 + 4, FLAG_ALL_ONES);
      return;
    }
    if (!Number.isSafeInteger(e) || e < 0 || e % 512 !== 0 || e >= 2 ** 56) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Invalid bitmap data cluster offset ${e}`, { index: i });
    }
    writeU64Parts(v, i * 8, Math.floor(e / 0x1_0000_0000), e >>> 0);
  });
  return out;
}

/** Host offsets of the data clusters a table names. */
export function bitmapDataClusters(entries: readonly BitmapTableEntry[]): number[] {
  return entries.filter((e) => e !== BITMAP_CLUSTER_ZERO && e !== BITMAP_CLUSTER_ONES);
}
