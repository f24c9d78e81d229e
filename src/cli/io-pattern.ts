/**
 * Buffer helpers of qemu-io: pattern bytes (-P), pattern checks, pattern files (-s) and
 * the hex dump of `read -v`.
 */
import type { CliWriter } from './main.js';

const SPACE = /^[ \t\n\v\f\r]*/;

/**
 * C's strtol(text, &end, 0): optional whitespace and sign, then 0x.. hex, 0.. octal or
 * decimal. `rest` is what was not consumed; `value` saturates like LONG_MIN/LONG_MAX.
 *
 * @example
 * ```ts
 * strtol('0xab'); // { value: 171, rest: '' }
 * strtol('08');   // { value: 0, rest: '8' }
 * ```
 */
export function strtol(text: string): { value: number; rest: string } {
  let i = SPACE.exec(text)![0].length;
  let sign = 1;
  if (text[i] === '+' || text[i] === '-') {
    if (text[i] === '-') sign = -1;
    i++;
  }
  let base = 10;
  if (text[i] === '0' && (text[i + 1] === 'x' || text[i + 1] === 'X') && /[0-9a-fA-F]/.test(text[i + 2] ?? '')) {
    base = 16;
    i += 2;
  } else if (text[i] === '0') {
    base = 8;
  }
  const start = i;
  let value = 0;
  while (i < text.length) {
    const d = parseInt(text[i]!, base);
    if (Number.isNaN(d)) break;
    value = value * base + d;
    i++;
  }
  if (i === start) return { value: 0, rest: text };
  const LIMIT = 2 ** 63;
  value = Math.min(value, LIMIT);
  return { value: value === 0 ? 0 : sign * value, rest: text.slice(i) };
}

/**
 * qemu-io's parse_pattern(): a byte value 0..255 in C notation (0xab, 0253, 171).
 * Returns undefined when invalid; the caller prints "<arg> is not a valid pattern byte".
 *
 * @example
 * ```ts
 * parsePattern('0xab'); // 171
 * parsePattern('256');  // undefined
 * ```
 */
export function parsePattern(arg: string): number | undefined {
  const { value, rest } = strtol(arg);
  if (value < 0 || value > 255 || rest !== '') return undefined;
  return value;
}

/**
 * True when `buf[start .. start + length)` consists of `pattern` bytes only.
 *
 * @example
 * ```ts
 * matchesPattern(new Uint8Array([1, 1, 2]), 0, 2, 1); // true
 * ```
 */
export function matchesPattern(buf: Uint8Array, start: number, length: number, pattern: number): boolean {
  const end = start + length;
  // Compare 4 bytes at a time where the view is aligned; patterns are often megabytes long.
  let i = start;
  const word = (pattern * 0x01010101) >>> 0;
  while (i < end && ((buf.byteOffset + i) & 3) !== 0) if (buf[i++] !== pattern) return false;
  const words = Math.floor((end - i) / 4);
  if (words > 0) {
    const u32 = new Uint32Array(buf.buffer, buf.byteOffset + i, words);
    for (let w = 0; w < words; w++) if (u32[w] !== word) return false;
    i += words * 4;
  }
  while (i < end) if (buf[i++] !== pattern) return false;
  return true;
}

/**
 * Fill a `length`-byte buffer with the contents of a pattern file repeated, as
 * `write -s FILE` does. `source` must not be empty.
 *
 * @example
 * ```ts
 * repeatPattern(new Uint8Array([1, 2]), 5); // [1, 2, 1, 2, 1]
 * ```
 */
export function repeatPattern(source: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  if (source.byteLength === 0) return out;
  out.set(source.subarray(0, Math.min(length, source.byteLength)));
  // Doubling copy: log2(n) copies instead of n / pattern length.
  let filled = Math.min(length, source.byteLength);
  while (filled < length) {
    const n = Math.min(filled, length - filled);
    out.copyWithin(filled, 0, n);
    filled += n;
  }
  return out;
}

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));
const PRINTABLE = Array.from({ length: 256 }, (_, b) => (/[A-Za-z0-9]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : '.'));

/**
 * One line of qemu-io's dump_buffer(): `0000fff0:  ab ab ...  ..` (16 bytes at most,
 * letters and digits shown, everything else as '.'; no padding on a short last line).
 *
 * @example
 * ```ts
 * hexdumpLine(new Uint8Array([0x41, 0x00]), 0x20); // '00000020:  41 00  A.\n'
 * ```
 */
export function hexdumpLine(bytes: Uint8Array, offset: number): string {
  let hex = '';
  let text = '';
  for (const b of bytes) {
    hex += `${HEX[b]!} `;
    text += PRINTABLE[b]!;
  }
  const off = offset.toString(16).padStart(8, '0');
  return `${off}:  ${hex} ${text}\n`;
}

/**
 * Write the hex dump of `buf` (whose first byte is at guest `offset`) to `out`, flushing
 * when the writer asks for it so that dumping gigabytes does not buffer gigabytes of text.
 */
export async function dumpBuffer(out: CliWriter, buf: Uint8Array, offset: number): Promise<void> {
  const LINES_PER_CHUNK = 1024;
  for (let i = 0; i < buf.byteLength; ) {
    let chunk = '';
    for (let n = 0; n < LINES_PER_CHUNK && i < buf.byteLength; n++, i += 16) {
      chunk += hexdumpLine(buf.subarray(i, Math.min(i + 16, buf.byteLength)), offset + i);
    }
    if (!out.write(chunk)) await out.flush();
  }
}
