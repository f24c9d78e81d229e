import { Qcow2Error } from '../errors.js';
import type { ImageReader } from '../image/types.js';
import { ConcatSource } from './concat-source.js';
import { JobCutter, wrapConvertError, type Job } from './convert-jobs.js';
import type { ConvertTarget } from './convert-target.js';
import { OrderGate } from './order-gate.js';
import { allocatedRunMin, rangeIsZero, SECTOR, wordsOf } from './sector-scan.js';

/** Options for {@link convertImage}; the names follow qemu-img convert's flags. */
export interface ConvertOptions {
  /**
   * `-S`: zero runs inside data of at least this many bytes become holes (or zero writes).
   * A multiple of 512 up to 16 MiB; 0 writes every byte, zeros included. Default 4096.
   */
  minSparse?: number;
  /** `-m`: requests in flight, 1..16. Default 8. */
  parallel?: number;
  /** Keep writes in ascending order (`-W` turns this off). Default: what the target prefers. */
  inOrder?: boolean;
  /** Bytes per read request, a multiple of 512. Default 2 MiB, as qemu-img. */
  bufferSize?: number;
  /**
   * Called with the percentage done, computed as qemu-img does: share of the data bytes
   * (plus zero bytes when `minSparse` is 0) handed to a worker, in single precision.
   * Ends with 100 on success.
   */
  progress?: (percent: number) => void;
}

/** What a conversion did, for callers and tests. */
export interface ConvertResult {
  /** Guest bytes copied (size of the concatenated sources). */
  size: number;
  /** Bytes read from the sources. */
  bytesRead: number;
  /** Bytes written as data to the target. */
  bytesWritten: number;
  /** Bytes the target was asked to zero (only when it is not zero-initialized). */
  bytesZeroed: number;
}

/** qemu-img convert's limits. */
export const MAX_PARALLEL = 16;
export const MAX_MIN_SPARSE = 32768 * SECTOR;
const DEFAULT_BUFFER = 2 * 1024 * 1024;

/**
 * Copy the guest content of `sources` (concatenated, as `qemu-img convert a b out` does)
 * into `target`. Block status drives it: zero ranges are never read, and on a
 * zero-initialized target never written either; data is read in 2 MiB requests with several
 * in flight, and zero sectors inside data are skipped with qemu-img's `-S` rules. Memory is
 * bounded by `parallel` buffers.
 *
 * @example
 * ```ts
 * const src = await openImageFile('disk.qcow2', { readOnly: true });
 * const out = await NodeFileStorage.open('disk.raw', { create: true, truncate: true });
 * await out.resize(src.size);
 * await convertImage([src], createRawTarget(out, { size: src.size, zeroInitialized: true }));
 * ```
 */
