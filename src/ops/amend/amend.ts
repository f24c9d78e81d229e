/**
 * `qemu-img amend` for qcow2 as a library call: QEMU 7.2's qcow2_amend_options, step by step
 * in its order (upgrade first, then the refcount width, external data file settings and a
 * header rewrite, backing file check, lazy refcounts, size, downgrade last). Like QEMU, a
 * failing step leaves the steps before it done.
 */
import { Qcow2Error } from '../../errors.js';
import {
  AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, hasBit, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, withBit,
} from '../../format/qcow2/features.js';
import { Qcow2Driver } from '../../format/qcow2/qcow2-driver.js';
import type { Image } from '../../image/image.js';
import { planAmend, type AmendPlan, type AmendRequest } from './amend-options.js';
import { AmendProgress, type AmendStatus } from './amend-progress.js';
import { changeRefcountWidth } from './change-refcount-width.js';
import { downgradeToV2 } from './downgrade.js';
import { updateHeaderLocked } from './update-header.js';
import { upgradeToV3 } from './upgrade.js';

export interface AmendOptions {
  /** QEMU's status callback: overall (offset, total) work. */
  status?: AmendStatus;
}

function invalid(message: string, hint?: string): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', message, hint === undefined ? {} : { hint });
}

/**
 * Amend the options of an image opened writable (top layer qcow2). Errors are Qcow2Error with
 * QEMU's message (and `context.hint` for its extra line).
 *
 * @example
 * ```ts
 * const image = await openImageFile('disk.qcow2', { readOnly: false });
 * await amendQcow2(image, { compat: '0.10' });
 * await image.close();
 * ```
 */
export async function amendQcow2(image: Image, req: AmendRequest, opts: AmendOptions = {}): Promise<void> {
  const driver = image.driver;
  if (!(driver instanceof Qcow2Driver)) {
    throw new Qcow2Error('UNSUPPORTED', `Format driver '${driver.format}' does not support option amendment`);
  }
  const s = driver.state;
  const w = driver.writer;
  if (w === undefined) throw new Qcow2Error('READ_ONLY', 'Image is opened read-only', {});
  const h = s.meta.header;
  const plan: AmendPlan = planAmend(req, {
    version: h.version,
    refcountBits: 2 ** h.refcountOrder,
    lazyRefcounts: h.version >= 3 && hasBit(h.compatibleFeatures, COMPAT_LAZY_REFCOUNTS),
    hasDataFile: hasBit(h.incompatibleFeatures, INCOMPAT_DATA_FILE),
    dataFileRaw: s.meta.dataFileRaw,
    encrypted: h.cryptMethod !== 0,
  });
  const progress = new AmendProgress(plan.totalOperations, opts.status ?? (() => undefined));
  const report = (done: number, total: number): void => progress.report(done, total);

  if (plan.newVersion > plan.oldVersion) {
    progress.operation('upgrade');
    await upgradeToV3(driver, report);
  }
  if (2 ** h.refcountOrder !== plan.refcountBits) {
    if (plan.newVersion < 3 && plan.refcountBits !== 16) {
      throw invalid('Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
    }
    progress.operation('refcount-width');
    await changeRefcountWidth(s, w, Math.log2(plan.refcountBits), report);
  }

  await s.lock.run(async () => {
    if (h.version >= 3) h.autoclearFeatures = withBit(h.autoclearFeatures, AUTOCLEAR_DATA_FILE_RAW, plan.dataFileRaw);
    s.meta.dataFileRaw = plan.dataFileRaw;
    if (plan.dataFile !== undefined) s.meta.dataFileName = plan.dataFile === '' ? undefined : plan.dataFile;
    await updateHeaderLocked(s, w);
  });

  if (plan.backing !== undefined) {
    const current = s.meta.backingName === '' ? undefined : s.meta.backingName;
    const currentFormat = current === undefined ? undefined : s.meta.backingFormat;
    if (plan.backing.file !== current || plan.backing.format !== currentFormat) {
      throw invalid('Cannot amend the backing file', "You can use 'qemu-img rebase' instead.");
    }
  }

  const lazyNow = h.version >= 3 && hasBit(h.compatibleFeatures, COMPAT_LAZY_REFCOUNTS);
  if (lazyNow !== plan.lazyRefcounts) {
    if (plan.lazyRefcounts && plan.newVersion < 3) {
      throw invalid('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');
    }
    await s.lock.run(async () => {
      // Turning them off: the refcounts on disk must be complete first (QEMU's qcow2_mark_clean).
      await w.flushLocked();
      if (!plan.lazyRefcounts) h.incompatibleFeatures = withBit(h.incompatibleFeatures, INCOMPAT_DIRTY, false);
      h.compatibleFeatures = withBit(h.compatibleFeatures, COMPAT_LAZY_REFCOUNTS, plan.lazyRefcounts);
      await updateHeaderLocked(s, w);
    });
  }

  if (plan.size !== 0) {
    if (plan.size % 512 !== 0) throw invalid('The new size must be a multiple of 512');
    await image.resize(plan.size);
    await image.flush();
  }

  if (plan.newVersion < plan.oldVersion) {
    progress.operation('downgrade');
    await downgradeToV2(driver, report);
  }
}
