/**
 * Where the structures of a (valid) qcow2 image sit in its bytes, so the mutator can aim at
 * header fields, extension headers, table entries, compressed descriptors, snapshot and bitmap
 * directory fields. Deliberately independent of the driver's own parsers: a fuzzer that shared
 * the code under test would share its blind spots. Every read is bounds-checked; anything that
 * does not parse is simply left out of the layout.
 */

const MAGIC = 0x514649fb;
const MAX_ITEMS = 100_000;

/** A fixed header field: byte offset and width. */
export interface FieldSpec {
  name: string;
  offset: number;
  width: 1 | 2 | 4 | 8;
}

/** Fixed header fields of qcow2 (v2 ends at 72, v3 fields follow). */
export const HEADER_FIELDS: readonly FieldSpec[] = [
  { name: 'magic', offset: 0, width: 4 },
  { name: 'version', offset: 4, width: 4 },
  { name: 'backing_file_offset', offset: 8, width: 8 },
  { name: 'backing_file_size', offset: 16, width: 4 },
  { name: 'cluster_bits', offset: 20, width: 4 },
  { name: 'size', offset: 24, width: 8 },
  { name: 'crypt_method', offset: 32, width: 4 },
  { name: 'l1_size', offset: 36, width: 4 },
  { name: 'l1_table_offset', offset: 40, width: 8 },
  { name: 'refcount_table_offset', offset: 48, width: 8 },
  { name: 'refcount_table_clusters', offset: 56, width: 4 },
  { name: 'nb_snapshots', offset: 60, width: 4 },
  { name: 'snapshots_offset', offset: 64, width: 8 },
  { name: 'incompatible_features', offset: 72, width: 8 },
  { name: 'compatible_features', offset: 80, width: 8 },
  { name: 'autoclear_features', offset: 88, width: 8 },
  { name: 'refcount_order', offset: 96, width: 4 },
  { name: 'header_length', offset: 100, width: 4 },
  { name: 'compression_type', offset: 104, width: 1 },
];

/** Snapshot table entry fields, relative to the entry start. */
export const SNAPSHOT_FIELDS: readonly FieldSpec[] = [
  { name: 'l1_table_offset', offset: 0, width: 8 },
  { name: 'l1_size', offset: 8, width: 4 },
  { name: 'id_str_size', offset: 12, width: 2 },
  { name: 'name_size', offset: 14, width: 2 },
  { name: 'date_sec', offset: 16, width: 4 },
  { name: 'date_nsec', offset: 20, width: 4 },
  { name: 'vm_clock_nsec', offset: 24, width: 8 },
  { name: 'vm_state_size', offset: 32, width: 4 },
  { name: 'extra_data_size', offset: 36, width: 4 },
  // Extra data (present in what QEMU writes): vm_state_size_large, disk_size, icount.
  { name: 'extra.vm_state_size_large', offset: 40, width: 8 },
  { name: 'extra.disk_size', offset: 48, width: 8 },
  { name: 'extra.icount', offset: 56, width: 8 },
];

/** Bitmaps header extension payload fields, relative to the payload start. */
export const BITMAP_EXT_FIELDS: readonly FieldSpec[] = [
  { name: 'nb_bitmaps', offset: 0, width: 4 },
  { name: 'reserved32', offset: 4, width: 4 },
  { name: 'bitmap_directory_size', offset: 8, width: 8 },
  { name: 'bitmap_directory_offset', offset: 16, width: 8 },
];

/** Bitmap directory entry fields, relative to the entry start. */
export const BITMAP_DIR_FIELDS: readonly FieldSpec[] = [
  { name: 'bitmap_table_offset', offset: 0, width: 8 },
  { name: 'bitmap_table_size', offset: 8, width: 4 },
  { name: 'flags', offset: 12, width: 4 },
  { name: 'type', offset: 16, width: 1 },
  { name: 'granularity_bits', offset: 17, width: 1 },
  { name: 'name_size', offset: 18, width: 2 },
  { name: 'extra_data_size', offset: 20, width: 4 },
];

export interface ExtensionSlot {
  /** File offset of the extension's type word. */
  offset: number;
  type: number;
  length: number;
}

/** A table of 8-byte (or 16-byte, extended L2) entries. */
export interface TableSlot {
  kind: 'l1' | 'l2' | 'reftable' | 'refblock' | 'bitmap-table' | 'snapshot-l1';
  offset: number;
  entries: number;
  entrySize: 8 | 16;
}

