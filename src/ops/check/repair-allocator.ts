/**
 * Cluster allocation for repairs that must write new metadata (the snapshot table), working on
 * the on-disk refcounts once the check has made them right: first fit from the start of the
 * image, as QEMU's allocator does after opening an image. A missing refcount block is created
 * (describing itself when it falls into its own range); a refcount table too small to reach
 * the clusters is not grown here and fails the repair with EFBIG.
 */
import { viewOf, writeU64 } from '../../util/bytes.js';
import { setRefcount } from '../../format/qcow2/refcount-codec.js';
import type { CheckContext } from './check-context.js';
import { FreedClusters } from './freed-clusters.js';
import { CheckAbort, ERRNO_TEXT } from './check-types.js';

/** QEMU's QCOW_MAX_REFTABLE_SIZE (8 MiB) in entries: a table cannot grow past it. */
const MAX_REFTABLE_ENTRIES = (8 * 1024 * 1024) / 8;
import { guardRepairWrite, refcountTableChanged } from './repair-overlap.js';

export class RepairAllocator {
  readonly #ctx: CheckContext;

  constructor(ctx: CheckContext) {
    this.#ctx = ctx;
  }

  /**
   * Allocate clusters for `bytes` bytes (refcount 1 each) and return the offset.
   *
   * @example
   * ```ts
   * const offset = await new RepairAllocator(ctx).allocate(tableBytes.byteLength);
   * ```
   */
  async allocate(bytes: number): Promise<number> {
    const ctx = this.#ctx;
    const cs = ctx.img.clusterSize;
    const per = ctx.img.refblockEntries;
    const count = Math.max(1, Math.ceil(bytes / cs));
    for (;;) {
      const start = await this.#findFree(count);
      let created = false;
      for (let idx = Math.floor(start / per); idx <= Math.floor((start + count - 1) / per) && !created; idx++) {
        const found = await ctx.disk.lookup(idx);
        if (found.kind === 'error') throw new CheckAbort(found.errno);
        if (found.kind === 'none') {
          await this.#createRefblock(idx);
          created = true; // the new block may have taken a cluster of the run: search again
        }
      }
      if (created) continue;
      for (let c = start; c < start + count; c++) await ctx.disk.set(c, 1);
      await ctx.disk.flush();
      return start * cs;
    }
  }

  /** Drop one reference from each cluster of `[offset, offset + bytes)`. */
  async free(offset: number, bytes: number): Promise<void> {
    if (bytes <= 0) return;
    const ctx = this.#ctx;
    const cs = ctx.img.clusterSize;
    const freed = new FreedClusters(ctx);
    for (let c = Math.floor(offset / cs); c <= Math.floor((offset + bytes - 1) / cs); c++) {
      const tableIndex = Math.floor(c / ctx.img.refblockEntries);
      if (tableIndex >= MAX_REFTABLE_ENTRIES) {
        // QEMU first allocates (and zeroes) a refcount block for the cluster, then fails to
        // grow the refcount table that far: the new block stays allocated, a leak.
        const block = await this.allocate(cs);
        await guardRepairWrite(ctx, block, cs, ['refcount block']);
        await ctx.img.storage.write(new Uint8Array(cs), block);
        await ctx.img.refreshFileSize();
        ctx.reporter.line(`qcow2_free_clusters failed: ${ERRNO_TEXT.EFBIG}`);
        return;
      }
      const r = await ctx.disk.get(c);
      if (typeof r !== 'number') throw new CheckAbort(r);
      // 0: QEMU refuses to go negative; a 64-bit refcount of 2^53 or more cannot be decremented exactly here.
      if (r === 0 || !Number.isFinite(r)) {
        ctx.reporter.line('qcow2_free_clusters failed: Invalid argument');
        return;
      }
      await ctx.disk.set(c, r - 1);
      if (r === 1) await freed.add(c);
    }
    await ctx.disk.flush();
    await freed.flush();
  }

  async #findFree(count: number): Promise<number> {
    const ctx = this.#ctx;
    let run = 0;
    for (let c = 0; ; c++) {
      const r = await ctx.disk.get(c);
      if (typeof r !== 'number') throw new CheckAbort(r);
      run = r === 0 ? run + 1 : 0;
      if (run === count) return c - count + 1;
    }
  }

  /** Create refcount block `idx`, whose reftable entry is empty. */
  async #createRefblock(idx: number): Promise<void> {
    const ctx = this.#ctx;
    const img = ctx.img;
    const cs = img.clusterSize;
    const per = img.refblockEntries;
    if (idx >= img.reftableEntries) throw new CheckAbort('EFBIG');
    const at = await this.#findFree(1);
    const atIdx = Math.floor(at / per);
    const block = new Uint8Array(cs);
    if (atIdx === idx) {
      setRefcount(block, at % per, img.refcountOrder, 1); // the block describes itself
    } else {
      const holder = await ctx.disk.lookup(atIdx);
      if (holder.kind === 'error') throw new CheckAbort(holder.errno);
      if (holder.kind === 'none') {
        await this.#createRefblock(atIdx);
        return this.#createRefblock(idx);
      }
      await ctx.disk.set(at, 1);
      await ctx.disk.flush();
    }
    await guardRepairWrite(ctx, at * cs, cs, ['refcount block']);
    await img.storage.write(block, at * cs);
    await img.storage.flush();
    const entry = new Uint8Array(8);
    writeU64(viewOf(entry), 0, at * cs);
    await img.storage.write(entry, img.reftableOffset + idx * 8);
    await img.storage.flush();
    img.reftable.set(entry, idx * 8);
    refcountTableChanged(img);
    ctx.disk.adopt(at * cs, block);
  }
}
