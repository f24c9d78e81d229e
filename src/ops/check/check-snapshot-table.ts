/**
 * QEMU's qcow2_check_read_snapshot_table: the check reads the snapshot table itself (open in
 * check mode skips it, so that a broken table can be repaired). With `-r all` it drops
 * snapshots beyond QEMU's limits (more than 65536, or a table past 64 MiB) and truncates extra
 * data past 1 KiB; v3 entries without the mandatory 16 bytes of extra data are reported and
 * rewritten later by the snapshot table repair. Memory stays bounded: at most 64 MiB of entries
 * are held, however large the counts in the image claim to be.
 */
import { viewOf } from '../../util/bytes.js';
import type { CheckContext } from './check-context.js';
import { CheckAbort, ERRNO_TEXT, type CheckResult, type Errno, type FixMode } from './check-types.js';
import { HEADER_NB_SNAPSHOTS } from './check-image.js';
import { KNOWN_EXTRA_SIZE, SNAPSHOT_FIXED_SIZE, type CheckSnapshot } from './snapshot-entry.js';
import { WindowReader } from './window-reader.js';

const MAX_SNAPSHOTS = 65536;
const MAX_EXTRA_DATA = 1024;
const MAX_TABLE_BYTES = 64 * 1024 * 1024;
const INT_MAX = 0x7fffffff;
const TWO_32 = 2 ** 32;

/** QEMU's BDRV_MAX_LENGTH: INT64_MAX aligned down to 1 GiB; no request may end beyond it. */
const BDRV_MAX_LENGTH = (1n << 63n) - (1n << 30n);
const INT64_MAX = (1n << 63n) - 1n;

/** A failure with QEMU's message and hint (error_setg + error_append_hint). */
class ReadFailure {
  constructor(readonly errno: Errno, readonly message: string, readonly hint: string | undefined) {}
}