/** A compressed cluster: where its L2 entry is and where its bytes are. */
export interface CompressedSlot {
  entryOffset: number;
  hostOffset: number;
  length: number;
}

export interface Qcow2Layout {
  fileSize: number;
  version: number;
  clusterBits: number;
  clusterSize: number;
  headerLength: number;
  refcountOrder: number;
  extendedL2: boolean;
  extensions: ExtensionSlot[];
  /** End of the extension area (where the end marker sits). */
  extensionEnd: number;
  backingName?: { offset: number; length: number };
  tables: TableSlot[];
  /** Host offsets of uncompressed data clusters. */
  dataClusters: number[];
  compressed: CompressedSlot[];
  /** Snapshot table entry start offsets. */
  snapshots: number[];
  /** File offset of the bitmaps extension payload. */
  bitmapExt?: number;
  /** Bitmap directory entry start offsets. */
  bitmapEntries: number[];
  /** Every cluster-aligned offset that holds metadata (for "point at metadata" mutations). */
  metadataClusters: number[];
}

function u64(v: DataView, off: number): number {
  return v.getUint32(off) * 0x1_0000_0000 + v.getUint32(off + 4);
}

/** Round up to a multiple of 8 without 32-bit bitwise arithmetic (values may exceed 2^31). */
function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 0x1_0000_0000 + ((lo & 0xfffffe00) >>> 0);
}

/**
 * Parse the layout of a valid qcow2 image. Returns undefined when the bytes are not qcow2.
 *
 * @example
 * ```ts
 * const layout = parseLayout(seedBytes);
 * const l1 = layout?.tables.find((t) => t.kind === 'l1');
 * ```
 */