export async function convertImage(
  sources: readonly ImageReader[] | ConcatSource,
  target: ConvertTarget,
  options: ConvertOptions = {},
): Promise<ConvertResult> {
  const source = sources instanceof ConcatSource ? sources : new ConcatSource(sources);
  const minSparse = options.minSparse ?? 4096;
  const parallel = options.parallel ?? 8;
  const bufferSize = options.bufferSize ?? DEFAULT_BUFFER;
  if (!Number.isInteger(minSparse) || minSparse < 0 || minSparse % SECTOR !== 0 || minSparse > MAX_MIN_SPARSE) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid sparse size ${minSparse}: a multiple of 512 up to ${MAX_MIN_SPARSE} is needed`);
  }
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > MAX_PARALLEL) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid number of parallel requests ${parallel}: 1 to ${MAX_PARALLEL} allowed`);
  }
  if (!Number.isInteger(bufferSize) || bufferSize < SECTOR || bufferSize % SECTOR !== 0 || bufferSize > MAX_MIN_SPARSE) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid buffer size ${bufferSize}`);
  }
  if (target.size < source.size) {
    throw new Qcow2Error('INVALID_ARGUMENT', 'output file is smaller than input file', { target: target.size, source: source.size });
  }
  const minSectors = minSparse / SECTOR;
  // qemu aligns zero/data splits to the sparse granularity (its target's request alignment is 1 sector).
  const alignment = Math.max(minSectors === 0 ? 1 : 2 ** Math.floor(Math.log2(minSectors)), 1);
  const zeroAsData = minSparse === 0;
  const cluster = target.compressedClusterSize ?? 0;
  if (cluster > 0 && (!Number.isInteger(cluster) || cluster % SECTOR !== 0 || bufferSize % cluster !== 0)) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Compressed cluster size ${cluster} does not divide the buffer size ${bufferSize}`);
  }
  const inOrder = options.inOrder ?? target.prefersInOrderWrites;
  const result: ConvertResult = { size: source.size, bytesRead: 0, bytesWritten: 0, bytesZeroed: 0 };

  const progress = options.progress;
  let allocatedTotal = 0;
  let allocatedDone = 0;
  if (progress) {
    // qemu-img's first pass: how many bytes will count towards 100%.
    const counter = new JobCutter(source, bufferSize, zeroAsData, cluster);
    for (let job = await counter.next(); job; job = await counter.next()) {
      if (job.kind === 'data' || zeroAsData) allocatedTotal += job.length;
    }
  }

  const cutter = new JobCutter(source, bufferSize, zeroAsData, cluster);
  let queue: Promise<unknown> = Promise.resolve();
  let failure: unknown;
  let failed = false;
  const gate = new OrderGate();

  // Jobs are cut one at a time (block status is sequential); the rest runs in parallel.
  const nextJob = (): Promise<Job | undefined> => {
    const p = queue.then(() => (failed ? undefined : cutter.next()));
    queue = p.catch(() => undefined);
    return p;
  };

  const fail = (e: unknown): void => {
    if (!failed) {
      failed = true;
      failure = e;
      gate.release();
    }
  };

  // Clusters holding data are written whole (zeros included) where that stores the same bytes
  // as writing only their non-zero sectors: fewer, larger writes and no copy-on-write padding.
  // Zero runs of -S or longer always cover whole clusters then, so the same clusters are skipped.
  const fill = cluster === 0 && target.wholeClusterSize !== undefined && minSparse <= target.wholeClusterSize ? target.wholeClusterSize : 0;

  // `placed` (in order only) goes with the job's last write to the target (see
  // ConvertTarget.write), where the cluster path can tell which one is last; other writes are
  // placed once they complete.
  const writeData = async (buf: Uint8Array, words: Int32Array, job: Job, placed: (() => void) | undefined): Promise<void> => {
    if (zeroAsData) {
      await target.write(buf.subarray(0, job.length), job.offset, placed);
      result.bytesWritten += job.length;
      return;
    }
    if (cluster > 0) return writeClusters(buf, job, 0, job.length, cluster, placed);
    if (fill === 0) return writeSectors(buf, words, job, 0, job.length);
    // Edges of the job that cover part of a cluster go sector by sector.
    const head = Math.min(job.length, Math.ceil(job.offset / fill) * fill - job.offset);
    const tail = Math.max(head, Math.floor((job.offset + job.length) / fill) * fill - job.offset);
    await writeSectors(buf, words, job, 0, head);
    await writeClusters(buf, job, head, tail, fill, tail === job.length ? placed : undefined);
    await writeSectors(buf, words, job, tail, job.length);
  };

  // Non-zero sector runs of [from, to) of the job, zero runs skipped with qemu-img's -S rules.
  const writeSectors = async (buf: Uint8Array, words: Int32Array, job: Job, from: number, to: number): Promise<void> => {
    // `| 0` (buffers are at most 32 MiB): optimized code may box the quotients as doubles,
    // and the scans' optimized code, which expects small integers, would be thrown away.
    const sectors = (to / SECTOR) | 0;
    const sectorNum = job.offset / SECTOR;
    let first = (from / SECTOR) | 0;
    while (first < sectors) {
      const run = allocatedRunMin(words, first, sectors - first, sectorNum + first, minSectors, alignment);
      const n = run < 0 ? -run : run;
      const start = first * SECTOR;
      const end = (first + n) * SECTOR;
      if (run > 0) {
        await target.write(buf.subarray(start, end), job.offset + start);
        result.bytesWritten += end - start;
      } else if (!target.zeroInitialized) {
        await target.writeZeroes(job.offset + start, end - start);
        result.bytesZeroed += end - start;
      }
      first += n;
    }
  };

  // Whole clusters of [from, to) of the job: runs of clusters holding data are written, runs of
  // all-zero clusters skipped (compressed output, or `fill` above).
  const writeClusters = async (buf: Uint8Array, job: Job, from: number, to: number, size: number, placed?: () => void): Promise<void> => {
    let pos = from;
    while (pos < to) {
      const zero = rangeIsZero(buf, pos, Math.min(pos + size, to));
      let end = Math.min(pos + size, to);
      while (end < to && rangeIsZero(buf, end, Math.min(end + size, to)) === zero) end = Math.min(end + size, to);
      if (!zero) {
        // No data after this run: it is the last write of the range (checked only in order).
        const last = placed !== undefined && (end === to || rangeIsZero(buf, end, to));
        await target.write(buf.subarray(pos, end), job.offset + pos, last ? placed : undefined);
        result.bytesWritten += end - pos;
      } else if (!target.zeroInitialized) {
        await target.writeZeroes(job.offset + pos, end - pos);
        result.bytesZeroed += end - pos;
      }
      pos = end;
    }
  };

  // The workers' buffers are slices of one allocation, made when data first needs one: one
  // large block can be backed by huge pages where the system offers them for malloc (the CLI
  // asks glibc to, see bin/qcow2kit), which saves thousands of page faults of fresh memory.
  let pool: Uint8Array | undefined;
  const bufferOf = (i: number): Uint8Array => {
    pool ??= new Uint8Array(bufferSize * parallel);
    return pool.subarray(i * bufferSize, (i + 1) * bufferSize);
  };

  const worker = async (index: number): Promise<void> => {
    let buf: Uint8Array | undefined;
    let words: Int32Array | undefined;
    for (;;) {
      let job: Job | undefined;
      try {
        job = await nextJob();
      } catch (e) {
        fail(e);
        return;
      }
      if (!job || failed) return;
      if (progress && (job.kind === 'data' || zeroAsData)) {
        allocatedDone += job.length;
        progress(Math.fround((100 * allocatedDone) / allocatedTotal));
      }
      let stage = 'read';
      try {
        if (job.kind === 'data' || zeroAsData) {
          buf ??= bufferOf(index);
          words ??= wordsOf(buf);
          if (job.kind === 'data') {
            await source.read(buf.subarray(0, job.length), job.offset);
            result.bytesRead += job.length;
          } else {
            buf.fill(0, 0, job.length);
          }
        }
        const wait = inOrder ? gate.turn(job.seq) : undefined;
        if (wait) await wait;
        if (failed) return;
        stage = 'write';
        // In order, the next job may write once this one's last write is placed or done.
        let turnPassed = false;
        const passTurn = (): void => {
          if (inOrder && !turnPassed) {
            turnPassed = true;
            gate.done(job.seq);
          }
        };
        if (job.kind === 'data' || zeroAsData) {
          await writeData(buf!, words!, job, inOrder ? passTurn : undefined);
        } else if (!target.zeroInitialized) {
          await target.writeZeroes(job.offset, job.length);
          result.bytesZeroed += job.length;
        }
        passTurn();
      } catch (e) {
        fail(wrapConvertError(e, `error while ${stage === 'read' ? 'reading' : 'writing'} at byte ${job.offset}`, job.offset, stage));
        return;
      }
    }
  };

  const workers: Promise<void>[] = [];
  for (let i = 0; i < parallel; i++) workers.push(worker(i));
  await Promise.all(workers);
  if (failed) throw failure;
  if (progress) progress(100);
  return result;
}
