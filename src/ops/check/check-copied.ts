/**
 * QEMU's check_oflag_copied: the COPIED flag of active L1 and L2 entries must say exactly
 * whether the refcount (now repaired, if repairs were allowed) is 1. `-r all` always fixes the
 * flags; `-r leaks` only when the check found nothing else wrong, so that a flag is never
 * derived from a refcount that may still be wrong.
 */
import { viewOf } from '../../util/bytes.js';
import { entryOffset } from '../../format/qcow2/table-entries.js';
import type { CheckContext } from './check-context.js';
import { ClusterType, clusterType, isZeroEntry } from './check-l1-l2.js';
import { CheckAbort, type CheckResult, type FixMode } from './check-types.js';
import { findOverlap, guardRepairWrite } from './repair-overlap.js';
import { hex64 } from './snapshot-entry.js';

const COPIED = 0x80000000;

export async function checkOflagCopied(ctx: CheckContext, res: CheckResult, fix: FixMode): Promise<void> {
  const img = ctx.img;
  const cs = img.clusterSize;
  const repair = fix.errors || (fix.leaks && res.checkErrors === 0 && res.corruptions === 0 && res.leaks === 0);
  const word = repair ? 'Repairing' : 'ERROR';
  const l1 = viewOf(img.l1);
  const table = new Uint8Array(cs);
  const v = viewOf(table);
  const words = new Uint32Array(table.buffer);
  const wordsPerEntry = img.l2EntrySize >>> 2;
  let l1Fixes = 0;
  let l1First = 0;
  let l1End = 0;
  // L1 fixes are written in batches, but always before the next L2 table write, so the order
  // of writes is QEMU's. Each fixed entry passes QEMU's overlap check on its own when it is
  // fixed (a refusal stops the check there, as in QEMU); entries between them are rewritten
  // unchanged.
  const writeL1 = async (): Promise<void> => {
    if (l1Fixes === 0) return;
    await img.storage.write(img.l1.slice(l1First * 8, l1End * 8), img.l1Offset + l1First * 8);
    res.corruptions -= l1Fixes;
    res.corruptionsFixed += l1Fixes;
    l1Fixes = 0;
  };
  await walk();
  await writeL1();

  async function walk(): Promise<void> {
  for (let i = 0; i < img.l1Size; i++) {
    const [l1hi, l1lo] = img.l1Entry(i);
    const l2Offset = entryOffset(l1hi, l1lo);
    if (l2Offset === 0) continue;
    const l2Refcount = await ctx.disk.get(Math.floor(l2Offset / cs));
    // Failures were reported when the refcounts were compared.
    if (typeof l2Refcount !== 'number') continue;
    if ((l2Refcount === 1) !== ((l1hi & COPIED) !== 0)) {
      res.corruptions++;
      ctx.reporter.line(`${word} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex64(l1hi, l1lo)} refcount=${await ctx.disk.text(Math.floor(l2Offset / cs))}`);
      if (repair) {
        if (findOverlap(ctx, img.l1Offset + i * 8, 8, ['active L1 table']) !== undefined) {
          await writeL1();
          try {
            await guardRepairWrite(ctx, img.l1Offset + i * 8, 8, ['active L1 table']);
          } catch (e) {
            res.checkErrors++;
            throw e;
          }
        }
        // Fixed in memory here; the L1 table is written once after the walk (a hostile
        // image can have millions of entries to fix).
        l1.setUint32(i * 8, (l2Refcount === 1 ? l1hi | COPIED : l1hi & ~COPIED) >>> 0);
        if (l1Fixes === 0) l1First = i;
        l1End = i + 1;
        l1Fixes++;
      }
    }
    // An L2 table lying on the pending L1 fixes must see them, as it would in QEMU.
    if (l1Fixes > 0 && l2Offset < img.l1Offset + l1End * 8 && img.l1Offset + l1First * 8 < l2Offset + cs) await writeL1();
    // Past the end of the file the table reads as zeros, which need nothing; never read a
    // made-up offset.
    if (l2Offset >= img.fileSize) continue;
    await img.storage.read(table, l2Offset);
    let dirty = 0;
    for (let j = 0; j < img.l2Entries; j++) {
      if (isZeroEntry(words, j * wordsPerEntry, wordsPerEntry)) continue;
      const at = j * img.l2EntrySize;
      const hi = v.getUint32(at);
      const lo = v.getUint32(at + 4);
      const type = clusterType(hi, lo, img.extendedL2, img.hasDataFile);
      if (type !== ClusterType.Normal && type !== ClusterType.ZeroAlloc) continue;
      let refcount: number;
      const dataCluster = Math.floor(entryOffset(hi, lo) / cs);
      if (img.hasDataFile) {
        refcount = 1;
      } else {
        const r = await ctx.disk.get(dataCluster);
        if (typeof r !== 'number') continue;
        refcount = r;
      }
      if ((refcount === 1) !== ((hi & COPIED) !== 0)) {
        res.corruptions++;
        const text = img.hasDataFile ? '1' : await ctx.disk.text(dataCluster);
        ctx.reporter.line(`${word} OFLAG_COPIED data cluster: l2_entry=${hex64(hi, lo)} refcount=${text}`);
        if (repair) {
          v.setUint32(at, (refcount === 1 ? hi | COPIED : hi & ~COPIED) >>> 0);
          dirty++;
        }
      }
    }
    if (dirty > 0) {
      await writeL1();
      try {
        await guardRepairWrite(ctx, l2Offset, cs, ['active L2 table']);
      } catch (e) {
        if (e instanceof CheckAbort) ctx.reporter.line(`ERROR: Could not write L2 table; metadata overlap check failed: ${e.errnoText}`);
        res.checkErrors++;
        throw e;
      }
      await img.storage.write(table, l2Offset);
      res.corruptions -= dirty;
      res.corruptionsFixed += dirty;
    }
  }
}
}
