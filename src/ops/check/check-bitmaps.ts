/**
 * QEMU's qcow2_check_bitmaps_refcounts: count the bitmap directory, every bitmap table and
 * every bitmap data cluster. A directory or table QEMU cannot load is a corruption that stops
 * the check (QEMU returns -EINVAL).
 */
import { viewOf } from '../../util/bytes.js';
import { decodeBitmapDirectory, type BitmapDirectoryEntry } from '../../format/qcow2/bitmap-directory.js';
import { entryOffset } from '../../format/qcow2/table-entries.js';
import type { CheckContext } from './check-context.js';
import { countReferences } from './count-references.js';
import { CheckAbort, type CheckResult } from './check-types.js';
import type { RefcountArray } from './refcount-array.js';

export async function checkBitmapsRefcounts(ctx: CheckContext, res: CheckResult, imrt: RefcountArray): Promise<void> {
  const img = ctx.img;
  const ext = img.bitmaps;
  if (ext === undefined || ext.nbBitmaps === 0) return;
  countReferences(ctx, res, imrt, ext.directoryOffset, ext.directorySize);
  let bitmaps: BitmapDirectoryEntry[];
  try {
    const dir = new Uint8Array(ext.directorySize);
    await img.storage.read(dir, ext.directoryOffset);
    bitmaps = decodeBitmapDirectory(dir, { nbBitmaps: ext.nbBitmaps, clusterSize: img.clusterSize, diskSize: img.header.size });
  } catch (e) {
    if (e instanceof CheckAbort) throw e;
    res.corruptions++;
    throw new CheckAbort('EINVAL');
  }
  for (const bm of bitmaps) {
    countReferences(ctx, res, imrt, bm.tableOffset, bm.tableSize * 8);
    // decodeBitmapDirectory bounds tableSize: at most 512 MiB of bitmap data.
    const table = new Uint8Array(bm.tableSize * 8);
    await img.storage.read(table, bm.tableOffset);
    const v = viewOf(table);
    const offsets: number[] = [];
    for (let i = 0; i < bm.tableSize; i++) {
      const hi = v.getUint32(i * 8);
      const lo = v.getUint32(i * 8 + 4);
      const offset = entryOffset(hi, lo);
      // QEMU's check_table_entry: reserved bits clear; with an offset, aligned and no "all ones" flag.
      const bad = (hi & 0xff000000) !== 0 || (lo & 0x1fe) !== 0 || (offset !== 0 && ((lo & 1) !== 0 || offset % img.clusterSize !== 0));
      if (bad) {
        res.corruptions++;
        throw new CheckAbort('EINVAL');
      }
      if (offset !== 0) offsets.push(offset);
    }
    for (const offset of offsets) countReferences(ctx, res, imrt, offset, img.clusterSize);
  }
}
