/**
 * Snapshot table entries as the check sees them: fields kept as raw bytes where they are
 * 64-bit (nothing is lost or rounded when a repair rewrites the table), and QEMU 7.2's rules
 * for rewriting a table (qcow2_write_snapshots).
 */
import { TWO_32, viewOf } from '../../util/bytes.js';

/** Fixed part of an entry. */
export const SNAPSHOT_FIXED_SIZE = 40;
/** Extra data QEMU 7.2 knows: vm_state_size_large, disk_size, icount. */
export const KNOWN_EXTRA_SIZE = 24;

/** One snapshot table entry read by the check. */
export interface CheckSnapshot {
  /** L1 table offset, raw 64-bit halves (may be any value: the check reports bad ones). */
  l1OffsetHi: number;
  l1OffsetLo: number;
  l1Size: number;
  /** ID and name bytes, as QEMU keeps them (C strings: only up to the first NUL count). */
  id: Uint8Array;
  name: Uint8Array;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: Uint8Array;
  /** The 32-bit vm_state_size field. */
  vmStateSize32: number;
  /** 8-byte extra data fields, present when the entry's extra data covers them. */
  vmStateSizeLarge: Uint8Array | undefined;
  diskSize: Uint8Array | undefined;
  icount: Uint8Array | undefined;
  /** Extra data size after QEMU's truncation to 1 KiB (what a rewrite keeps). */
  extraDataSize: number;
  /** Extra data past the known fields, kept verbatim. */
  unknownExtra: Uint8Array;
}

/** Text of a C string field for messages: up to the first NUL. */
export function cString(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return new TextDecoder().decode(nul < 0 ? bytes : bytes.subarray(0, nul));
}

function cBytes(bytes: Uint8Array): Uint8Array {
  const nul = bytes.indexOf(0);
  return nul < 0 ? bytes : bytes.subarray(0, nul);
}

/** The L1 offset as a number when it is exact (below 2^53), else undefined. */
export function snapshotL1Offset(sn: CheckSnapshot): number | undefined {
  return sn.l1OffsetHi > 0x1fffff ? undefined : sn.l1OffsetHi * TWO_32 + sn.l1OffsetLo;
}

/** C's %#x of a 64-bit value given as halves: "0" for zero, else "0x...". */
export function hex64Alt(hi: number, lo: number): string {
  if (hi === 0 && lo === 0) return '0';
  return `0x${hex64(hi, lo)}`;
}

/** C's PRIx64 of a value given as halves (no prefix). */
export function hex64(hi: number, lo: number): string {
  return hi === 0 ? (lo >>> 0).toString(16) : (hi >>> 0).toString(16) + (lo >>> 0).toString(16).padStart(8, '0');
}

/** Length of the table QEMU 7.2 writes for these entries. */
export function rewrittenTableSize(entries: readonly CheckSnapshot[]): number {
  let offset = 0;
  for (const sn of entries) {
    offset = Math.ceil(offset / 8) * 8;
    offset += SNAPSHOT_FIXED_SIZE + Math.max(KNOWN_EXTRA_SIZE, sn.extraDataSize) + cBytes(sn.id).byteLength + cBytes(sn.name).byteLength;
  }
  return offset;
}

/**
 * Encode entries the way QEMU 7.2's qcow2_write_snapshots does: every entry gets at least the
 * 24 bytes of known extra data (disk size defaulting to the current virtual size, icount to -1),
 * unknown extra data is kept, the 32-bit vm_state_size holds the size when it fits, else 0.
 *
 * @example
 * ```ts
 * const bytes = encodeSnapshotsLikeQemu(snapshots, virtualSize);
 * ```
 */
export function encodeSnapshotsLikeQemu(entries: readonly CheckSnapshot[], virtualSize: number): Uint8Array {
  const out = new Uint8Array(rewrittenTableSize(entries));
  const v = viewOf(out);
  let offset = 0;
  for (const sn of entries) {
    offset = Math.ceil(offset / 8) * 8;
    const id = cBytes(sn.id);
    const name = cBytes(sn.name);
    v.setUint32(offset, sn.l1OffsetHi);
    v.setUint32(offset + 4, sn.l1OffsetLo);
    v.setUint32(offset + 8, sn.l1Size);
    v.setUint16(offset + 12, id.byteLength);
    v.setUint16(offset + 14, name.byteLength);
    v.setUint32(offset + 16, sn.dateSec);
    v.setUint32(offset + 20, sn.dateNsec);
    out.set(sn.vmClockNsec, offset + 24);
    const large = sn.vmStateSizeLarge;
    const fits32 = large === undefined || viewOf(large).getUint32(0) === 0;
    v.setUint32(offset + 32, large === undefined ? sn.vmStateSize32 : fits32 ? viewOf(large).getUint32(4) : 0);
    v.setUint32(offset + 36, Math.max(KNOWN_EXTRA_SIZE, sn.extraDataSize));
    offset += SNAPSHOT_FIXED_SIZE;
    if (large !== undefined) out.set(large, offset);
    else v.setUint32(offset + 4, sn.vmStateSize32);
    if (sn.diskSize !== undefined) {
      out.set(sn.diskSize, offset + 8);
    } else {
      v.setUint32(offset + 8, Math.floor(virtualSize / TWO_32));
      v.setUint32(offset + 12, virtualSize >>> 0);
    }
    if (sn.icount !== undefined) out.set(sn.icount, offset + 16);
    else out.fill(0xff, offset + 16, offset + 24);
    offset += KNOWN_EXTRA_SIZE;
    out.set(sn.unknownExtra, offset);
    offset += sn.unknownExtra.byteLength;
    out.set(id, offset);
    offset += id.byteLength;
    out.set(name, offset);
    offset += name.byteLength;
  }
  return out;
}
