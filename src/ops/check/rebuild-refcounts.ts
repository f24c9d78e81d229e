/**
 * QEMU's rebuild_refcount_structure: write a whole new refcount structure from the in-memory
 * refcount array, for when the on-disk one cannot be repaired in place (missing refcount
 * table, refcount blocks unaligned, outside the image or shared). New refcount blocks and the
 * new table go into clusters the array says are free (first fit, as QEMU allocates them, so
 * the resulting layout matches qemu-img's), so no data is overwritten. Crash safety: the new
 * blocks and table are written and flushed before the header is switched to them; until then
 * the old structure stays in charge. The old structure is leaked and freed by the caller's
 * second pass, as in QEMU.
 */
import { viewOf, writeU64 } from '../../util/bytes.js';
import type { CheckContext } from './check-context.js';
import { HEADER_REFTABLE_OFFSET } from './check-image.js';
import { CheckAbort } from './check-types.js';
import type { RefcountArray } from './refcount-array.js';
import { guardRepairWrite, type MetadataKind } from './repair-overlap.js';

/**
 * The old refcount blocks are being replaced: writing over one the counted references do not
 * name (an entry with reserved bits or unaligned) is harmless. QEMU 7.2 refuses those writes
 * and cannot repair such images.
 */
const REBUILD_IGNORES: readonly MetadataKind[] = ['refcount block'];

/** Run a rebuild step; failures carry QEMU's message for that step. */
async function step<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CheckAbort) throw new CheckAbort(e.errno, what);
    throw e;
  }
}

/** The reftable being built: refcount block offsets by index (0 = none). */
interface NewReftable {
  entries: number[];
}

/**
 * QEMU's alloc_clusters_imrt: find `count` contiguous free clusters from `cursor.first`
 * (growing the array past the image end if needed), mark them used, return the offset.
 * `cursor.first` moves to the first free cluster seen.
 */
export function allocClustersImrt(imrt: RefcountArray, count: number, cursor: { first: number }): number {
  let cluster = cursor.first;
  let contiguous = 0;
  let firstGap = true;
  for (; cluster < imrt.size && contiguous < count; cluster++) {
    if (imrt.get(cluster) === 0) {
      contiguous++;
      if (firstGap) {
        cursor.first = cluster;
        firstGap = false;
      }
    } else if (contiguous > 0) {
      contiguous = 0;
    }
  }
  if (contiguous < count) imrt.resize(cluster + count - contiguous);
  cluster -= contiguous;
  for (let i = 0; i < count; i++) imrt.set(cluster + i, 1);
  return cluster * imrt.clusterSize;
}

/**
 * QEMU's rebuild_refcounts_write_refblocks: for every refcount block range in
 * [first, end) holding a used cluster, allocate (if not yet) and write its refcount block.
 * Returns true when the reftable had to grow.
 */
async function writeRefblocks(ctx: CheckContext, imrt: RefcountArray, first: number, end: number, table: NewReftable): Promise<boolean> {
  const cs = ctx.img.clusterSize;
  const per = imrt.entriesPerCluster;
  const cursor = { first: 0 };
  let grown = false;
  for (let cluster = first; cluster < end; cluster++) {
    if (imrt.get(cluster) === 0) continue;
    const index = Math.floor(cluster / per);
    const blockStart = index * per;
    let offset = table.entries[index] ?? 0;
    if (offset === 0) {
      // Never put a refcount block into a range whose block is already written.
      if (cursor.first < blockStart) cursor.first = blockStart;
      offset = await step('ERROR allocating refblock', () => allocClustersImrt(imrt, 1, cursor));
      const at = offset / cs;
      if (at >= end) end = at + 1; // the block holding this block's refcount must be written too
      if (table.entries.length <= index) {
        const entries = Math.ceil(((index + 1) * 8) / cs) * (cs / 8);
        while (table.entries.length < entries) table.entries.push(0);
        grown = true;
      }
      table.entries[index] = offset;
    }
    await step('ERROR writing refblock', async () => {
      await guardRepairWrite(ctx, offset, cs, REBUILD_IGNORES);
      await ctx.img.storage.write(imrt.block(index), offset);
    });
    cluster = blockStart + per - 1;
  }
  return grown;
}

/**
 * Rebuild the refcount structure. `imrt` must hold the counted references; it is updated with
 * the clusters the new structure takes.
 */
export async function rebuildRefcountStructure(ctx: CheckContext, imrt: RefcountArray): Promise<void> {
  const img = ctx.img;
  const cs = img.clusterSize;
  await ctx.disk.flush();
  ctx.disk.clear();
  const table: NewReftable = { entries: [] };
  await writeRefblocks(ctx, imrt, 0, imrt.size, table);
  let reftableOffset: number;
  let reftableClusters: number;
  let grown: boolean;
  // Placing the table takes clusters, which may need new refcount blocks, which may grow the table.
  do {
    reftableClusters = Math.ceil((table.entries.length * 8) / cs);
    reftableOffset = await step('ERROR allocating reftable', () => allocClustersImrt(imrt, reftableClusters, { first: 0 }));
    const start = reftableOffset / cs;
    grown = await writeRefblocks(ctx, imrt, start, start + reftableClusters, table);
  } while (grown);

  const raw = new Uint8Array(table.entries.length * 8);
  const v = viewOf(raw);
  table.entries.forEach((offset, i) => writeU64(v, i * 8, offset));
  await step('ERROR writing reftable', async () => {
    await guardRepairWrite(ctx, reftableOffset, raw.byteLength, REBUILD_IGNORES);
    await img.storage.write(raw, reftableOffset);
  });
  await img.storage.flush();
  const pointer = new Uint8Array(12);
  const pv = viewOf(pointer);
  writeU64(pv, 0, reftableOffset);
  pv.setUint32(8, reftableClusters);
  await img.storage.write(pointer, HEADER_REFTABLE_OFFSET);
  await img.storage.flush();
  img.reftable = raw;
  img.reftableOffset = reftableOffset;
}
