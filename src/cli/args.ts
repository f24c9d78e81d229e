/**
 * A getopt_long work-alike, so that command lines behave exactly as they do with qemu-img
 * and qemu-io (both use glibc's getopt): attached or separate values (`-fqcow2`, `-f qcow2`),
 * grouped flags (`-pU`), `--long=value` and `--long value`, unambiguous prefixes of long
 * names (`--outp=json`), `--` ends the options, options may follow operands (GNU
 * permutation) unless `inOrder` is set, and `-` alone is an operand.
 *
 * Errors come in two dialects. qemu-img's own (its option strings start with ':', so it
 * prints `unrecognized option '<argv element>'` / `missing argument for option '<argv
 * element>'` itself, where the element is glibc's `argv[optind - 1]`, quirks included) and
 * glibc's (qemu-io and its internal commands: `invalid option -- 'x'`, `option '--cmd'
 * requires an argument`, ...).
 */
import { CliError, HelpRequest } from './cli-error.js';

/** Whether an option takes a value. */
export type ArgMode = 'none' | 'required' | 'optional';

/** One option of a command. */
export interface OptionSpec {
  /** Key under which values are reported (by convention the long name, else the letter). */
  readonly name: string;
  /** Single-character short form, without the dash. */
  readonly short?: string;
  /** Long form(s), without the dashes. */
  readonly long?: string | readonly string[];
  /** Default 'none'. An 'optional' value must be attached (`-x5`, `--x=5`), as in getopt. */
  readonly arg?: ArgMode;
  /** Stop parsing when this option is seen (qemu-img acts on `-h` immediately). */
  readonly stop?: boolean;
}

/** The options of one command. */
export interface ArgSpec {
  readonly options: readonly OptionSpec[];
  /** Stop at the first operand instead of permuting (getopt's leading '+'). */
  readonly inOrder?: boolean;
}

/** One option occurrence, in command-line order. */
export interface ParsedOption {
  readonly name: string;
  readonly value: string | undefined;
}

/** Result of {@link parseArgs}. */
export class ParsedArgs {
  /** Options in the order given. */
  readonly options: readonly ParsedOption[];
  /** Operands, in order, after permutation. */
  readonly positionals: readonly string[];
  /** Name of the `stop` option that ended parsing, if any. */
  readonly stoppedAt: string | undefined;

  constructor(options: readonly ParsedOption[], positionals: readonly string[], stoppedAt?: string) {
    this.options = options;
    this.positionals = positionals;
    this.stoppedAt = stoppedAt;
  }

  /** True when the option was given at least once. */
  has(name: string): boolean {
    return this.options.some((o) => o.name === name);
  }

  /** The last value given for the option (qemu-img keeps the last one). */
  get(name: string): string | undefined {
    for (let i = this.options.length - 1; i >= 0; i--) {
      const o = this.options[i]!;
      if (o.name === name) return o.value;
    }
    return undefined;
  }

  /** Every value given for a repeatable option, in order. */
  all(name: string): string[] {
    const out: string[] = [];
    for (const o of this.options) if (o.name === name && o.value !== undefined) out.push(o.value);
    return out;
  }
}

/** What went wrong while parsing. */
export type ArgErrorKind = 'unknown-short' | 'unknown-long' | 'ambiguous' | 'missing-argument' | 'unexpected-argument';

/** Which dialect {@link ArgError.message} uses. */
export type ArgErrorStyle = 'qemu-img' | 'getopt';

/**
 * A command-line error. `message` is in the requested dialect; both are available.
 * In the qemu-img dialect `usage` is true (main adds the "Try ... --help" line).
 */
export class ArgError extends CliError {
  readonly kind: ArgErrorKind;
  /** glibc's `argv[optind - 1]` at the error, which qemu-img quotes. */
  readonly element: string;
  /** glibc's message without the program-name prefix, e.g. `invalid option -- 'x'`. */
  readonly getoptMessage: string;
  /** qemu-img's message, e.g. `unrecognized option '-x'`. */
  readonly qemuImgMessage: string;
  /** Options parsed before the error; getopt users have acted on them already. */
  readonly parsed: readonly ParsedOption[];

