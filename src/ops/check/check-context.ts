/**
 * What every step of a check shares: the image, where messages go, the on-disk refcounts,
 * and reads at 64-bit offsets taken from the image.
 */
import { TWO_32 } from '../../util/bytes.js';
import type { CheckImage } from './check-image.js';
import type { CheckReporter } from './check-types.js';
import type { OnDiskRefcounts } from './ondisk-refcounts.js';

export interface CheckContext {
  readonly img: CheckImage;
  readonly reporter: CheckReporter;
  readonly disk: OnDiskRefcounts;
  /** Memory cap of the in-memory refcount array. */
  readonly maxArrayBytes: number;
}

/**
 * Read `dst.byteLength` bytes at the 64-bit offset `hi:lo`, as QEMU's bdrv_pread on the image
 * file would: past the end of the file reads zeros, beyond QEMU's maximum request offset
 * (about 2^63) fails. Returns false on failure.
 */
export async function readAtU64(ctx: CheckContext, dst: Uint8Array, hi: number, lo: number): Promise<boolean> {
  if (hi >= 0x7fffffff) return false;
  if (hi > 0x1fffff || hi * TWO_32 + lo > Number.MAX_SAFE_INTEGER - dst.byteLength) {
    dst.fill(0); // far past the end of any file we can address
    return true;
  }
  await ctx.img.storage.read(dst, hi * TWO_32 + lo);
  return true;
}
