/**
 * QEMU's compare_refcounts: compare the refcount each cluster has on disk with the references
 * counted in memory. On-disk above counted is a leak, below is a corruption; a zero on disk for
 * a used cluster means the refcount structure itself must be rebuilt. Fixes what `fix` allows
 * by setting the on-disk refcount to the counted one.
 */
import type { CheckContext } from './check-context.js';
import { decodeRefblock, diskRefcountText } from './ondisk-refcounts.js';
import type { RebuildFlag } from './check-refblocks.js';
import { ERRNO_TEXT, type CheckResult, type FixMode } from './check-types.js';
import type { RefcountArray } from './refcount-array.js';
import { FreedClusters } from './freed-clusters.js';

/** Returns the highest cluster index in use on disk or in memory (QEMU's highest_cluster). */
export async function compareRefcounts(ctx: CheckContext, res: CheckResult, fix: FixMode, flag: RebuildFlag, imrt: RefcountArray): Promise<number> {
  const img = ctx.img;
  const per = img.refblockEntries;
  const order = img.refcountOrder;
  const nb = imrt.size;
  let highest = 0;
  // QEMU discards a cluster whose refcount a leak repair brings to 0 (the file then reads
  // zeros there); runs of such clusters are zeroed in one write.
  const freed = new FreedClusters(ctx);
  for (let start = 0; start < nb; start += per) {
    const block = await ctx.disk.lookup(start / per);
    const values = block.kind === 'block' ? decodeRefblock(block.bytes, order) : undefined;
    const end = Math.min(nb, start + per);
    for (let i = start; i < end; i++) {
      if (block.kind === 'error') {
        ctx.reporter.line(`Can't get refcount for cluster ${i}: ${ERRNO_TEXT[block.errno]}`);
        res.checkErrors++;
        continue;
      }
      const onDisk = values === undefined ? 0 : values[i - start]!;
      const counted = imrt.get(i);
      if (onDisk > 0 || counted > 0) highest = i;
      if (onDisk === counted) continue;
      let fixes: 'leaks' | 'corruptions' | undefined;
      if (onDisk === 0) flag.rebuild = true;
      else if (onDisk > counted && fix.leaks) fixes = 'leaks';
      else if (onDisk < counted && fix.errors) fixes = 'corruptions';
      const what = fixes !== undefined ? 'Repairing' : onDisk < counted ? 'ERROR' : 'Leaked';
      const onDiskText = block.kind === 'block' ? diskRefcountText(block.bytes, i - start, order) : '0';
      ctx.reporter.line(`${what} cluster ${i} refcount=${onDiskText} reference=${counted}`);
      if (fixes !== undefined) {
        await ctx.disk.set(i, counted);
        if (fixes === 'leaks' && counted === 0) await freed.add(i);
        if (fixes === 'leaks') res.leaksFixed++;
        else res.corruptionsFixed++;
        continue;
      }
      if (onDisk < counted) res.corruptions++;
      else res.leaks++;
    }
  }
  await freed.flush();
  return highest;
}
