/**
 * qemu-img's `-o` option strings ("cluster_size=4k,lazy_refcounts=on"), parsed the way QEMU
 * 7.2's QemuOpts does: comma-separated `name=value` items, `,,` for a literal comma in a
 * value, a bare `name` meaning `name=on` and `noname` meaning `name=off`, typed values checked
 * against a list of option descriptions with QEMU's messages. Browser-safe (no Node APIs),
 * though only the command line uses it.
 */
import { strtosz } from '../util/size.js';
import { CliError } from './cli-error.js';

/** Value types of QemuOpts options. */
export type QemuOptType = 'string' | 'bool' | 'number' | 'size';

/** One option a format accepts (a QemuOptDesc). */
export interface QemuOptDesc {
  readonly name: string;
  readonly type: QemuOptType;
  /** Printed in "Formatting ..." when the option is not given. */
  readonly defaultValue?: string;
  /** The `-o help` text. */
  readonly help: string;
}

/** One parsed option. */
export interface QemuOpt {
  readonly name: string;
  /** The text as given (after `,,` unescaping); "on"/"off" for flags. */
  readonly text: string;
  /** bool options: the value. */
  readonly bool?: boolean;
  /** number and size options: the exact unsigned 64-bit value. */
  readonly number?: bigint;
}

/** A failure with QEMU's message; `hint` is the extra line QEMU prints after it. */
export class OptionError extends Error {
  readonly hint: string | undefined;

  constructor(message: string, hint?: string) {
    super(message);
    this.name = 'OptionError';
    this.hint = hint;
  }
}

const U64_MAX = (1n << 64n) - 1n;

/**
 * qemu-img's is_valid_option_list(): not empty, not starting with a comma, and not ending in
 * an odd number of commas (a trailing `,,` is an escaped comma).
 */
export function isValidOptionList(text: string): boolean {
  if (text === '' || text.startsWith(',')) return false;
  let i = text.length;
  while (i > 0 && text[i - 1] === ',') i--;
  return (text.length - i) % 2 === 0;
}

/**
 * Add one `-o` argument to the options seen so far, as qemu-img does while parsing its
 * command line: each list is checked, then lists are joined with a comma.
 */
export function appendOptionList(sofar: string | undefined, list: string): string {
  if (!isValidOptionList(list)) throw new CliError(`Invalid option list: ${list}`);
  return sofar === undefined ? list : `${sofar},${list}`;
}

/**
 * Read a value up to the next single comma (QEMU's get_opt_value): `,,` is a literal comma.
 * Returns the value and the index of the terminating comma (or the end).
 */
export function readOptionValue(text: string, start: number): { value: string; end: number } {
  let value = '';
  let p = start;
  for (;;) {
    const comma = text.indexOf(',', p);
    const end = comma < 0 ? text.length : comma;
    if (comma >= 0 && text[comma + 1] === ',') {
      value += text.slice(p, end + 1);
      p = end + 2;
      continue;
    }
    value += text.slice(p, end);
    return { value, end };
  }
}

/** QEMU's is_help_option(): "help" or "?". */
export function isHelpOption(text: string): boolean {
  return text === 'help' || text === '?';
}

/**
 * qemu's has_help_option(): some comma-separated item (taken whole, `,,` unescaped) is
 * "help" or "?".
 *
 * @example
 * ```ts
 * hasHelpOption('cluster_size=4k,help'); // true
 * hasHelpOption('backing_file=help');    // false
 * ```
 */
export function hasHelpOption(text: string): boolean {
  let p = 0;
  while (p < text.length) {
    const { value, end } = readOptionValue(text, p);
    if (isHelpOption(value)) return true;
    p = end < text.length ? end + 1 : end;
  }
  return false;
}

/**
 * Split an option string into name/value pairs in order (QEMU's get_opt_name_value without
 * an implicit first name). Items named "id" are dropped, as QemuOpts does.
 *
 * @example
 * ```ts
 * splitOptionString('backing_file=a,,b,lazy_refcounts,nocow');
 * // [{ name: 'backing_file', value: 'a,b' }, { name: 'lazy_refcounts', value: 'on' }, { name: 'cow', value: 'off' }]
 * ```
 */
export function splitOptionString(text: string): { name: string; value: string }[] {
  const out: { name: string; value: string }[] = [];
  let p = 0;
  while (p < text.length) {
    const rest = text.slice(p);
    const m = /^[^=,]*/.exec(rest);
    const len = m === null ? 0 : m[0].length;
    let name: string;
    let value: string;
    if (rest[len] !== '=') {
      // A flag: "name" is name=on, "noname" is name=off.
      name = rest.slice(0, len);
      value = 'on';
      if (name.startsWith('no')) {
        name = name.slice(2);
        value = 'off';
      }
      p += len;
    } else {
      name = rest.slice(0, len);
      const r = readOptionValue(text, p + len + 1);
      value = r.value;
      p = r.end;
    }
    if (text[p] === ',') p++;
    if (name !== 'id') out.push({ name, value });
  }
  return out;
}

/** QEMU's qapi_bool_parse(). */
function parseBool(name: string, text: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(text)) return true;
  if (['off', 'no', 'false', 'n'].includes(text)) return false;
  throw new OptionError(`Parameter '${name}' expects 'on' or 'off'`);
}

