/**
 * What QEMU does to a cluster whose refcount drops to 0 during a repair: it discards it
 * (QCOW2_DISCARD_ALWAYS for leak repairs, QCOW2_DISCARD_SNAPSHOT for the old snapshot table),
 * and on a file the discarded range then reads as zeros. Writing the zeros keeps the repaired
 * image identical in content, so that a later `qemu-img check` judges it as it judges the image
 * qemu-img repaired (a leaked snapshot table, say, then reads as empty entries in both).
 * Consecutive clusters are zeroed in one write.
 */
import type { CheckContext } from './check-context.js';

/** Largest single zero write. */
const MAX_RUN_BYTES = 4 * 1024 * 1024;

export class FreedClusters {
  readonly #ctx: Pick<CheckContext, 'img'>;
  #start = -1;
  #count = 0;

  constructor(ctx: Pick<CheckContext, 'img'>) {
    this.#ctx = ctx;
  }

  /**
   * Note that `cluster` was freed; zeroed by `flush` at the latest.
   *
   * @example
   * ```ts
   * const freed = new FreedClusters(ctx);
   * await freed.add(7);
   * await freed.flush();
   * ```
   */
  async add(cluster: number): Promise<void> {
    const cs = this.#ctx.img.clusterSize;
    if (this.#count > 0 && cluster === this.#start + this.#count && (this.#count + 1) * cs <= MAX_RUN_BYTES) {
      this.#count++;
      return;
    }
    await this.flush();
    this.#start = cluster;
    this.#count = 1;
  }

  async flush(): Promise<void> {
    const count = this.#count;
    if (count === 0) return;
    this.#count = 0;
    const img = this.#ctx.img;
    const offset = this.#start * img.clusterSize;
    if (img.stopped || offset >= img.fileSize) return;
    // Never grow the file: a discard past its end does nothing.
    const bytes = Math.min(count * img.clusterSize, img.fileSize - offset);
    await img.storage.write(new Uint8Array(bytes), offset);
  }
}
