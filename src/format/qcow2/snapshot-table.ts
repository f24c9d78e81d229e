import { invalidImage, Qcow2Error } from '../../errors.js';
import { decodeText, encodeText, viewOf, writeU64, writeU64Parts, TWO_32 } from '../../util/bytes.js';

/** Fixed part of a snapshot table entry, before extra data, id and name. */
export const SNAPSHOT_HEADER_SIZE = 40;
/** QEMU's QCOW_MAX_SNAPSHOTS. */
export const MAX_SNAPSHOTS = 65536;
/** QEMU's QCOW_MAX_SNAPSHOTS_SIZE: the table may not exceed 64 MiB (1 KiB per entry on average). */
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;
/** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA, per entry. */
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
/** Extra data QEMU 7.2 knows and always writes: vm_state_size_large, disk_size, icount. */
export const KNOWN_SNAPSHOT_EXTRA_DATA = 24;
/** v3 entries must carry extra data up to and including disk_size. */
export const V3_MIN_SNAPSHOT_EXTRA_DATA = 16;
/** QEMU's QCOW_MAX_L1_SIZE / 8: the most L1 entries a snapshot may claim. */
export const MAX_SNAPSHOT_L1_ENTRIES = (32 * 1024 * 1024) / 8;

/** Longest possible entry (u16 id and name lengths, extra data at its limit). */
const MAX_ENTRY_BYTES = SNAPSHOT_HEADER_SIZE + MAX_SNAPSHOT_EXTRA_DATA + 0xffff + 0xffff;

/** One internal snapshot as stored in the snapshot table. */
export interface SnapshotEntry {
  /** Host offset of the snapshot's L1 table (not validated here; QEMU checks it on use). */
  l1TableOffset: number;
  /** Entries in the snapshot's L1 table. */
  l1Size: number;
  /** Unique id ("1", "2", ...). */
  id: string;
  /** Name (tag); need not be unique. */
  name: string;
  /** Creation time, seconds since the epoch (u32). */
  dateSec: number;
  dateNsec: number;
  /** Guest clock at creation, nanoseconds. */
  vmClockNsec: number;
  /** Size of the saved VM state: the 64-bit extra-data field when present, else the 32-bit one. */
  vmStateSize: number;
  /** Virtual disk size when the snapshot was taken; absent when the extra data is too short. */
  diskSize?: number;
  /** Guest instruction count; -1 when icount was disabled; absent when the extra data is too short. */
  icount?: number;
  /**
   * The whole extra-data area as stored (known fields included, unknown ones kept verbatim).
   * `encodeSnapshotTable` rewrites the known fields from the properties above and keeps the rest.
   */
  extraData: Uint8Array;
}

/** Image facts a snapshot table is interpreted with. */
export interface SnapshotTableOptions {
  version: 2 | 3;
  clusterSize: number;
}

/** How far the table extends, or how many bytes must be available to find out. */
export type SnapshotTableExtent =
  /** The table ends `length` bytes after its start (after the last name, without final padding). */
  | { complete: true; length: number }
  /** At least `needed` bytes from the table start are required to go on. */
  | { complete: false; needed: number };

/** QEMU's error and its hint (qemu-img prints the hint on the next line). */
function tooBig(remaining: number): Qcow2Error {
  return invalidImage('Snapshot table is too big', {
    limit: MAX_SNAPSHOT_TABLE_BYTES,
    hint: `You can force-remove all ${remaining} overhanging snapshots with qemu-img check -r all`,
  });
}

/**
 * Upper bound on the bytes a snapshot table of `count` entries can occupy, so that a caller can
 * read it in one piece: never more than QEMU's 64 MiB limit, however large `count` claims to be.
 * Throws for more than 65536 snapshots, as QEMU's open does.
 *
 * @example
 * ```ts
 * const bound = snapshotTableReadBound(header.nbSnapshots);
 * const bytes = new Uint8Array(Math.min(bound, fileSize - header.snapshotsOffset));
 * ```
 */
