/**
 * The in-memory refcount table a check builds (QEMU's "IMRT"): one refcount per host cluster,
 * stored exactly like the concatenation of all refcount blocks of the image's refcount width,
 * so that a rebuild can write slices of it to disk as refcount blocks.
 */
import { getRefcount, refcountMax, setRefcount } from '../../format/qcow2/refcount-codec.js';
import { CheckAbort } from './check-types.js';

/** Default cap on the array's memory: a 32 TiB image with 64 KiB clusters and 16-bit refcounts. */
export const DEFAULT_MAX_REFCOUNT_ARRAY_BYTES = 1 << 30;

/**
 * A growable array of refcounts. `size` is the number of clusters it describes (QEMU's
 * nb_clusters); storage beyond `size` is kept zero.
 *
 * @example
 * ```ts
 * const imrt = new RefcountArray(4, 65536, 16);
 * imrt.set(3, imrt.get(3) + 1);
 * ```
 */
export class RefcountArray {
  readonly order: number;
  readonly clusterSize: number;
  readonly max: number;
  readonly #maxBytes: number;
  #bytes: Uint8Array;
  #size = 0;

  constructor(order: number, clusterSize: number, size: number, maxBytes = DEFAULT_MAX_REFCOUNT_ARRAY_BYTES) {
    this.order = order;
    this.clusterSize = clusterSize;
    this.max = refcountMax(order);
    this.#maxBytes = maxBytes;
    this.#bytes = new Uint8Array(0);
    this.resize(size);
  }

  /** Clusters described. */
  get size(): number {
    return this.#size;
  }

  /** Entries per cluster of array bytes (= entries per refcount block). */
  get entriesPerCluster(): number {
    return (this.clusterSize * 8) >>> this.order;
  }

  /** QEMU's refcount_array_byte_size: whole clusters of entries. */
  byteSizeFor(entries: number): number {
    const bytes = Math.ceil((entries * 2 ** this.order) / 8);
    return Math.ceil(bytes / this.clusterSize) * this.clusterSize;
  }

  /**
   * Describe `size` clusters (never shrinks the storage). Fails like QEMU's g_try_realloc with
   * ENOMEM when the array would exceed its memory cap.
   */
  resize(size: number): void {
    const needed = this.byteSizeFor(size);
    if (needed > this.#bytes.byteLength) {
      if (!Number.isSafeInteger(size) || needed > this.#maxBytes) throw new CheckAbort('ENOMEM');
      // Grow geometrically: a rebuild appends clusters one at a time.
      const capacity = Math.min(this.#maxBytes, Math.max(needed, this.byteSizeFor(Math.ceil(this.#size * 1.5))));
      let next: Uint8Array;
      try {
        next = new Uint8Array(capacity);
      } catch {
        throw new CheckAbort('ENOMEM');
      }
      next.set(this.#bytes);
      this.#bytes = next;
    }
    this.#size = size;
  }

  get(cluster: number): number {
    return getRefcount(this.#bytes, cluster, this.order);
  }

  set(cluster: number, value: number): void {
    setRefcount(this.#bytes, cluster, this.order, value);
  }

  /** All refcounts back to zero (size kept). */
  clear(): void {
    this.#bytes.fill(0);
  }

  /**
   * The bytes of refcount block `index` (a view): what a rebuilt refblock holds. Storage is
   * grown to cover the whole block if needed.
   */
  block(index: number): Uint8Array {
    const start = index * this.clusterSize;
    if (start + this.clusterSize > this.#bytes.byteLength) {
      const size = this.#size;
      this.resize((index + 1) * this.entriesPerCluster);
      this.#size = size;
    }
    return this.#bytes.subarray(start, start + this.clusterSize);
  }
}
