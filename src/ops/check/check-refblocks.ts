/**
 * QEMU's check_refblocks: every refcount table entry must point at a cluster-aligned refcount
 * block inside the image that nothing else uses; each block is counted as a reference. Entries
 * that cannot be used ask for a rebuild of the refcount structure. With `-r all`, a refcount
 * block past the end of the file is fixed by growing the file over it, as QEMU does, within a
 * sane bound (QEMU would create a sparse file of any size an entry names).
 */
import type { CheckContext } from './check-context.js';
import { countReferences } from './count-references.js';
import { CheckAbort, ERRNO_TEXT, type CheckResult, type Errno, type FixMode } from './check-types.js';
import type { RefcountArray } from './refcount-array.js';

/** Whether the refcount structure must be rebuilt; set by several steps of a check. */
export interface RebuildFlag {
  rebuild: boolean;
}

const TWO_32 = 2 ** 32;
/** High half of INT64_MAX. */
const INT64_MAX_HI = 0x7fffffff;
/** Growing the file to reach a refcount block: at most to twice its size plus this. */
const MAX_GROWTH_SLACK = 1 << 30;

export async function checkRefblocks(ctx: CheckContext, res: CheckResult, fix: FixMode, flag: RebuildFlag, imrt: RefcountArray): Promise<void> {
  const img = ctx.img;
  const cs = img.clusterSize;
  const report = (text: string): void => ctx.reporter.line(text);
  for (let i = 0; i < img.reftableEntries; i++) {
    const [hi, lo] = img.reftableEntry(i);
    if ((lo & 0x1ff) !== 0) {
      report(`ERROR refcount table entry ${i} has reserved bits set`);
      res.corruptions++;
      flag.rebuild = true;
      continue;
    }
    if (lo % cs !== 0) {
      report(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      res.corruptions++;
      flag.rebuild = true;
      continue;
    }
    const offset = hi * TWO_32 + lo; // inexact only above 2^53, far outside any image
    const cluster = Math.floor(offset / cs);
    if (cluster >= imrt.size) {
      res.corruptions++;
      report(`${fix.errors ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
      if (fix.errors) {
        const failed = await growOverRefblock(ctx, imrt, hi, offset, cluster, res);
        if (failed === undefined) {
          res.corruptions--;
          res.corruptionsFixed++;
          countReferences(ctx, res, imrt, offset, cs);
          // Freshly allocated and zeroed: its refcount can only be 1 now.
          continue;
        }
        flag.rebuild = true;
        report(`ERROR could not resize image: ${ERRNO_TEXT[failed]}`);
      }
      continue;
    }
    if (offset !== 0) {
      countReferences(ctx, res, imrt, offset, cs);
      const refcount = imrt.get(cluster);
      if (refcount !== 1) {
        report(`ERROR refcount block ${i} refcount=${refcount}`);
        res.corruptions++;
        flag.rebuild = true;
      }
    }
  }
}

/** Grow the file to end right after the refcount block. Returns the errno on failure. */
async function growOverRefblock(ctx: CheckContext, imrt: RefcountArray, hi: number, offset: number, cluster: number, res: CheckResult): Promise<Errno | undefined> {
  const img = ctx.img;
  const cs = img.clusterSize;
  // QEMU: offset > INT64_MAX - cluster_size is EINVAL (the last 4 GiB below 2^63 count as such).
  if (hi >= INT64_MAX_HI) return 'EINVAL';
  const size = img.fileSize;
  if (!Number.isSafeInteger(offset + cs) || offset + cs > 2 * size + MAX_GROWTH_SLACK) return 'EFBIG';
  await img.storage.resize(offset + cs);
  const newSize = await img.refreshFileSize();
  const newClusters = Math.ceil(newSize / cs);
  try {
    imrt.resize(Math.max(newClusters, imrt.size));
  } catch (e) {
    if (e instanceof CheckAbort) res.checkErrors++;
    throw e;
  }
  if (cluster >= imrt.size) return 'EINVAL';
  return undefined;
}