export function snapshotTableReadBound(count: number): number {
  if (!Number.isInteger(count) || count < 0 || count > MAX_SNAPSHOTS) {
    throw invalidImage('Snapshot table too large', { count });
  }
  // Entries start 8-byte aligned; padding between entries is at most 7 bytes.
  return Math.min(count * (MAX_ENTRY_BYTES + 7), MAX_SNAPSHOT_TABLE_BYTES);
}

/**
 * Walk the entry headers in `bytes` (the table's first bytes, possibly fewer than the whole
 * table) applying QEMU's limits, and say where the table of `count` entries ends, or how many
 * bytes are needed to continue. Lets a caller read the table incrementally without trusting
 * the counts in the image: `needed` never exceeds 64 MiB plus one entry.
 *
 * @example
 * ```ts
 * let ext = snapshotTableExtent(buf, count);
 * while (!ext.complete) { buf = await readMore(ext.needed); ext = snapshotTableExtent(buf, count); }
 * ```
 */
export function snapshotTableExtent(bytes: Uint8Array, count: number): SnapshotTableExtent {
  snapshotTableReadBound(count);
  const v = viewOf(bytes);
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const start = (offset + 7) & ~7;
    if (start + SNAPSHOT_HEADER_SIZE > bytes.byteLength) return { complete: false, needed: start + SNAPSHOT_HEADER_SIZE };
    const extra = v.getUint32(start + 36);
    if (extra > MAX_SNAPSHOT_EXTRA_DATA) throw tooMuchExtra(i, extra);
    const end = start + SNAPSHOT_HEADER_SIZE + extra + v.getUint16(start + 12) + v.getUint16(start + 14);
    if (end > MAX_SNAPSHOT_TABLE_BYTES) throw tooBig(count - i);
    if (end > bytes.byteLength) return { complete: false, needed: end };
    offset = end;
  }
  return { complete: true, length: offset };
}

function tooMuchExtra(index: number, size: number): Qcow2Error {
  return invalidImage(`Too much extra metadata in snapshot table entry ${index}`, {
    index,
    extraDataSize: size,
    limit: MAX_SNAPSHOT_EXTRA_DATA,
    hint: 'You can force-remove this extra metadata with qemu-img check -r all',
  });
}

/** A u64 that must be exact as a number. */
function u64(v: DataView, offset: number, field: string, index: number): number {
  const hi = v.getUint32(offset);
  if (hi > 0x1fffff) {
    throw invalidImage(`Snapshot table entry ${index}: ${field} is too large`, { index, field });
  }
  return hi * TWO_32 + v.getUint32(offset + 4);
}

/**
 * Decode `count` snapshot table entries from `bytes` (the table from its first byte; trailing
 * bytes are ignored). Applies the limits QEMU applies when it opens an image: extra data at
 * most 1 KiB per entry, table at most 64 MiB; 64-bit fields must fit in a number (icount may
 * be -1). Rules QEMU only reports in `check` are {@link snapshotEntryIncomplete} and
 * {@link snapshotL1Problem}. `opts` is accepted for symmetry with the callers: QEMU's open applies
 * no version- or cluster-size-dependent rule to the table.
 *
 * @example
 * ```ts
 * const snaps = decodeSnapshotTable(tableBytes, header.nbSnapshots, { version: 3, clusterSize: 65536 });
 * console.log(snaps.map((s) => s.name));
 * ```
 */
