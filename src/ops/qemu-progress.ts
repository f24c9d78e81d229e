/**
 * qemu-img's `-p` progress line, reproduced exactly: single-precision state, the same
 * "print only after moving at least min_skip percent" rule, and printf's `%3.2f` rounding.
 *
 * @example
 * ```ts
 * const p = new QemuProgress(1.0, (s) => process.stdout.write(s));
 * p.set(0);      // "    (0.00/100%)\r"
 * p.set(42.5);   // "    (42.50/100%)\r"
 * p.set(100);
 * p.end();       // "\n"
 * ```
 */
export class QemuProgress {
  readonly #minSkip: number;
  readonly #write: (text: string) => void;
  #current = 0;
  #lastPrint = 0;

  /** `minSkip` is 1.0 for convert and 2.0 for compare, as in qemu-img. */
  constructor(minSkip: number, write: (text: string) => void) {
    this.#minSkip = Math.fround(minSkip);
    this.#write = write;
  }

  /** qemu_progress_print(percent, 0): set the absolute percentage. */
  set(percent: number): void {
    let current = Math.fround(percent);
    if (current > 100) current = 100;
    this.#current = current;
    if (
      current > Math.fround(this.#lastPrint + this.#minSkip) ||
      current < Math.fround(this.#lastPrint - this.#minSkip) ||
      current === 100 ||
      current === 0
    ) {
      this.#lastPrint = current;
      this.#write(progressLine(current));
    }
  }

  /** qemu_progress_end(). */
  end(): void {
    this.#write('\n');
  }
}

/** One progress line as qemu-img prints it: `    (12.34/100%)\r`. */
export function progressLine(percent: number): string {
  return `    (${formatFixed2(percent)}/100%)\r`;
}

/**
 * printf("%.2f") for a non-negative single-precision value: exact halves round to even,
 * as glibc does (JavaScript's toFixed would round them up).
 */
export function formatFixed2(value: number): string {
  const scaled = value * 100; // exact: a float times 100 fits in a double's mantissa
  let k = Math.floor(scaled);
  const frac = scaled - k;
  if (frac > 0.5 || (frac === 0.5 && k % 2 === 1)) k += 1;
  const whole = Math.floor(k / 100);
  const cents = k - whole * 100;
  return `${whole}.${cents < 10 ? '0' : ''}${cents}`;
}

/** Single-precision accumulation qemu-img compare uses: `current + (chunk / base * 100) / 100 * 100`. */
export function addChunkPercent(current: number, chunk: number, base: number): number {
  const f = Math.fround;
  const delta = f(f(f(chunk) / f(base)) * 100);
  const next = f(current + f(f(delta / 100) * 100));
  return next > 100 ? 100 : next;
}