  constructor(kind: ArgErrorKind, element: string, getoptMessage: string, style: ArgErrorStyle, parsed: readonly ParsedOption[] = []) {
    const qemuImgMessage = kind === 'missing-argument' ? `missing argument for option '${element}'` : `unrecognized option '${element}'`;
    super(style === 'qemu-img' ? qemuImgMessage : getoptMessage, { usage: style === 'qemu-img' });
    this.name = 'ArgError';
    this.kind = kind;
    this.element = element;
    this.getoptMessage = getoptMessage;
    this.qemuImgMessage = qemuImgMessage;
    this.parsed = parsed;
  }
}

/** Options for {@link parseArgs}. */
export interface ParseArgsOptions {
  /** What glibc sees as argv[0]: the command name (qemu-img shifts it there). Default ''. */
  argv0?: string;
  /** Message dialect of thrown errors. Default 'qemu-img'. */
  style?: ArgErrorStyle;
}

interface LongEntry {
  readonly name: string;
  readonly spec: OptionSpec;
}

const isOperand = (s: string): boolean => s[0] !== '-' || s.length === 1;

/**
 * Parse `argv` (without the program or command name) against `spec`.
 * Throws {@link ArgError} at the first error, like qemu-img which exits there.
 *
 * @example
 * ```ts
 * const spec = { options: [
 *   { name: 'format', short: 'f', arg: 'required' },
 *   { name: 'output', long: 'output', arg: 'required' },
 *   { name: 'force-share', short: 'U', long: 'force-share' },
 * ] } as const;
 * const a = parseArgs(['disk.img', '-fqcow2', '--output', 'json', '-U'], spec);
 * a.get('format');  // 'qcow2'
 * a.positionals;    // ['disk.img']
 * ```
 */
