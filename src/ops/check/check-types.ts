/**
 * The vocabulary of a consistency check: what it counts, what it may fix, where it reports.
 * Mirrors QEMU's BdrvCheckResult / BdrvCheckMode so that the numbers qemu-img prints can be
 * reproduced exactly.
 */
import { Qcow2Error } from '../../errors.js';

/** Counters of one check run (QEMU's BdrvCheckResult, fragmentation info included). */
export interface CheckResult {
  /** Inconsistencies that can make data wrong (refcount below the references, bad entries). */
  corruptions: number;
  /** Clusters whose refcount is above their references: wasted space only. */
  leaks: number;
  /** Internal errors: the check could not look at something. */
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  /** Offset just past the last cluster in use (on disk or referenced). */
  imageEndOffset: number;
  /** Guest clusters of the virtual disk. */
  totalClusters: number;
  /** Guest clusters of the active L1 table that are allocated (data, compressed, preallocated zero). */
  allocatedClusters: number;
  /** Allocated guest clusters not stored right after the previous one. */
  fragmentedClusters: number;
  compressedClusters: number;
}

/** A zeroed result. */
export function emptyCheckResult(): CheckResult {
  return {
    corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, imageEndOffset: 0,
    totalClusters: 0, allocatedClusters: 0, fragmentedClusters: 0, compressedClusters: 0,
  };
}

/** QEMU's qcow2_add_check_result: sum the counters, take allocation info from `src` if asked. */
export function addCheckResult(out: CheckResult, src: CheckResult, setAllocationInfo: boolean): void {
  out.corruptions += src.corruptions;
  out.leaks += src.leaks;
  out.checkErrors += src.checkErrors;
  out.corruptionsFixed += src.corruptionsFixed;
  out.leaksFixed += src.leaksFixed;
  if (setAllocationInfo) {
    out.imageEndOffset = src.imageEndOffset;
    out.totalClusters = src.totalClusters;
    out.allocatedClusters = src.allocatedClusters;
    out.fragmentedClusters = src.fragmentedClusters;
    out.compressedClusters = src.compressedClusters;
  }
}

/** What a check may repair (QEMU's BDRV_FIX_LEAKS / BDRV_FIX_ERRORS). */
export interface FixMode {
  readonly leaks: boolean;
  readonly errors: boolean;
}

export const NO_FIX: FixMode = Object.freeze({ leaks: false, errors: false });
/** `-r leaks` */
export const FIX_LEAKS: FixMode = Object.freeze({ leaks: true, errors: false });
/** `-r all` */
export const FIX_ALL: FixMode = Object.freeze({ leaks: true, errors: true });

export function fixesAnything(fix: FixMode): boolean {
  return fix.leaks || fix.errors;
}

/**
 * Where a check writes its per-problem messages. qemu-img prints them on stderr as they are
 * found: `line` is a plain line (QEMU's fprintf), `error` one that qemu-img prefixes with its
 * program name (QEMU's error_report).
 */
export interface CheckReporter {
  line(text: string): void;
  error(text: string): void;
}

/** A reporter that drops everything (for library callers that only want the counters). */
export const SILENT_REPORTER: CheckReporter = Object.freeze({ line: () => undefined, error: () => undefined });

/** C errno values a check can fail with, and their strerror() text on Linux. */
export const ERRNO_TEXT = {
  EIO: 'Input/output error',
  ENOMEM: 'Cannot allocate memory',
  EFBIG: 'File too large',
  EINVAL: 'Invalid argument',
  ENOSPC: 'No space left on device',
  ERANGE: 'Numerical result out of range',
  ENOTSUP: 'Not supported',
} as const;

export type Errno = keyof typeof ERRNO_TEXT;

/**
 * The check had to stop (QEMU returns -errno): qemu-img then prints "Check failed: <strerror>"
 * and exits with 1. Thrown inside the check, caught by its driver.
 */
export class CheckAbort extends Qcow2Error {
  readonly errno: Errno;

  constructor(errno: Errno, detail?: string) {
    super(errno === 'EIO' ? 'IO' : 'INVALID_IMAGE', detail ?? ERRNO_TEXT[errno], { errno });
    this.name = 'CheckAbort';
    this.errno = errno;
  }

  /** strerror() of the errno, as qemu-img prints it. */
  get errnoText(): string {
    return ERRNO_TEXT[this.errno];
  }
}
