/**
 * compat=1.1 on a v2 image (QEMU's qcow2_upgrade): snapshot entries get the extra data v3
 * requires (VM state size and disk size), then the header becomes a v3 header with QEMU's
 * header length and feature name table.
 */
import { Qcow2Error } from '../../errors.js';
import { EMPTY_FEATURES } from '../../format/qcow2/features.js';
import type { Qcow2Driver } from '../../format/qcow2/qcow2-driver.js';
import { V3_MIN_SNAPSHOT_EXTRA_DATA } from '../../format/qcow2/snapshot-table.js';
import { updateHeaderLocked } from './update-header.js';

/**
 * Upgrade an open, writable v2 image to v3. `progress(done, total)` is called at QEMU's points.
 *
 * @example
 * ```ts
 * await upgradeToV3(image.driver as Qcow2Driver, (d, t) => console.log(d, t));
 * ```
 */
export async function upgradeToV3(driver: Qcow2Driver, progress: (done: number, total: number) => void): Promise<void> {
  const s = driver.state;
  const w = driver.writer;
  if (w === undefined || driver.snapshots === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
  const h = s.meta.header;
  if (h.version !== 2) return;
  progress(0, 2);
  await s.lock.run(async () => {
    if (s.meta.snapshots.some((sn) => sn.extraData.byteLength < V3_MIN_SNAPSHOT_EXTRA_DATA)) {
      // QEMU reads a v2 entry without these fields as "taken at the current size, no icount".
      const entries = s.meta.snapshots.map((sn) => ({ ...sn, diskSize: sn.diskSize ?? h.size, icount: sn.icount ?? -1 }));
      await driver.snapshots!.rewriteTableLocked(entries);
    }
  });
  progress(1, 2);
  await s.lock.run(async () => {
    h.version = 3;
    h.incompatibleFeatures = { ...EMPTY_FEATURES };
    h.compatibleFeatures = { ...EMPTY_FEATURES };
    h.autoclearFeatures = { ...EMPTY_FEATURES };
    h.refcountOrder = 4;
    h.compressionType = 0;
    try {
      await updateHeaderLocked(s, w);
    } catch (e) {
      h.version = 2;
      throw e;
    }
  });
  progress(2, 2);
}
