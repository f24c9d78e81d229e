/**
 * QEMU's qcow2_inc_refcounts_imrt: count one reference to every cluster a byte range touches,
 * in the in-memory refcount array. A range reaching a cluster or more past the end of the file
 * is reported as a corruption and not counted, which also bounds the array by the file size
 * (iotest 138: an entry pointing at 32 PB must not make the check allocate for 32 PB).
 */
import type { CheckContext } from './check-context.js';
import { CheckAbort, type CheckResult } from './check-types.js';
import type { RefcountArray } from './refcount-array.js';

/**
 * @param offset Start of the range (may be inexact above 2^53: such ranges are past any file).
 * @param offsetHex Exact hexadecimal text of `offset` when it is above 2^53.
 *
 * @example
 * ```ts
 * countReferences(ctx, res, imrt, header.l1TableOffset, header.l1Size * 8);
 * ```
 */
export function countReferences(ctx: CheckContext, res: CheckResult, imrt: RefcountArray, offset: number, size: number, offsetHex?: string): void {
  if (size <= 0) return;
  const cs = ctx.img.clusterSize;
  const fileLength = ctx.img.fileSize;
  if (!Number.isSafeInteger(offset + size) || offset + size - fileLength >= cs) {
    ctx.reporter.line(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${offsetHex ?? offset.toString(16)} size 0x${size.toString(16)}`);
    res.corruptions++;
    return;
  }
  const first = Math.floor(offset / cs);
  const last = Math.floor((offset + size - 1) / cs);
  for (let k = first; k <= last; k++) {
    if (k >= imrt.size) {
      try {
        imrt.resize(k + 1);
      } catch (e) {
        if (e instanceof CheckAbort) res.checkErrors++;
        throw e;
      }
    }
    const refcount = imrt.get(k);
    if (refcount === imrt.max) {
      ctx.reporter.line(`ERROR: overflow cluster offset=0x${(k * cs).toString(16)}`);
      ctx.reporter.line('Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing');
      res.corruptions++;
      continue;
    }
    imrt.set(k, refcount + 1);
  }
}
