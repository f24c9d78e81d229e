/**
 * Stable error codes. Callers switch on `code`; messages are for humans and may change.
 */
export type Qcow2ErrorCode =
  /** The image violates the format (bad magic, out-of-range field, broken table). */
  | 'INVALID_IMAGE'
  /** The image uses a feature this build does not implement (unknown incompatible bit, encryption). */
  | 'UNSUPPORTED'
  /** The image has the corrupt bit set or metadata inconsistencies were found. */
  | 'CORRUPT'
  /** The caller passed an invalid argument (offset beyond the end, bad option). */
  | 'INVALID_ARGUMENT'
  /** Underlying storage failed or returned short data. */
  | 'IO'
  /** A named file (image, backing file, data file) does not exist. */
  | 'NOT_FOUND'
  /** Opening a dependency was refused by the open policy. */
  | 'DEPENDENCY_DENIED'
  /** The backing chain loops or is too deep. */
  | 'CHAIN_LOOP'
  /** A write was attempted on a read-only image or storage. */
  | 'READ_ONLY'
  /** Decompression failed. */
  | 'DECOMPRESS';

/**
 * The one error type thrown for expected failures: hostile or broken images, refused
 * features, bad arguments. Anything else escaping the library is a bug.
 *
 * @example
 * ```ts
 * try { await openImage(storage); } catch (e) {
 *   if (e instanceof Qcow2Error && e.code === 'UNSUPPORTED') console.error(e.message);
 * }
 * ```
 */
export class Qcow2Error extends Error {
  readonly code: Qcow2ErrorCode;
  /** Structured context: offsets, table names, feature bits. */
  readonly context: Readonly<Record<string, unknown>>;

  constructor(code: Qcow2ErrorCode, message: string, context: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'Qcow2Error';
    this.code = code;
    this.context = context;
  }
}

/** Shorthand for the most common case: a value read from the image is out of bounds. */
export function invalidImage(message: string, context: Record<string, unknown> = {}): Qcow2Error {
  return new Qcow2Error('INVALID_IMAGE', message, context);
}
