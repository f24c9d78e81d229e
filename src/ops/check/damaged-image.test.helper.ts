// Test helper: hand-made qcow2 images to damage on purpose, and a way to check them in memory.
// Images come from the shared builder (cluster 0 header, 1 refcount table, 2 refcount block with
// 16-bit refcounts, 3 L1 table, then L2 tables, then data; every cluster has refcount 1).
import { buildQcow2, pattern, type BuildOptions } from '../../format/qcow2/qcow2-builder.test.helper.js';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { readU64, viewOf, writeU64, writeU64Parts } from '../../util/bytes.js';
import { checkQcow2, type CheckQcow2Outcome, type RepairMode } from './check-qcow2.js';

export const CS = 65536;
export const REFTABLE = CS;
export const REFBLOCK = 2 * CS;
export const L1 = 3 * CS;
export const L2 = 4 * CS;
/** Host offset of the n-th data cluster of an image with one L2 table. */
export const dataCluster = (n: number): number => (5 + n) * CS;

/** A 64 MiB image with `n` data clusters at guest clusters 0..n-1 (one L2 table). */
export function imageWithData(n: number, extra: Partial<BuildOptions> = {}): Uint8Array {
  const entries = Array.from({ length: n }, (_, i) => ({ cluster: i, kind: 'data' as const, bytes: pattern(CS, i + 1) }));
  return buildQcow2({ size: 64 << 20, entries, ...extra });
}

export function setU64(img: Uint8Array, offset: number, value: number): void {
  writeU64(viewOf(img), offset, value);
}

export function setU64Parts(img: Uint8Array, offset: number, hi: number, lo: number): void {
  writeU64Parts(viewOf(img), offset, hi, lo);
}

export function getU64(img: Uint8Array, offset: number): number {
  return readU64(viewOf(img), offset);
}

export function setU32(img: Uint8Array, offset: number, value: number): void {
  viewOf(img).setUint32(offset, value);
}

/** 16-bit refcount of `cluster` in the builder's single refcount block. */
export function setRefcount(img: Uint8Array, cluster: number, value: number): void {
  viewOf(img).setUint16(REFBLOCK + cluster * 2, value);
}

export function getRefcount(bytes: Uint8Array, cluster: number, refblock = REFBLOCK): number {
  return viewOf(bytes).getUint16(refblock + cluster * 2);
}

/** Grow an image (a zero-filled copy). */
export function grow(img: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(img.subarray(0, Math.min(size, img.byteLength)));
  return out;
}

export interface CheckRun extends CheckQcow2Outcome {
  /** Plain stderr lines. */
  lines: string[];
  /** error_report lines (the CLI prefixes them with its name). */
  errors: string[];
  /** The image after the check (repairs included). */
  bytes: Uint8Array;
  storage: MemoryStorage;
}

/** Check (and repair) a copy of `img` in memory, collecting messages. */
export async function runCheck(img: Uint8Array | MemoryStorage, repair: RepairMode = 'none', maxArrayBytes?: number): Promise<CheckRun> {
  const storage = img instanceof MemoryStorage ? img : new MemoryStorage(img.slice(), 'test.qcow2');
  const lines: string[] = [];
  const errors: string[] = [];
  const outcome = await checkQcow2(storage, {
    repair, reporter: { line: (t) => lines.push(t), error: (t) => errors.push(t) },
    ...(maxArrayBytes !== undefined ? { maxArrayBytes } : {}),
  });
  return { ...outcome, lines, errors, bytes: storage.bytes().slice(), storage };
}

/** One raw snapshot table entry for {@link withSnapshotTable}. */
export interface RawSnapshot {
  l1Offset?: number;
  l1Size?: number;
  id: string;
  name: string;
  /** Extra data as stored (its length is the entry's extra_data_size). */
  extra: Uint8Array;
}

/**
 * Append a snapshot table of `entries` as a new cluster at the end of `img` (refcount 1) and
 * point the header at it. Returns the grown image and the table offset.
 */
export function withSnapshotTable(img: Uint8Array, entries: readonly RawSnapshot[]): { img: Uint8Array; offset: number } {
  const text = new TextEncoder();
  const parts: Uint8Array[] = [];
  let length = 0;
  for (const e of entries) {
    const id = text.encode(e.id);
    const name = text.encode(e.name);
    const size = Math.ceil((40 + e.extra.byteLength + id.byteLength + name.byteLength) / 8) * 8;
    const b = new Uint8Array(size);
    const v = viewOf(b);
    writeU64(v, 0, e.l1Offset ?? 0);
    v.setUint32(8, e.l1Size ?? 0);
    v.setUint16(12, id.byteLength);
    v.setUint16(14, name.byteLength);
    v.setUint32(16, 1700000000);
    v.setUint32(36, e.extra.byteLength);
    b.set(e.extra, 40);
    b.set(id, 40 + e.extra.byteLength);
    b.set(name, 40 + e.extra.byteLength + id.byteLength);
    parts.push(b);
    length += size;
  }
  const offset = Math.ceil(img.byteLength / CS) * CS;
  const clusters = Math.max(1, Math.ceil(length / CS));
  const out = grow(img, offset + clusters * CS);
  let at = offset;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  for (let c = 0; c < clusters; c++) setRefcount(out, offset / CS + c, 1);
  setU32(out, 60, entries.length);
  setU64(out, 64, offset);
  return { img: out, offset };
}
