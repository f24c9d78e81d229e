// Test helper: builds small qcow2 images by hand so driver tests control every bit.
import { encodeHeader, type Qcow2Header } from './header.js';
import { encodeExtensions, type HeaderExtension } from './header-extensions.js';
import { encodeCompressed } from './table-entries.js';
import { viewOf, writeU64, writeU64Parts } from '../../util/bytes.js';

export interface BuiltEntry {
  /** Guest cluster index. */
  cluster: number;
  kind: 'data' | 'zero' | 'zero-alloc' | 'compressed' | 'raw-entry';
  /** For data: bytes (cluster sized). For compressed: the compressed stream. */
  bytes?: Uint8Array;
  /** Extended L2 bitmap (alloc, zero). */
  bitmap?: { alloc: number; zero: number };
  /** For raw-entry: the entry words. */
  hi?: number;
  lo?: number;
}

export interface BuildOptions {
  clusterBits?: number;
  size: number;
  version?: 2 | 3;
  extendedL2?: boolean;
  entries?: BuiltEntry[];
  backingName?: string;
  extensions?: HeaderExtension[];
  incompat?: { hi: number; lo: number };
  compressionType?: number;
  headerPatch?: Partial<Qcow2Header>;
}

/** Layout: cluster 0 header, 1 reftable, 2 refblock, 3 L1, then L2 tables, then data. */
export function buildQcow2(o: BuildOptions): Uint8Array {
  const bits = o.clusterBits ?? 16;
  const cs = 2 ** bits;
  const ext = o.extendedL2 ?? false;
  const l2Entries = cs / (ext ? 16 : 8);
  const l1Size = Math.max(1, Math.ceil(o.size / (cs * l2Entries)));
  const entries = o.entries ?? [];
  const l1Indexes = [...new Set(entries.map((e) => Math.floor(e.cluster / l2Entries)))].sort((a, b) => a - b);
  const l2At = new Map<number, number>();
  let next = 4 * cs;
  for (const i of l1Indexes) {
    l2At.set(i, next);
    next += cs;
  }
  const chunks: { offset: number; bytes: Uint8Array }[] = [];
  const l2Words = new Map<number, DataView>();
  for (const i of l1Indexes) l2Words.set(i, viewOf(new Uint8Array(cs)));
  let compressedCursor = -1;
  for (const e of entries) {
    const table = l2Words.get(Math.floor(e.cluster / l2Entries))!;
    const at = (e.cluster % l2Entries) * (ext ? 16 : 8);
    let hi = 0;
    let lo = 0;
    if (e.kind === 'data' || e.kind === 'zero-alloc') {
      const host = next;
      next += cs;
      if (e.kind === 'data') chunks.push({ offset: host, bytes: e.bytes ?? new Uint8Array(cs) });
      hi = (0x80000000 | Math.floor(host / 2 ** 32)) >>> 0;
      lo = (host >>> 0) | (e.kind === 'zero-alloc' && !ext ? 1 : 0);
    } else if (e.kind === 'zero') {
      lo = ext ? 0 : 1;
    } else if (e.kind === 'compressed') {
      const data = e.bytes!;
      if (compressedCursor < 0 || compressedCursor + data.byteLength > next) {
        compressedCursor = next;
        next += Math.ceil(data.byteLength / cs + 1) * cs;
      }
      const host = compressedCursor;
      chunks.push({ offset: host, bytes: data });
      [hi, lo] = encodeCompressed(host, data.byteLength, bits);
      compressedCursor += data.byteLength;
    } else {
      hi = e.hi ?? 0;
      lo = e.lo ?? 0;
    }
    table.setUint32(at, hi);
    table.setUint32(at + 4, lo);
    if (ext && e.bitmap) {
      table.setUint32(at + 8, e.bitmap.zero >>> 0);
      table.setUint32(at + 12, e.bitmap.alloc >>> 0);
    }
  }
  const total = next;
  const out = new Uint8Array(total);
  const header: Qcow2Header = {
    version: o.version ?? 3, backingFileOffset: 0, backingFileSize: 0, clusterBits: bits, size: o.size, cryptMethod: 0,
    l1Size, l1TableOffset: 3 * cs, refcountTableOffset: cs, refcountTableClusters: 1, nbSnapshots: 0, snapshotsOffset: 0,
    incompatibleFeatures: { hi: o.incompat?.hi ?? 0, lo: (o.incompat?.lo ?? 0) | (ext ? 0x10 : 0) | ((o.compressionType ?? 0) ? 8 : 0) },
    compatibleFeatures: { hi: 0, lo: 0 }, autoclearFeatures: { hi: 0, lo: 0 }, refcountOrder: 4,
    headerLength: (o.version ?? 3) === 2 ? 72 : 112, compressionType: o.compressionType ?? 0, unknownFields: new Uint8Array(0),
    ...o.headerPatch,
  };
  const extEnd = encodeExtensions(o.extensions ?? [], out, (o.version ?? 3) === 2 ? 72 : 112);
  if (o.backingName !== undefined) {
    const name = new TextEncoder().encode(o.backingName);
    header.backingFileOffset = extEnd;
    header.backingFileSize = name.byteLength;
    out.set(name, extEnd);
  }
  encodeHeader(header, out);
  const l1 = viewOf(out.subarray(3 * cs, 4 * cs));
  for (const [i, off] of l2At) writeU64Parts(l1, i * 8, (0x80000000 | Math.floor(off / 2 ** 32)) >>> 0, off >>> 0);
  for (const [i, v] of l2Words) out.set(new Uint8Array(v.buffer), l2At.get(i)!);
  for (const c of chunks) out.set(c.bytes, c.offset);
  // Refcount 1 for every cluster in use (16-bit refcounts, one refblock), so writes can allocate.
  writeU64(viewOf(out), cs, 2 * cs);
  const refblock = viewOf(out.subarray(2 * cs, 3 * cs));
  const clusters = Math.ceil(total / cs);
  if (clusters > cs / 2) throw new Error('test image too large for one refblock');
  for (let c = 0; c < clusters; c++) refblock.setUint16(c * 2, 1);
  return out;
}

/** Deterministic non-zero content. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