export function decodeSnapshotTable(bytes: Uint8Array, count: number, _opts?: SnapshotTableOptions): SnapshotEntry[] {
  const ext = snapshotTableExtent(bytes, count);
  if (!ext.complete) {
    throw invalidImage('Failed to read snapshot table: it extends past the bytes read', { needed: ext.needed, have: bytes.byteLength });
  }
  const v = viewOf(bytes);
  const out: SnapshotEntry[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    offset = (offset + 7) & ~7;
    const idLen = v.getUint16(offset + 12);
    const nameLen = v.getUint16(offset + 14);
    const extraSize = v.getUint32(offset + 36);
    const extraStart = offset + SNAPSHOT_HEADER_SIZE;
    const idStart = extraStart + extraSize;
    const nameStart = idStart + idLen;
    const entry: SnapshotEntry = {
      l1TableOffset: u64(v, offset, 'l1_table_offset', i),
      l1Size: v.getUint32(offset + 8),
      id: decodeText(bytes.subarray(idStart, nameStart)),
      name: decodeText(bytes.subarray(nameStart, nameStart + nameLen)),
      dateSec: v.getUint32(offset + 16),
      dateNsec: v.getUint32(offset + 20),
      vmClockNsec: u64(v, offset + 24, 'vm_clock_nsec', i),
      vmStateSize: v.getUint32(offset + 32),
      extraData: bytes.slice(extraStart, idStart),
    };
    if (extraSize >= 8) entry.vmStateSize = u64(v, extraStart, 'vm_state_size_large', i);
    if (extraSize >= 16) entry.diskSize = u64(v, extraStart + 8, 'disk_size', i);
    if (extraSize >= 24) {
      const hi = v.getUint32(extraStart + 16);
      const lo = v.getUint32(extraStart + 20);
      entry.icount = hi === 0xffffffff && lo === 0xffffffff ? -1 : u64(v, extraStart + 16, 'icount', i);
    }
    out.push(entry);
    offset = nameStart + nameLen;
  }
  return out;
}

/** Extra data for one entry: the stored bytes, grown to hold the fields that are set, known fields rewritten. */
function extraDataFor(e: SnapshotEntry): Uint8Array {
  let size = e.extraData.byteLength;
  if (e.icount !== undefined) size = Math.max(size, 24);
  else if (e.diskSize !== undefined) size = Math.max(size, 16);
  else if (e.vmStateSize > 0xffffffff) size = Math.max(size, 8);
  const extra = new Uint8Array(size);
  extra.set(e.extraData);
  const v = viewOf(extra);
  if (size >= 8) writeU64(v, 0, e.vmStateSize);
  if (size >= 16 && e.diskSize !== undefined) writeU64(v, 8, e.diskSize);
  if (size >= 24 && e.icount !== undefined) {
    if (e.icount === -1) writeU64Parts(v, 16, 0xffffffff, 0xffffffff);
    else writeU64(v, 16, e.icount);
  }
  return extra;
}

function checkU64(value: number, field: string, index: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Snapshot ${index}: ${field} must be a non-negative safe integer`, { index, field, value });
  }
}

function checkU32(value: number, field: string, index: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Snapshot ${index}: ${field} must fit in 32 bits`, { index, field, value });
  }
}

/**
 * Encode snapshot entries into table bytes: each entry starts 8-byte aligned (zero padding),
 * the table ends right after the last name (QEMU's snapshots_size). Known extra-data fields are
 * written from the entry's properties, unknown extra data is kept. The 32-bit vm_state_size
 * field holds the size when it fits and 0 otherwise, as QEMU writes it.
 *
 * @example
 * ```ts
 * const bytes = encodeSnapshotTable(decodeSnapshotTable(table, n, { version: 3, clusterSize }));
 * ```
 */
