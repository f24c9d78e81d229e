/**
 * The in-memory refcount table a check builds (QEMU's "IMRT"): one refcount per host cluster.
 * Counts live in a plain typed array (fast to update while walking millions of entries);
 * `block(i)` encodes the slice for refcount block `i` in the image's refcount width, which is
 * what a rebuild writes to disk.
 */
import { refcountMax } from '../../format/qcow2/refcount-codec.js';
import { viewOf } from '../../util/bytes.js';
import { CheckAbort } from './check-types.js';

/** Default cap on the array's memory: 512 Mi clusters (32 TiB of 64 KiB clusters) below 64-bit refcounts. */
export const DEFAULT_MAX_REFCOUNT_ARRAY_BYTES = 2 ** 31;

type Counts = Uint32Array | Float64Array;

/**
 * A growable array of refcounts. `size` is the number of clusters it describes (QEMU's
 * nb_clusters); entries beyond `size` stay zero.
 *
 * @example
 * ```ts
 * const imrt = new RefcountArray(4, 65536, 16);
 * imrt.set(3, imrt.get(3) + 1);
 * const refblock0 = imrt.block(0); // 65536 bytes of 16-bit big-endian refcounts
 * ```
 */
export class RefcountArray {
  readonly order: number;
  readonly clusterSize: number;
  readonly max: number;
  readonly #maxBytes: number;
  #counts: Counts;
  #size = 0;

  constructor(order: number, clusterSize: number, size: number, maxBytes = DEFAULT_MAX_REFCOUNT_ARRAY_BYTES) {
    this.order = order;
    this.clusterSize = clusterSize;
    this.max = refcountMax(order);
    this.#maxBytes = maxBytes;
    this.#counts = this.#allocate(0);
    this.resize(size);
  }

  /** Clusters described. */
  get size(): number {
    return this.#size;
  }

  /** Entries per refcount block. */
  get entriesPerCluster(): number {
    return (this.clusterSize * 8) >>> this.order;
  }

  /**
   * Describe `size` clusters (storage never shrinks). Fails like QEMU's g_try_realloc, with
   * ENOMEM, when the array would exceed its memory cap.
   */
  resize(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new CheckAbort('ENOMEM');
    if (size > this.#counts.length) {
      // Grow geometrically: a rebuild appends clusters one at a time. Whole refcount blocks.
      const per = this.entriesPerCluster;
      const wanted = Math.max(size, Math.floor(this.#size * 1.5));
      const next = this.#allocate(Math.ceil(wanted / per) * per);
      next.set(this.#counts);
      this.#counts = next;
    }
    this.#size = size;
  }

  get(cluster: number): number {
    return this.#counts[cluster] ?? 0;
  }

  set(cluster: number, value: number): void {
    if (cluster >= this.#counts.length) throw new RangeError(`cluster ${cluster} outside the refcount array`);
    this.#counts[cluster] = value;
  }

  /** All refcounts back to zero (size kept). */
  clear(): void {
    this.#counts.fill(0);
  }

  /**
   * Refcount block `index` encoded in the image's refcount width (sub-byte widths LSB first,
   * wider ones big-endian): what a rebuilt refcount block holds.
   */
  block(index: number): Uint8Array {
    const per = this.entriesPerCluster;
    const out = new Uint8Array(this.clusterSize);
    const v = viewOf(out);
    const bits = 2 ** this.order;
    const first = index * per;
    const last = Math.min(first + per, this.#counts.length);
    for (let c = first; c < last; c++) {
      const value = this.#counts[c]!;
      if (value === 0) continue;
      const i = c - first;
      switch (bits) {
        case 64: v.setUint32(i * 8, Math.floor(value / 2 ** 32)); v.setUint32(i * 8 + 4, value >>> 0); break;
        case 32: v.setUint32(i * 4, value); break;
        case 16: v.setUint16(i * 2, value); break;
        case 8: out[i] = value; break;
        default: {
          const at = (i * bits) >>> 3;
          out[at] = (out[at] ?? 0) | (value << ((i * bits) & 7));
        }
      }
    }
    return out;
  }

  #allocate(length: number): Counts {
    const bytesPer = this.order === 6 ? 8 : 4;
    if (length * bytesPer > this.#maxBytes) throw new CheckAbort('ENOMEM');
    try {
      return this.order === 6 ? new Float64Array(length) : new Uint32Array(length);
    } catch {
      throw new CheckAbort('ENOMEM');
    }
  }
}
