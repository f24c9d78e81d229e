import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import { hasBit, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, COMPAT_LAZY_REFCOUNTS } from '../format/qcow2/features.js';
import type { Image } from '../image/image.js';
import { fullBackingFilename, qcow2FormatSpecific, snapshotInfoJson, type ImageInfoJson } from './format-info.js';

/**
 * Build what `qemu-img info --output=json` prints for one image (the top layer of `image`).
 * `filename` is the name as the user gave it, which qemu-img echoes and uses to resolve the
 * full backing file name.
 */
export async function imageInfo(image: Image, filename: string): Promise<ImageInfoJson> {
  const driver = image.driver;
  const actual = await driver.storage.allocatedSize?.();
  const info: ImageInfoJson = {
    filename,
    format: driver.format,
    'virtual-size': driver.size,
    ...(actual !== undefined ? { 'actual-size': actual } : {}),
    'dirty-flag': false,
  };
  if (!(driver instanceof Qcow2Driver)) return info;
  const { meta } = driver;
  const h = meta.header;
  info['cluster-size'] = meta.clusterSize;
  info['dirty-flag'] = hasBit(h.incompatibleFeatures, INCOMPAT_DIRTY);
  if (meta.backingName !== undefined && meta.backingName !== '') {
    info['backing-filename'] = meta.backingName;
    info['full-backing-filename'] = fullBackingFilename(filename, meta.backingName);
    if (meta.backingFormat !== undefined) info['backing-filename-format'] = meta.backingFormat;
  }
  if (meta.snapshots.length > 0) info.snapshots = meta.snapshots.map(snapshotInfoJson);
  info['format-specific'] = qcow2FormatSpecific({
    version: h.version,
    compressionType: h.compressionType === 1 ? 'zstd' : 'zlib',
    lazyRefcounts: hasBit(h.compatibleFeatures, COMPAT_LAZY_REFCOUNTS),
    refcountBits: 2 ** h.refcountOrder,
    corrupt: hasBit(h.incompatibleFeatures, INCOMPAT_CORRUPT),
    extendedL2: meta.extendedL2,
    ...(meta.dataFileName !== undefined ? { dataFileName: meta.dataFileName } : {}),
    hasDataFile: hasBit(h.incompatibleFeatures, INCOMPAT_DATA_FILE),
    dataFileRaw: meta.dataFileRaw,
    bitmaps: meta.bitmaps,
  });
  return info;
}
