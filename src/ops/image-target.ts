import type { Image } from '../image/image.js';
import type { ConvertTarget } from './convert-target.js';

/** Options for {@link createImageTarget}. */
export interface ImageTargetOptions {
  /** The image is new (or was emptied): unwritten ranges read as zeros. */
  zeroInitialized: boolean;
  /** `convert -c`: store whole clusters compressed. */
  compress?: boolean;
}

/**
 * A convert target that writes through the Image engine, so any writable format (qcow2 with
 * allocation, compression, backing files) can be the destination.
 *
 * @example
 * ```ts
 * const out = await openImageFile('out.qcow2', { readOnly: false });
 * await convertImage([src], createImageTarget(out, { zeroInitialized: true, compress: true }));
 * await out.close();
 * ```
 */
export function createImageTarget(image: Image, options: ImageTargetOptions): ConvertTarget {
  const cs = image.driver.clusterSize;
  return {
    size: image.size,
    zeroInitialized: options.zeroInitialized,
    // Allocation order then follows guest order, which keeps qcow2 output unfragmented.
    prefersInOrderWrites: true,
    async write(src, offset, placed) {
      if (!options.compress) return image.write(src, offset, { placed });
      // Compression works on whole clusters; partial edges (only possible at the disk's end
      // or with unaligned requests) are written normally.
      let pos = offset;
      const end = offset + src.byteLength;
      const head = Math.min(end, Math.ceil(pos / cs) * cs);
      if (head > pos) {
        await image.write(src.subarray(0, head - pos), pos);
        pos = head;
      }
      const whole = end === image.size ? end : Math.floor(end / cs) * cs;
      if (whole > pos) {
        // One cluster per call so that compression of the chunk's clusters runs in parallel.
        const jobs: Promise<void>[] = [];
        for (let p = pos; p < whole; p += cs) {
          jobs.push(image.writeCompressed(src.subarray(p - offset, Math.min(whole, p + cs) - offset), p));
        }
        await Promise.all(jobs);
        pos = whole;
      }
      if (end > pos) await image.write(src.subarray(pos - offset), pos);
    },
    writeZeroes: (offset, length) => image.writeZeroes(offset, length, { unmap: true }),
    flush: () => image.flush(),
  };
}
