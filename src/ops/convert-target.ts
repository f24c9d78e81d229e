import { Qcow2Error } from '../errors.js';
import type { Storage } from '../storage/storage.js';

/**
 * Where `convertImage` puts guest bytes. The raw target writes straight into a storage; a
 * qcow2 target allocates clusters as it goes and wants writes in ascending order.
 */
export interface ConvertTarget {
  /** Virtual size in bytes (at least the source size). */
  readonly size: number;
  /**
   * Ranges never written read as zeros (a freshly created or truncated target). Zero ranges
   * of the source are then skipped instead of written.
   */
  readonly zeroInitialized: boolean;
  /** Default write ordering when the caller does not choose (qemu-img's `-W` turns it off). */
  readonly prefersInOrderWrites: boolean;
  /**
   * Set when every write is stored compressed (`convert -c`): writes then cover whole
   * clusters of this size, and only clusters that are entirely zero are skipped, as qemu-img
   * does for compressed output.
   */
  readonly compressedClusterSize?: number;
  /**
   * Set when writing part of a cluster of this size stores the same bytes as writing the whole
   * cluster with the rest zero (a new qcow2 image without backing file or subclusters):
   * `convertImage` then writes clusters that hold data whole.
   */
  readonly wholeClusterSize?: number;
  /**
   * Write guest bytes at `offset`. A target that allocates may call `placed` once the write's
   * place is decided, before its data is written: in-order conversion then lets the next job
   * write (its allocations still come after this one's).
   */
  write(src: Uint8Array, offset: number, placed?: () => void): Promise<void>;
  /** Make `[offset, offset + length)` read as zeros. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Make the result durable (qemu-img convert's default cache mode skips this). */
  flush(): Promise<void>;
}

/** Shared read-only zero buffer for targets that must write zeros as data. */
let zeroBuffer: Uint8Array | undefined;
const ZERO_BUFFER_SIZE = 2 * 1024 * 1024;

function zeros(length: number): Uint8Array {
  zeroBuffer ??= new Uint8Array(ZERO_BUFFER_SIZE);
  return zeroBuffer.subarray(0, Math.min(length, ZERO_BUFFER_SIZE));
}

/** Options for {@link createRawTarget}. */
export interface RawTargetOptions {
  /** Guest size of the output. */
  size: number;
  /**
   * The storage was created or truncated for this conversion, so unwritten ranges read as
   * zeros. False for `convert -n` into an existing file.
   */
  zeroInitialized: boolean;
}

/**
 * A raw image target on `storage`: guest offset = storage offset. The caller sizes the
 * storage first (a truncate to the full size keeps zero ranges as holes).
 *
 * @example
 * ```ts
 * await storage.resize(size);
 * const target = createRawTarget(storage, { size, zeroInitialized: true });
 * await convertImage([source], target);
 * ```
 */
export function createRawTarget(storage: Storage, options: RawTargetOptions): ConvertTarget {
  if (storage.readOnly) throw new Qcow2Error('READ_ONLY', `${storage.name}: target is read-only`);
  return {
    size: options.size,
    zeroInitialized: options.zeroInitialized,
    prefersInOrderWrites: false,
    write: (src, offset) => storage.write(src, offset),
    async writeZeroes(offset, length) {
      if (storage.writeZeroes) return storage.writeZeroes(offset, length);
      let done = 0;
      while (done < length) {
        const piece = zeros(length - done);
        await storage.write(piece, offset + done);
        done += piece.length;
      }
    },
    flush: () => storage.flush(),
  };
}