export function encodeSnapshotTable(entries: readonly SnapshotEntry[]): Uint8Array {
  if (entries.length > MAX_SNAPSHOTS) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Too many snapshots (${entries.length} > ${MAX_SNAPSHOTS})`, { count: entries.length });
  }
  const parts = entries.map((e, i) => {
    checkU64(e.l1TableOffset, 'l1TableOffset', i);
    checkU32(e.l1Size, 'l1Size', i);
    checkU32(e.dateSec, 'dateSec', i);
    checkU32(e.dateNsec, 'dateNsec', i);
    checkU64(e.vmClockNsec, 'vmClockNsec', i);
    checkU64(e.vmStateSize, 'vmStateSize', i);
    if (e.diskSize !== undefined) checkU64(e.diskSize, 'diskSize', i);
    if (e.icount !== undefined && e.icount !== -1) checkU64(e.icount, 'icount', i);
    const id = encodeText(e.id);
    const name = encodeText(e.name);
    const extra = extraDataFor(e);
    if (id.byteLength > 0xffff || name.byteLength > 0xffff) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Snapshot ${i}: id and name must be at most 65535 bytes`, { index: i });
    }
    if (extra.byteLength > MAX_SNAPSHOT_EXTRA_DATA) {
      throw new Qcow2Error('INVALID_ARGUMENT', `Snapshot ${i}: extra data exceeds ${MAX_SNAPSHOT_EXTRA_DATA} bytes`, { index: i });
    }
    return { e, id, name, extra };
  });
  let length = 0;
  for (const p of parts) {
    length = ((length + 7) & ~7) + SNAPSHOT_HEADER_SIZE + p.extra.byteLength + p.id.byteLength + p.name.byteLength;
  }
  if (length > MAX_SNAPSHOT_TABLE_BYTES) {
    throw new Qcow2Error('INVALID_ARGUMENT', 'Snapshot table would exceed 64 MiB', { length });
  }
  const out = new Uint8Array(length);
  const v = viewOf(out);
  let offset = 0;
  for (const { e, id, name, extra } of parts) {
    offset = (offset + 7) & ~7;
    writeU64(v, offset, e.l1TableOffset);
    v.setUint32(offset + 8, e.l1Size);
    v.setUint16(offset + 12, id.byteLength);
    v.setUint16(offset + 14, name.byteLength);
    v.setUint32(offset + 16, e.dateSec);
    v.setUint32(offset + 20, e.dateNsec);
    writeU64(v, offset + 24, e.vmClockNsec);
    v.setUint32(offset + 32, e.vmStateSize <= 0xffffffff ? e.vmStateSize : 0);
    v.setUint32(offset + 36, extra.byteLength);
    offset += SNAPSHOT_HEADER_SIZE;
    out.set(extra, offset);
    offset += extra.byteLength;
    out.set(id, offset);
    offset += id.byteLength;
    out.set(name, offset);
    offset += name.byteLength;
  }
  return out;
}

/**
 * QEMU's check rule for v3 images: an entry must carry extra data up to disk_size. QEMU still
 * opens such images; `check` reports each one (first pass over the table) and `-r all` rewrites
 * the table. Returns the message qemu-img 7.2 prints after its "ERROR " or "Repairing " prefix.
 *
 * @example
 * ```ts
 * const msg = snapshotEntryIncomplete(snaps[2]!, 2, 3); // "snapshot table entry 2 is incomplete"
 * ```
 */
export function snapshotEntryIncomplete(entry: SnapshotEntry, index: number, version: 2 | 3): string | undefined {
  if (version < 3 || entry.extraData.byteLength >= V3_MIN_SNAPSHOT_EXTRA_DATA) return undefined;
  return `snapshot table entry ${index} is incomplete`;
}

/**
 * QEMU's check rule for a snapshot's L1 table, tested before the table is walked: cluster
 * aligned, then at most 32 MiB. Returns the whole line qemu-img 7.2 prints, or undefined.
 *
 * @example
 * ```ts
 * const problem = snapshotL1Problem(snap, 65536);
 * if (problem !== undefined) console.error(problem);
 * ```
 */
export function snapshotL1Problem(entry: SnapshotEntry, clusterSize: number): string | undefined {
  if (entry.l1TableOffset % clusterSize !== 0) {
    return `ERROR snapshot ${entry.id} (${entry.name}) l1_offset=${hex(entry.l1TableOffset)}: L1 table is not cluster aligned; snapshot table entry corrupted`;
  }
  if (entry.l1Size > MAX_SNAPSHOT_L1_ENTRIES) {
    return `ERROR snapshot ${entry.id} (${entry.name}) l1_size=${hex(entry.l1Size)}: L1 table is too large; snapshot table entry corrupted`;
  }
  return undefined;
}

/** C's %#x: "0" for zero, "0x..." otherwise. */
function hex(n: number): string {
  return n === 0 ? '0' : `0x${n.toString(16)}`;
}
