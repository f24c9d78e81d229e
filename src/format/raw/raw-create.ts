/**
 * New raw images, as qemu-img 7.2 makes them (file-posix's raw_co_create): the size rounded
 * up to 512 bytes, then `off` sets the length and writes the first block (QEMU does, to make
 * later alignment probing cheap), `falloc` reserves the space and `full` writes zeros.
 * Browser-safe: only the Storage interface is used.
 */
import type { Storage } from '../../storage/storage.js';

/** Preallocation modes a raw image supports. */
export type RawPreallocation = 'off' | 'falloc' | 'full';

/** What creating a raw image does to its file. */
export interface RawImagePlan {
  /** Final length: the requested size rounded up to 512. */
  readonly length: number;
  /** Ranges of explicit zeros (the first block for `off`, everything for `full`). */
  readonly zeroWrites: readonly { readonly offset: number; readonly length: number }[];
  /** `falloc`: the range to reserve (the Storage interface can only set the length). */
  readonly reserve: { readonly offset: number; readonly length: number } | undefined;
}

/** QEMU's MAX_BLOCKSIZE: the first block written for `off` when the file is at least this long. */
const FIRST_BLOCK = 4096;

/**
 * Plan a new raw image of `size` bytes.
 *
 * @example
 * ```ts
 * planRawImage(1000);          // { length: 1024, zeroWrites: [{ offset: 0, length: 512 }], reserve: undefined }
 * planRawImage(1 << 20, 'full'); // zeroWrites: [{ offset: 0, length: 1048576 }]
 * ```
 */
export function planRawImage(size: number, preallocation: RawPreallocation = 'off'): RawImagePlan {
  if (!Number.isFinite(size) || size < 0) throw new RangeError(`invalid image size ${size}`);
  const length = Math.ceil(size / 512) * 512;
  if (length === 0) return { length, zeroWrites: [], reserve: undefined };
  switch (preallocation) {
    case 'off':
      return { length, zeroWrites: [{ offset: 0, length: length < FIRST_BLOCK ? 512 : FIRST_BLOCK }], reserve: undefined };
    case 'full':
      return { length, zeroWrites: [{ offset: 0, length }], reserve: undefined };
    case 'falloc':
      return { length, zeroWrites: [], reserve: { offset: 0, length } };
  }
}

const ZERO_CHUNK = 1 << 20;

/**
 * Apply a plan to an empty storage: set the length, then write the planned zeros (1 MiB at a
 * time, so memory stays bounded for any size).
 *
 * @example
 * ```ts
 * await writeRawImage(planRawImage(64 << 20, 'full'), await NodeFileStorage.open('disk.raw', { create: true, truncate: true }));
 * ```
 */
export async function writeRawImage(plan: RawImagePlan, storage: Storage): Promise<void> {
  await storage.resize(plan.length);
  for (const z of plan.zeroWrites) {
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, z.length));
    for (let done = 0; done < z.length; done += zeros.byteLength) {
      const n = Math.min(zeros.byteLength, z.length - done);
      await storage.write(n === zeros.byteLength ? zeros : zeros.subarray(0, n), z.offset + done);
    }
  }
}
