const SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'] as const;

/** C's frexp exponent: x = m * 2^e with 0.5 <= m < 1 (0 for x = 0). */
function frexpExponent(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return 0;
  let e = Math.floor(Math.log2(x)) + 1;
  // log2 can be off by one near powers of two.
  while (2 ** (e - 1) > x) e--;
  while (2 ** e <= x) e++;
  return e;
}

/** floor(log10(n / d)) for positive bigints. */
function decimalExponent(n: bigint, d: bigint): number {
  // n / d < 10^x, exactly.
  const below = (x: number): boolean => (x >= 0 ? n < d * 10n ** BigInt(x) : n * 10n ** BigInt(-x) < d);
  let x = 0;
  while (!below(x + 1)) x++;
  while (below(x)) x--;
  return x;
}

/**
 * C's `printf("%.3g", n / d)` for an exact non-negative rational, rounding ties to even as
 * glibc does on the exact binary value (1.125 prints as "1.12", 1.375 as "1.38").
 */
function formatG3(n: bigint, d: bigint): string {
  if (n === 0n) return '0';
  let x = decimalExponent(n, d);
  // Three significant digits: q = round(n / d * 10^(2 - x)), 100 <= q <= 1000.
  const shift = 2 - x;
  const num = shift >= 0 ? n * 10n ** BigInt(shift) : n;
  const den = shift >= 0 ? d : d * 10n ** BigInt(-shift);
  let q = num / den;
  const rem2 = (num % den) * 2n;
  if (rem2 > den || (rem2 === den && q % 2n === 1n)) q++;
  if (q === 1000n) {
    q = 100n;
    x++;
  }
  const digits = q.toString();
  if (x < -4 || x >= 3) {
    const mantissa = stripZeros(`${digits[0]}.${digits.slice(1)}`);
    const exp = Math.abs(x).toString().padStart(2, '0');
    return `${mantissa}e${x < 0 ? '-' : '+'}${exp}`;
  }
  if (x >= 0) return stripZeros(`${digits.slice(0, x + 1)}.${digits.slice(x + 1)}`);
  return stripZeros(`0.${'0'.repeat(-x - 1)}${digits}`);
}

/** %g drops trailing zeros of the fraction, and the point when nothing follows it. */
function stripZeros(s: string): string {
  return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}

/**
 * A byte count as qemu-img prints it (QEMU's size_to_str): three significant digits and a
 * binary suffix, switching to the next suffix once the value would print as 1000 or more
 * ("0 B", "999 B", "0.977 KiB", "196 KiB", "1.5 MiB", "1 GiB"). Values that round up to
 * 1000 print the way QEMU prints them too ("1e+03 KiB").
 *
 * @example
 * ```ts
 * sizeToStr(1073741824); // "1 GiB"
 * sizeToStr(200704);     // "196 KiB"
 * ```
 */
export function sizeToStr(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) throw new RangeError(`sizeToStr: not a byte count: ${bytes}`);
  // QEMU: i = (exponent of val * 1024/1000, minus one) / 10, truncating like C.
  let i = Math.trunc((frexpExponent(bytes / (1000 / 1024)) - 1) / 10);
  i = Math.min(i, SUFFIXES.length - 1);
  const n = BigInt(Math.floor(bytes));
  return `${formatG3(n, 1n << BigInt(i * 10))} ${SUFFIXES[i]}B`;
}