/** qemu_strtou64(text, NULL, 0): C syntax (0x hex, leading-0 octal), a sign, nothing after. */
function parseU64(name: string, text: string): bigint {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (m === null) throw new OptionError(`Parameter '${name}' expects a number`);
  const digits = m[2]!;
  let v: bigint;
  if (/^0[xX]/.test(digits)) v = BigInt(digits);
  else if (digits.length > 1 && digits.startsWith('0')) v = BigInt(`0o${digits.slice(1)}`);
  else v = BigInt(digits);
  if (v > U64_MAX) throw new OptionError(`Value '${text}' is too large for parameter '${name}'`);
  // strtoull negates in unsigned arithmetic: "-1" is 2^64 - 1.
  return m[1] === '-' ? (U64_MAX + 1n - v) & U64_MAX : v;
}

/** qemu_strtosz()'s deprecation warning for a hex number with a suffix ("0x10k"), if it applies. */
export function hexSuffixWarning(text: string): string | undefined {
  return /^[ \t\n\v\f\r]*[+-]?0[xX][0-9a-fA-F]+[bBkKmMgGtTpPeE]/.test(text)
    ? `Using a multiplier suffix on hex numbers is deprecated: ${text}`
    : undefined;
}

function parseSize(name: string, text: string, warn: ((message: string) => void) | undefined): bigint {
  const w = hexSuffixWarning(text);
  if (w !== undefined) warn?.(w);
  const r = strtosz(text);
  if (r.ok) return r.value;
  if (r.error === 'ERANGE') throw new OptionError(`Value '${text}' is out of range for parameter '${name}'`);
  throw new OptionError(
    `Parameter '${name}' expects a non-negative number below 2^64`,
    'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.',
  );
}

/**
 * Parsed options in the order given. Lookups return the last occurrence, as QemuOpts does.
 */
export class QemuOpts {
  readonly #opts: QemuOpt[] = [];
  readonly descs: readonly QemuOptDesc[];
  readonly #warn: ((message: string) => void) | undefined;

  /** `warn` receives QEMU's warnings (deprecated syntax) as values are parsed. */
  constructor(descs: readonly QemuOptDesc[], warn?: (message: string) => void) {
    this.descs = descs;
    this.#warn = warn;
  }

  /** Add an option, checking its name and value type (QEMU's opt_validate). Throws OptionError. */
  add(name: string, text: string): QemuOpt {
    const desc = this.descs.find((d) => d.name === name);
    if (desc === undefined) throw new OptionError(`Invalid parameter '${name}'`);
    let opt: QemuOpt;
    switch (desc.type) {
      case 'bool':
        opt = { name, text, bool: parseBool(name, text) };
        break;
      case 'number':
        opt = { name, text, number: parseU64(name, text) };
        break;
      case 'size':
        opt = { name, text, number: parseSize(name, text, this.#warn) };
        break;
      default:
        opt = { name, text };
    }
    this.#opts.push(opt);
    return opt;
  }

  /** The last occurrence of `name`, if given. */
  get(name: string): QemuOpt | undefined {
    for (let i = this.#opts.length - 1; i >= 0; i--) if (this.#opts[i]!.name === name) return this.#opts[i];
    return undefined;
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** Every option given, in order. */
  all(): readonly QemuOpt[] {
    return this.#opts;
  }

  /**
   * The options as qemu_opts_print() shows them: every known option that is set or has a
   * default, in the order of the descriptions; numbers as signed 64-bit decimals, strings
   * with commas doubled.
   *
   * @example
   * ```ts
   * opts.print(); // "cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 ..."
   * ```
   */
  print(): string {
    const parts: string[] = [];
    for (const d of this.descs) {
      const opt = this.get(d.name);
      const text = opt?.text ?? d.defaultValue;
      if (text === undefined) continue;
      if (d.type === 'string') parts.push(`${d.name}=${text.replace(/,/g, ',,')}`);
      else if ((d.type === 'size' || d.type === 'number') && opt?.number !== undefined) {
        parts.push(`${d.name}=${BigInt.asIntN(64, opt.number)}`);
      } else parts.push(`${d.name}=${text}`);
    }
    return parts.join(' ');
  }
}

/**
 * Parse an option string against descriptions (QEMU's qemu_opts_do_parse). Throws
 * OptionError at the first bad item.
 *
 * @example
 * ```ts
 * const opts = parseQemuOpts('cluster_size=4k,lazy_refcounts=on', QCOW2_CREATE_OPTS);
 * opts.get('cluster_size')?.number; // 4096n
 * ```
 */
export function parseQemuOpts(text: string | undefined, descs: readonly QemuOptDesc[], warn?: (message: string) => void): QemuOpts {
  const opts = new QemuOpts(descs, warn);
  if (text !== undefined) for (const { name, value } of splitOptionString(text)) opts.add(name, value);
  return opts;
}

/**
 * The `-o help` listing (qemu_opts_print_help): options sorted by name, each as
 * `  name=<type> - help`, the name column padded to 24 characters.
 */
export function optionHelpText(descs: readonly QemuOptDesc[]): string {
  const typeName: Record<QemuOptType, string> = { string: 'str', bool: 'bool (on/off)', number: 'num', size: 'size' };
  const sorted = [...descs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return sorted.map((d) => `  ${`${d.name}=<${typeName[d.type]}>`.padEnd(22)} - ${d.help}\n`).join('');
}