export function parseArgs(argv: readonly string[], spec: ArgSpec, options: ParseArgsOptions = {}): ParsedArgs {
  const style = options.style ?? 'qemu-img';
  const args = [options.argv0 ?? '', ...argv];
  const argc = args.length;
  const shorts = new Map<string, OptionSpec>();
  const longs: LongEntry[] = [];
  for (const o of spec.options) {
    if (o.short !== undefined) {
      if (o.short.length !== 1 || o.short === '-' || o.short === ':') throw new TypeError(`Invalid short option '${o.short}'`);
      shorts.set(o.short, o);
    }
    const names = o.long === undefined ? [] : typeof o.long === 'string' ? [o.long] : o.long;
    for (const name of names) longs.push({ name, spec: o });
  }

  // glibc's state: the operands skipped so far sit in [firstNonopt, lastNonopt).
  let optind = 1;
  let nextchar = '';
  let firstNonopt = 1;
  let lastNonopt = 1;
  const parsed: ParsedOption[] = [];

  const fail = (kind: ArgErrorKind, getoptMessage: string): never => {
    throw new ArgError(kind, args[optind - 1] ?? '', getoptMessage, style, [...parsed]);
  };

  // Move the operands skipped so far behind the options that followed them.
  const exchange = (): void => {
    const operands = args.slice(firstNonopt, lastNonopt);
    const opts = args.slice(lastNonopt, optind);
    args.splice(firstNonopt, optind - firstNonopt, ...opts, ...operands);
    firstNonopt += optind - lastNonopt;
    lastNonopt = optind;
  };

  const takeLong = (): ParsedOption => {
    const eq = nextchar.indexOf('=');
    const sub = eq < 0 ? nextchar : nextchar.slice(0, eq);
    let found: LongEntry | undefined = longs.find((l) => l.name === sub);
    if (found === undefined) {
      // glibc: a prefix is fine when every match means the same option.
      const ambiguous = new Set<number>();
      let foundIndex = -1;
      for (let i = 0; i < longs.length; i++) {
        const l = longs[i]!;
        if (!l.name.startsWith(sub)) continue;
        if (foundIndex < 0) foundIndex = i;
        else if (longs[foundIndex]!.spec !== l.spec) ambiguous.add(foundIndex).add(i);
      }
      if (ambiguous.size > 0) {
        const text = nextchar;
        nextchar = '';
        optind++;
        const list = [...ambiguous].sort((a, b) => a - b).map((i) => ` '--${longs[i]!.name}'`).join('');
        fail('ambiguous', `option '--${text}' is ambiguous; possibilities:${list}`);
      }
      found = foundIndex < 0 ? undefined : longs[foundIndex];
    }
    const text = nextchar;
    nextchar = '';
    optind++;
    if (found === undefined) return fail('unknown-long', `unrecognized option '--${text}'`);
    const mode = found.spec.arg ?? 'none';
    if (eq >= 0) {
      if (mode === 'none') fail('unexpected-argument', `option '--${found.name}' doesn't allow an argument`);
      return { name: found.spec.name, value: text.slice(eq + 1) };
    }
    if (mode === 'required') {
      if (optind >= argc) fail('missing-argument', `option '--${found.name}' requires an argument`);
      return { name: found.spec.name, value: args[optind++] };
    }
    return { name: found.spec.name, value: undefined };
  };

  const takeShort = (): ParsedOption => {
    const c = nextchar[0]!;
    nextchar = nextchar.slice(1);
    // glibc advances optind as soon as it starts on the element's last character.
    if (nextchar === '') optind++;
    const o = shorts.get(c);
    if (o === undefined) return fail('unknown-short', `invalid option -- '${c}'`);
    const mode = o.arg ?? 'none';
    if (mode === 'none') return { name: o.name, value: undefined };
    let value: string | undefined;
    if (nextchar !== '') {
      value = nextchar;
      optind++;
    } else if (mode === 'required') {
      if (optind === argc) fail('missing-argument', `option requires an argument -- '${c}'`);
      value = args[optind++];
    }
    nextchar = '';
    return { name: o.name, value };
  };

  for (;;) {
    if (nextchar === '') {
      if (lastNonopt > optind) lastNonopt = optind;
      if (firstNonopt > optind) firstNonopt = optind;
      if (!spec.inOrder) {
        if (firstNonopt !== lastNonopt && lastNonopt !== optind) exchange();
        else if (lastNonopt !== optind) firstNonopt = optind;
        while (optind < argc && isOperand(args[optind]!)) optind++;
        lastNonopt = optind;
      }
      if (optind !== argc && args[optind] === '--') {
        optind++;
        if (firstNonopt !== lastNonopt && lastNonopt !== optind) exchange();
        else if (firstNonopt === lastNonopt) firstNonopt = optind;
        lastNonopt = argc;
        optind = argc;
      }
      if (optind === argc) {
        if (firstNonopt !== lastNonopt) optind = firstNonopt;
        break;
      }
      const arg = args[optind]!;
      if (isOperand(arg)) break; // only reachable in order mode
      if (arg[1] === '-') {
        nextchar = arg.slice(2);
        const opt = takeLong();
        parsed.push(opt);
        if (stops(spec, opt.name)) return new ParsedArgs(parsed, [], opt.name);
        continue;
      }
      nextchar = arg.slice(1);
    }
    const opt = takeShort();
    parsed.push(opt);
    if (stops(spec, opt.name)) return new ParsedArgs(parsed, [], opt.name);
  }
  return new ParsedArgs(parsed, args.slice(optind));
}

function stops(spec: ArgSpec, name: string): boolean {
  return spec.options.some((o) => o.name === name && o.stop === true);
}

/** qemu-img's `-h`/`--help`, which every command accepts. */
export const HELP_OPTION: OptionSpec = { name: 'help', short: 'h', long: 'help', stop: true };

/**
 * Parse a qemu-img command's arguments: qemu-img's error dialect, `-h`/`--help` added
 * when the spec lacks them, and {@link HelpRequest} thrown when help is asked for.
 *
 * @example
 * ```ts
 * const args = parseCommandArgs('info', argv, { options: [
 *   { name: 'format', short: 'f', arg: 'required' },
 *   { name: 'output', long: 'output', arg: 'required' },
 * ] });
 * if (args.positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
 * ```
 */
export function parseCommandArgs(command: string, argv: readonly string[], spec: ArgSpec): ParsedArgs {
  const hasHelp = spec.options.some((o) => o.short === 'h' || o.name === 'help');
  const full: ArgSpec = hasHelp ? spec : { ...spec, options: [HELP_OPTION, ...spec.options] };
  const parsed = parseArgs(argv, full, { argv0: command, style: 'qemu-img' });
  if (parsed.stoppedAt === 'help') throw new HelpRequest(command);
  return parsed;
}
