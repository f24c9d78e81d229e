/**
 * Sizes and offsets written the way QEMU reads and prints them (qemu_strtosz, qemu-img's
 * cvtnum, qemu-io's cvtnum and cvtstr). Browser-safe.
 *
 * Parsing is exact: BigInt is used here because these run once per argument, never on a
 * data path, and QEMU accepts values up to 2^64 - 1 before range checks.
 */
import { Qcow2Error } from '../errors.js';

/** Why {@link strtosz} rejected its input (QEMU's -EINVAL / -ERANGE). */
export type StrtoszError = 'EINVAL' | 'ERANGE';

/** Result of {@link strtosz}. */
export type StrtoszResult = { ok: true; value: bigint } | { ok: false; error: StrtoszError };

/** Options for {@link strtosz}. */
export interface StrtoszOptions {
  /** Unit applied when no suffix is given: 'B' (qemu_strtosz, default) or 'M' (qemu_strtosz_MiB). */
  defaultSuffix?: 'B' | 'K' | 'M' | 'G' | 'T' | 'P' | 'E';
  /** 1024 (default) or 1000 (qemu_strtosz_metric). */
  unit?: 1024 | 1000;
}

const U64_MAX = (1n << 64n) - 1n;
/** Largest value of QEMU's int64_t sizes. */
export const INT64_MAX = (1n << 63n) - 1n;
const SPACE = new Set([' ', '\t', '\n', '\v', '\f', '\r']);
const SUFFIX_POWER: Readonly<Record<string, number>> = { B: 0, K: 1, M: 2, G: 3, T: 4, P: 5, E: 6 };

function suffixMul(c: string | undefined, unit: bigint): bigint | undefined {
  const power = c === undefined ? undefined : SUFFIX_POWER[c.toUpperCase()];
  return power === undefined ? undefined : unit ** BigInt(power);
}

const DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz';

/** C strtoull: whitespace, sign, digits (and a 0x prefix in base 16). Returns the end index. */
function strtoull(s: string, start: number, base: 10 | 16): { value: bigint; end: number; range: boolean } {
  let i = start;
  while (i < s.length && SPACE.has(s[i]!)) i++;
  let negative = false;
  if (s[i] === '+' || s[i] === '-') {
    negative = s[i] === '-';
    i++;
  }
  if (base === 16 && s[i] === '0' && (s[i + 1] === 'x' || s[i + 1] === 'X') && digitValue(s[i + 2], 16) !== undefined) i += 2;
  const first = i;
  let value = 0n;
  const b = BigInt(base);
  while (i < s.length) {
    const d = digitValue(s[i], base);
    if (d === undefined) break;
    value = value * b + BigInt(d);
    i++;
  }
  if (i === first) return { value: 0n, end: start, range: false };
  const range = value > U64_MAX;
  if (!range && negative) value = (U64_MAX + 1n - value) & U64_MAX;
  return { value: range ? U64_MAX : value, end: i, range };
}

function digitValue(c: string | undefined, base: number): number | undefined {
  if (c === undefined) return undefined;
  const d = DIGITS.indexOf(c.toLowerCase());
  return d >= 0 && d < base ? d : undefined;
}

/**
 * Parse a size exactly as QEMU 7.2's qemu_strtosz does: a decimal integer, or hex with
 * 0x, optionally a decimal fraction (only together with a suffix other than b), then an
 * optional suffix b/k/M/G/T/P/E (case-insensitive, powers of `unit`). A fraction is
 * taken as a double and rounded half-up to whole bytes, as QEMU does.
 *
 * @example
 * ```ts
 * strtosz('1.5G');  // { ok: true, value: 1610612736n }
 * strtosz('0x10k'); // { ok: true, value: 16384n }
 * strtosz('1kB');   // { ok: false, error: 'EINVAL' }
 * ```
 */
export function strtosz(text: string, options: StrtoszOptions = {}): StrtoszResult {
  const unit = BigInt(options.unit ?? 1024);
  const invalid: StrtoszResult = { ok: false, error: 'EINVAL' };
  const dec = strtoull(text, 0, 10);
  if (dec.end === 0) return invalid;
  let end = dec.end;
  let error: StrtoszError | undefined;
  let val = dec.value;
  let frac = 0n;
  if (dec.range) {
    error = 'ERANGE';
  } else if (text.slice(0, end).includes('-')) {
    return invalid;
  } else if (val === 0n && (text[end] === 'x' || text[end] === 'X')) {
    const hex = strtoull(text, 0, 16);
    end = hex.end;
    val = hex.value;
    if (hex.range) error = 'ERANGE';
    else if (text[end] === '.') return invalid;
  } else if (text[end] === '.') {
    // strtod on ".digits[e[sign]digits]"; without digits QEMU just skips the dot ("1.k").
    const m = /^\.(\d+)([eE][+-]?\d+)?/.exec(text.slice(end));
    if (m === null) {
      end++;
    } else {
      if (m[2] !== undefined) return invalid;
      end += m[0].length;
      // 64.64 fixed point; a fraction that rounds to 1.0 overflows the conversion to 0 on x86.
      const scaled = Number(`0.${m[1]}`) * 2 ** 64;
      frac = scaled >= 2 ** 64 ? 0n : BigInt(Math.trunc(scaled));
    }
  }
  if (error === undefined) {
    let mul = suffixMul(text[end], unit);
    if (mul !== undefined) end++;
    else mul = suffixMul(options.defaultSuffix ?? 'B', unit)!;
    if (mul === 1n) {
      if (frac !== 0n) return invalid;
    } else {
      const f = frac * mul;
      val = val * mul + (f >> 64n) + ((f >> 63n) & 1n);
      if (val > U64_MAX) error = 'ERANGE';
    }
  }
  if (end < text.length) return invalid;
  return error === undefined ? { ok: true, value: val } : { ok: false, error };
}