export function parseLayout(bytes: Uint8Array): Qcow2Layout | undefined {
  if (bytes.byteLength < 72) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint32(0) !== MAGIC) return undefined;
  const version = v.getUint32(4);
  const clusterBits = v.getUint32(20);
  if (clusterBits < 9 || clusterBits > 21) return undefined;
  const cs = 2 ** clusterBits;
  const fileSize = bytes.byteLength;
  const inFile = (off: number, len: number): boolean => off >= 0 && len >= 0 && off + len <= fileSize;
  const headerLength = version >= 3 && fileSize >= 104 ? v.getUint32(100) : 72;
  const refcountOrder = version >= 3 && fileSize >= 100 ? v.getUint32(96) : 4;
  const incompatLo = version >= 3 && fileSize >= 80 ? v.getUint32(76) : 0;
  const extendedL2 = (incompatLo & 0x10) !== 0;
  const autoclearLo = version >= 3 && fileSize >= 96 ? v.getUint32(92) : 0;

  const layout: Qcow2Layout = {
    fileSize, version, clusterBits, clusterSize: cs, headerLength, refcountOrder, extendedL2,
    extensions: [], extensionEnd: headerLength, tables: [], dataClusters: [], compressed: [],
    snapshots: [], bitmapEntries: [], metadataClusters: [0],
  };
  const meta = new Set<number>([0]);
  const addMeta = (off: number, len: number): void => {
    for (let c = Math.floor(off / cs) * cs; c < off + len && meta.size < MAX_ITEMS; c += cs) meta.add(c);
  };

  // Header extensions.
  const backingOffset = u64(v, 8);
  const extLimit = Math.min(backingOffset !== 0 ? backingOffset : cs, fileSize);
  let off = headerLength;
  let bitmapPayload: number | undefined;
  while (off + 8 <= extLimit && layout.extensions.length < 64) {
    const type = v.getUint32(off);
    const len = v.getUint32(off + 4);
    if (type === 0) break;
    layout.extensions.push({ offset: off, type, length: len });
    if (type === 0x23852875 && len === 24) bitmapPayload = off + 8;
    off += 8 + align8(len);
  }
  layout.extensionEnd = off;
  if (backingOffset !== 0) layout.backingName = { offset: backingOffset, length: v.getUint32(16) };

  // Refcount table and blocks.
  const rtOffset = u64(v, 48);
  const rtClusters = v.getUint32(56);
  if (rtClusters > 0 && rtClusters < 4096 && inFile(rtOffset, rtClusters * cs)) {
    const entries = (rtClusters * cs) / 8;
    layout.tables.push({ kind: 'reftable', offset: rtOffset, entries, entrySize: 8 });
    addMeta(rtOffset, rtClusters * cs);
    for (let i = 0; i < entries; i++) {
      const rb = u64(v, rtOffset + i * 8);
      if (rb !== 0 && rb % cs === 0 && inFile(rb, cs)) {
        layout.tables.push({ kind: 'refblock', offset: rb, entries: cs / 8, entrySize: 8 });
        addMeta(rb, cs);
      }
    }
  }

  const entrySize: 8 | 16 = extendedL2 ? 16 : 8;
  const l2Seen = new Set<number>();
  const walkL1 = (kind: 'l1' | 'snapshot-l1', l1Offset: number, l1Size: number): void => {
    if (l1Size === 0 || l1Size > 1 << 20 || !inFile(l1Offset, l1Size * 8)) return;
    layout.tables.push({ kind, offset: l1Offset, entries: l1Size, entrySize: 8 });
    addMeta(l1Offset, l1Size * 8);
    for (let i = 0; i < l1Size; i++) {
      const l2 = entryOffset(v.getUint32(l1Offset + i * 8), v.getUint32(l1Offset + i * 8 + 4));
      if (l2 === 0 || l2 % cs !== 0 || !inFile(l2, cs) || l2Seen.has(l2)) continue;
      l2Seen.add(l2);
      layout.tables.push({ kind: 'l2', offset: l2, entries: cs / entrySize, entrySize });
      addMeta(l2, cs);
      for (let j = 0; j < cs / entrySize; j++) {
        const e = l2 + j * entrySize;
        const hi = v.getUint32(e);
        const lo = v.getUint32(e + 4);
        if ((hi & 0x40000000) !== 0) {
          const shiftHi = 62 - (clusterBits - 8) - 32;
          const body = hi & 0x3fffffff;
          const host = (body & ((1 << shiftHi) - 1)) * 0x1_0000_0000 + lo;
          const sectors = ((body >>> shiftHi) & ((1 << (clusterBits - 8)) - 1)) + 1;
          if (layout.compressed.length < MAX_ITEMS) layout.compressed.push({ entryOffset: e, hostOffset: host, length: sectors * 512 - (host % 512) });
        } else {
          const host = entryOffset(hi, lo);
          if (host !== 0 && layout.dataClusters.length < MAX_ITEMS) layout.dataClusters.push(host);
        }
      }
    }
  };
  walkL1('l1', u64(v, 40), v.getUint32(36));

  // Snapshot table (and the snapshots' own L1/L2 tables).
  const nbSnapshots = v.getUint32(60);
  let sOff = u64(v, 64);
  for (let i = 0; i < nbSnapshots && i < 1024; i++) {
    sOff = align8(sOff);
    if (!inFile(sOff, 40)) break;
    layout.snapshots.push(sOff);
    const extra = v.getUint32(sOff + 36);
    const idSize = v.getUint16(sOff + 12);
    const nameSize = v.getUint16(sOff + 14);
    const len = 40 + extra + idSize + nameSize;
    addMeta(sOff, len);
    walkL1('snapshot-l1', u64(v, sOff), v.getUint32(sOff + 8));
    sOff += len;
  }

  // Bitmaps (only when the autoclear bit says the extension is valid).
  if (bitmapPayload !== undefined && (autoclearLo & 1) === 1) {
    layout.bitmapExt = bitmapPayload;
    const nb = v.getUint32(bitmapPayload);
    const dirSize = u64(v, bitmapPayload + 8);
    const dirOffset = u64(v, bitmapPayload + 16);
    if (inFile(dirOffset, dirSize)) {
      addMeta(dirOffset, dirSize);
      let e = dirOffset;
      for (let i = 0; i < nb && i < 1024 && e + 24 <= dirOffset + dirSize; i++) {
        layout.bitmapEntries.push(e);
        const tOff = u64(v, e);
        const tSize = v.getUint32(e + 8);
        if (tSize > 0 && tSize < 1 << 20 && inFile(tOff, tSize * 8)) {
          layout.tables.push({ kind: 'bitmap-table', offset: tOff, entries: tSize, entrySize: 8 });
          addMeta(tOff, tSize * 8);
        }
        const nameSize = v.getUint16(e + 18);
        const extra = v.getUint32(e + 20);
        e += align8(24 + extra + nameSize);
      }
    }
  }

  layout.metadataClusters = [...meta].sort((a, b) => a - b);
  return layout;
}