export async function readSnapshotTableForCheck(ctx: CheckContext, res: CheckResult, fix: FixMode): Promise<void> {
  const img = ctx.img;
  const ptr = await img.readSnapshotPointer();
  let nb = ptr.nbSnapshots;
  let reduced = 0;
  let dropped = 0;
  img.snapshots = { nbSnapshots: 0, snapshotsOffset: 0, snapshotsSize: 0, snapshots: [] };
  if (nb > MAX_SNAPSHOTS && fix.errors) {
    ctx.reporter.line(`Discarding ${nb - MAX_SNAPSHOTS} overhanging snapshots`);
    reduced += nb - MAX_SNAPSHOTS;
    nb = MAX_SNAPSHOTS;
  }
  // QEMU's qcow2_validate_table for "snapshot table".
  const exactBase = (BigInt(ptr.offsetHi) << 32n) | BigInt(ptr.offsetLo);
  const invalid = nb > MAX_SNAPSHOTS ? 'too large'
    : ptr.offsetLo % img.clusterSize !== 0 || exactBase > INT64_MAX - BigInt(nb * SNAPSHOT_FIXED_SIZE) ? 'offset invalid'
      : undefined;
  if (invalid !== undefined) {
    res.checkErrors++;
    ctx.reporter.error(`ERROR snapshot table ${invalid}`);
    if (nb > MAX_SNAPSHOTS) ctx.reporter.line(`You can force-remove all ${nb - MAX_SNAPSHOTS} overhanging snapshots with qemu-img check -r all`);
    throw new CheckAbort(invalid === 'too large' ? 'EFBIG' : 'EINVAL');
  }

  const repair = fix.errors;
  const base = ptr.offsetHi * TWO_32 + ptr.offsetLo;
  const reader = new WindowReader(img.storage);
  // Offsets of the table are taken relative to its start; a table beyond 2^53 reads as zeros
  // (far past the end of any file), and a read ending past QEMU's maximum fails as in QEMU.
  const readRel = (rel: number, length: number): Promise<Uint8Array> => {
    if (Number.isSafeInteger(base + rel + length)) return reader.read(base + rel, length);
    if (exactBase + BigInt(rel) + BigInt(length) > BDRV_MAX_LENGTH) {
      throw new ReadFailure('EIO', `Failed to read snapshot table: ${ERRNO_TEXT.EIO}`, undefined);
    }
    return Promise.resolve(new Uint8Array(length));
  };

  const snapshots: CheckSnapshot[] = [];
  let rel = 0;
  let tableLength = 0;
  try {
    for (let i = 0; i < nb; i++) {
      const pre = rel;
      tableLength = Math.ceil(tableLength / 8) * 8;
      rel = Math.ceil(rel / 8) * 8;
      const fixed = await readRel(rel, SNAPSHOT_FIXED_SIZE);
      rel += SNAPSHOT_FIXED_SIZE;
      const v = viewOf(fixed);
      const idLen = v.getUint16(12);
      const nameLen = v.getUint16(14);
      let extraSize = v.getUint32(36);
      let truncate = false;
      if (extraSize > MAX_EXTRA_DATA) {
        if (!repair) {
          throw new ReadFailure('EFBIG', `Too much extra metadata in snapshot table entry ${i}`, 'You can force-remove this extra metadata with qemu-img check -r all');
        }
        ctx.reporter.line(`Discarding too much extra metadata in snapshot table entry ${i} (${extraSize} > ${MAX_EXTRA_DATA})`);
        dropped++;
        truncate = true;
      }
      const knownLen = Math.min(KNOWN_EXTRA_SIZE, extraSize);
      const known = await readRel(rel, knownLen);
      rel += knownLen;
      let unknownExtra: Uint8Array = new Uint8Array(0);
      if (extraSize > KNOWN_EXTRA_SIZE) {
        const extraEnd = rel + extraSize - KNOWN_EXTRA_SIZE;
        if (truncate) extraSize = MAX_EXTRA_DATA;
        unknownExtra = await readRel(rel, extraSize - KNOWN_EXTRA_SIZE);
        rel = extraEnd;
      }
      const id = await readRel(rel, idLen);
      rel += idLen;
      const name = await readRel(rel, nameLen);
      rel += nameLen;
      snapshots.push({
        l1OffsetHi: v.getUint32(0), l1OffsetLo: v.getUint32(4), l1Size: v.getUint32(8), id, name,
        dateSec: v.getUint32(16), dateNsec: v.getUint32(20), vmClockNsec: fixed.slice(24, 32), vmStateSize32: v.getUint32(32),
        vmStateSizeLarge: extraSize >= 8 ? known.slice(0, 8) : undefined,
        diskSize: extraSize >= 16 ? known.slice(8, 16) : undefined,
        icount: extraSize >= 24 ? known.slice(16, 24) : undefined,
        extraDataSize: extraSize, unknownExtra,
      });
      // The extra data may have been truncated.
      tableLength += SNAPSHOT_FIXED_SIZE + extraSize + idLen + nameLen;
      if (tableLength > MAX_TABLE_BYTES || rel > INT_MAX) {
        if (!repair) {
          throw new ReadFailure('EFBIG', 'Snapshot table is too big', `You can force-remove all ${nb - i} overhanging snapshots with qemu-img check -r all`);
        }
        ctx.reporter.line(`Discarding ${nb - i} overhanging snapshots (snapshot table is too big)`);
        reduced += nb - i;
        snapshots.pop();
        nb = i;
        rel = pre;
        break;
      }
    }
  } catch (e) {
    if (!(e instanceof ReadFailure)) throw e;
    res.checkErrors++;
    ctx.reporter.error(`ERROR failed to read the snapshot table: ${e.message}`);
    if (e.hint !== undefined) ctx.reporter.line(e.hint);
    throw new CheckAbort(e.errno);
  }
  img.snapshots = { nbSnapshots: nb, snapshotsOffset: base, snapshotsSize: rel, snapshots };
  res.corruptions += reduced + dropped;

  if (reduced > 0) {
    // The header must agree with the list before the refcount check; this only leaks clusters.
    const count = new Uint8Array(4);
    viewOf(count).setUint32(0, nb);
    await img.storage.write(count, HEADER_NB_SNAPSHOTS);
    await img.storage.flush();
    res.corruptionsFixed += reduced;
    res.corruptions -= reduced;
  }

  if (img.header.version >= 3) {
    snapshots.forEach((sn, i) => {
      if (sn.extraDataSize < 16) {
        res.corruptions++;
        ctx.reporter.line(`${fix.errors ? 'Repairing' : 'ERROR'} snapshot table entry ${i} is incomplete`);
      }
    });
  }
}
