/**
 * qemu-img dd: copy a byte range of an image into a new image. The arithmetic follows
 * qemu-img 7.2's img_dd exactly, quirks included: `count` limits the input from its start
 * (not from `skip`), so `skip=1 count=3` copies blocks 1 and 2. Browser-safe.
 */
import type { Image } from '../image/image.js';
import type { ImageReader } from '../image/types.js';

/** qemu-img dd's operands, as exact integers. */
export interface DdOperands {
  /** Block size in bytes (1 to 2^31 - 1; default 512). */
  blockSize: bigint;
  /** Number of input blocks, when given. */
  count?: bigint;
  /** Input blocks to skip, when given. */
  skip?: bigint;
}

/** What img_dd computes before copying. */
export interface DdPlan {
  /** Size of the output image to create. */
  outputSize: number;
  /** First input byte copied. */
  inputStart: number;
  /** End of the copied input range (exclusive). */
  inputEnd: number;
  /** `skip` is past the input (or its `count`): qemu-img warns and creates an empty image. */
  skipPastEnd: boolean;
}

const INT64_MAX = (1n << 63n) - 1n;

/**
 * img_dd's size arithmetic for an input of `inputSize` bytes.
 *
 * @example
 * ```ts
 * planDd(1n << 20n, { blockSize: 65536n, count: 5n, skip: 2n });
 * // { outputSize: 196608, inputStart: 131072, inputEnd: 327680, skipPastEnd: false }
 * ```
 */
export function planDd(inputSize: bigint, op: DdOperands): DdPlan {
  const bs = op.blockSize;
  let size = inputSize;
  if (op.count !== undefined && op.count <= INT64_MAX / bs && op.count * bs < size) size = op.count * bs;
  const skip = op.skip ?? 0n;
  if (op.skip !== undefined && (skip > INT64_MAX / bs || size < bs * skip)) {
    return { outputSize: 0, inputStart: Number(size), inputEnd: Number(size), skipPastEnd: true };
  }
  return { outputSize: Number(size - bs * skip), inputStart: Number(bs * skip), inputEnd: Number(size), skipPastEnd: false };
}

/** Largest request {@link ddCopy} issues (the result does not depend on it). */
const CHUNK = 4 << 20;

/**
 * Copy `[plan.inputStart, plan.inputEnd)` of `source` to offset 0 of `target`, as plain
 * data writes (zeros included, as qemu-img dd writes them).
 */
export async function ddCopy(source: ImageReader, target: Image, plan: DdPlan): Promise<void> {
  const buf = new Uint8Array(Math.max(0, Math.min(CHUNK, plan.inputEnd - plan.inputStart)));
  for (let pos = plan.inputStart; pos < plan.inputEnd; pos += buf.byteLength) {
    const piece = buf.subarray(0, Math.min(buf.byteLength, plan.inputEnd - pos));
    await source.read(piece, pos);
    await target.write(piece, pos - plan.inputStart);
  }
  await target.flush();
}