/**
 * qemu-img's cvtnum_full(): parse a size argument named `name` ("image size", "start
 * offset", ...) and check it lies in [min, max]. Throws Qcow2Error('INVALID_ARGUMENT') with
 * qemu-img's text; the message has two lines for syntax errors, as qemu-img prints two
 * error lines. Values above 2^53 come back rounded to the nearest double.
 *
 * @example
 * ```ts
 * parseSizeArg('image size', '10G'); // 10737418240
 * parseSizeArg('image size', '1x');  // throws "Invalid image size specified. You may use k, M, G, ..."
 * ```
 */
export function parseSizeArg(name: string, text: string, range: { min?: bigint | number; max?: bigint | number } = {}): number {
  const min = BigInt(range.min ?? 0);
  const max = BigInt(range.max ?? INT64_MAX);
  const r = strtosz(text);
  if (!r.ok && r.error === 'EINVAL') {
    throw new Qcow2Error(
      'INVALID_ARGUMENT',
      `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for\n` +
        'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
      { name, value: text },
    );
  }
  if (!r.ok || r.value > max || r.value < min) {
    throw new Qcow2Error('INVALID_ARGUMENT', `Invalid ${name} specified. Must be between ${min} and ${max}.`, { name, value: text });
  }
  return Number(r.value);
}

/**
 * qemu-io's cvtnum(): an offset or length for qemu-io commands, at most INT64_MAX.
 * Throws Qcow2Error('INVALID_ARGUMENT') with qemu-io's "Parsing error: ..." text and
 * `context.errno` 'EINVAL' or 'ERANGE'.
 *
 * @example
 * ```ts
 * parseIoNumber('64k'); // 65536
 * parseIoNumber('8E');  // throws "Parsing error: argument too large -- 8E"
 * ```
 */
export function parseIoNumber(text: string): number {
  const r = strtosz(text);
  if (r.ok && r.value <= INT64_MAX) return Number(r.value);
  const errno = r.ok ? 'ERANGE' : r.error;
  throw new Qcow2Error('INVALID_ARGUMENT', formatIoNumberError(errno, text), { errno, value: text });
}

/** qemu-io's print_cvtnum_err() text for an argument `text` that failed with `errno`. */
export function formatIoNumberError(errno: StrtoszError, text: string): string {
  return errno === 'EINVAL'
    ? `Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ${text}`
    : `Parsing error: argument too large -- ${text}`;
}

/**
 * C's printf("%.<digits>f", value) with glibc's exact rounding (round half to even on the
 * exact binary value), which `Number.prototype.toFixed` does not do. Infinity and NaN
 * print as "inf" and "nan".
 *
 * @example
 * ```ts
 * formatFixed(1.0625, 3); // '1.062' (toFixed gives '1.063')
 * ```
 */
export function formatFixed(value: number, digits: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  const negative = value < 0 || Object.is(value, -0);
  const { mantissa, exponent } = decompose(Math.abs(value));
  // |value| = mantissa * 2^exponent exactly; scale by 10^digits and round to an integer.
  let q: bigint;
  const scaledMantissa = mantissa * 10n ** BigInt(digits);
  if (exponent >= 0) {
    q = scaledMantissa << BigInt(exponent);
  } else {
    const den = 1n << BigInt(-exponent);
    q = scaledMantissa / den;
    const twice = (scaledMantissa % den) * 2n;
    if (twice > den || (twice === den && (q & 1n) === 1n)) q += 1n;
  }
  let s = q.toString();
  if (digits > 0) {
    s = s.padStart(digits + 1, '0');
    s = `${s.slice(0, -digits)}.${s.slice(-digits)}`;
  }
  return negative ? `-${s}` : s;
}

function decompose(v: number): { mantissa: bigint; exponent: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, v);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  const frac = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  if (biased === 0) return { mantissa: frac, exponent: -1074 };
  return { mantissa: frac | (1n << 52n), exponent: biased - 1075 };
}

const IO_UNITS: ReadonlyArray<readonly [number, string]> = [
  [2 ** 60, ' EiB'],
  [2 ** 50, ' PiB'],
  [2 ** 40, ' TiB'],
  [2 ** 30, ' GiB'],
  [2 ** 20, ' MiB'],
  [2 ** 10, ' KiB'],
];

/**
 * qemu-io's cvtstr(): "64 KiB", "1.500 KiB", "512 bytes", "295.580335 bytes". Three
 * decimals in binary units, six for bytes, and a ".000" is dropped.
 *
 * @example
 * ```ts
 * formatIoSize(65536); // '64 KiB'
 * formatIoSize(1536);  // '1.500 KiB'
 * ```
 */
export function formatIoSize(value: number): string {
  let text: string | undefined;
  let suffix = ' bytes';
  for (const [scale, name] of IO_UNITS) {
    if (value >= scale) {
      text = formatFixed(value / scale, 3);
      suffix = name;
      break;
    }
  }
  text ??= formatFixed(value, 6);
  const dot = text.indexOf('.000');
  return dot >= 0 ? text.slice(0, dot) + suffix : text + suffix;
}
