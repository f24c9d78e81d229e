/**
 * compat=0.10 on a v3 image (QEMU's qcow2_downgrade): refuse what v2 cannot express, make the
 * image clean, drop compatible and autoclear features, expand zero clusters, then write a v2
 * header. Persistent bitmaps cannot exist in v2: QEMU leaves them behind as stale, leaked
 * clusters; they are removed here instead, which reads the same but stays leak-free.
 */
import { Qcow2Error } from '../../errors.js';
import {
  EMPTY_FEATURES, featureHex, hasBit, INCOMPAT_COMPRESSION, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, isEmpty, withBit,
} from '../../format/qcow2/features.js';
import type { Qcow2Driver } from '../../format/qcow2/qcow2-driver.js';
import type { Qcow2State } from '../../format/qcow2/qcow2-state.js';
import { isCompressed } from '../../format/qcow2/table-entries.js';
import { entryOffset } from '../../format/qcow2/table-entries.js';
import { viewOf } from '../../util/bytes.js';
import { expandZeroClusters } from './expand-zero-clusters.js';
import { updateHeaderLocked } from './update-header.js';

function unsupported(message: string): Qcow2Error {
  return new Qcow2Error('UNSUPPORTED', message);
}

/**
 * Downgrade an open, writable v3 image to v2, with QEMU's checks and messages.
 *
 * @example
 * ```ts
 * await downgradeToV2(image.driver as Qcow2Driver, (done, total) => {});
 * // throws "compat=0.10 requires refcount_bits=16" on an image with 8-bit refcounts
 * ```
 */
export async function downgradeToV2(driver: Qcow2Driver, progress: (done: number, total: number) => void): Promise<void> {
  const s = driver.state;
  const w = driver.writer;
  if (w === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
  const h = s.meta.header;
  if (h.version !== 3) return;
  if (h.refcountOrder !== 4) throw unsupported('compat=0.10 requires refcount_bits=16');
  if (hasBit(h.incompatibleFeatures, INCOMPAT_DATA_FILE)) throw unsupported('Cannot downgrade an image with a data file');
  for (const sn of s.meta.snapshots) {
    if (sn.vmStateSize > 0xffffffff || (sn.diskSize ?? h.size) !== h.size) {
      throw unsupported('Internal snapshots prevent downgrade of image');
    }
  }
  if (hasBit(h.incompatibleFeatures, INCOMPAT_DIRTY)) {
    await s.lock.run(async () => {
      await w.flushLocked();
      h.incompatibleFeatures = withBit(h.incompatibleFeatures, INCOMPAT_DIRTY, false);
      await w.writeHeaderLocked();
      await s.storage.flush();
    });
  }
  const rest = withBit(h.incompatibleFeatures, INCOMPAT_COMPRESSION, false);
  if (!isEmpty(rest)) throw unsupported(`Cannot downgrade an image with incompatible features ${featureHex(rest)} set`);
  h.compatibleFeatures = { ...EMPTY_FEATURES };
  h.autoclearFeatures = { ...EMPTY_FEATURES };
  for (const b of driver.bitmaps.list()) await driver.bitmaps.remove(b.name);
  await expandZeroClusters(s, w, driver.backing !== undefined, progress);
  if (hasBit(h.incompatibleFeatures, INCOMPAT_COMPRESSION)) {
    if (await hasCompressedClusters(s)) {
      throw unsupported('Cannot downgrade an image with zstd compression type and existing compressed clusters');
    }
    h.incompatibleFeatures = withBit(h.incompatibleFeatures, INCOMPAT_COMPRESSION, false);
    h.compressionType = 0;
  }
  await s.lock.run(async () => {
    h.version = 2;
    try {
      await updateHeaderLocked(s, w);
    } catch (e) {
      h.version = 3;
      throw e;
    }
  });
}

/** Any compressed cluster in the active L2 tables (QEMU asks the active block status). */
async function hasCompressedClusters(s: Qcow2State): Promise<boolean> {
  for (let i = 0; i < s.l1Entries; i++) {
    const l2Offset = entryOffset(s.l1.getUint32(i * 8), s.l1.getUint32(i * 8 + 4));
    if (l2Offset === 0 || l2Offset % s.clusterSize !== 0) continue;
    const table = viewOf(await s.l2.get(l2Offset));
    for (let j = 0; j < s.meta.l2Entries; j++) if (isCompressed(table.getUint32(j * 8))) return true;
  }
  return false;
}
