import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ArgError, HELP_OPTION, parseArgs, parseCommandArgs, type ArgSpec } from './args.js';
import { CliError, HelpRequest } from './cli-error.js';

// A subset of qemu-img info's options: "hf:U" + --output, --force-share, --backing-chain.
const INFO: ArgSpec = {
  options: [
    HELP_OPTION,
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'output', long: 'output', arg: 'required' },
    { name: 'backing-chain', long: 'backing-chain' },
    { name: 'quiet', short: 'q' },
  ],
};

// Long options of qemu-io in its table order, for the ambiguity message.
const QEMU_IO: ArgSpec = {
  options: [
    { name: 'cmd', short: 'c', long: 'cmd', arg: 'required' },
    { name: 'read-only', short: 'r', long: 'read-only' },
    { name: 'copy-on-read', short: 'C', long: 'copy-on-read' },
    { name: 'cache', short: 't', long: 'cache', arg: 'required' },
  ],
};

/** The ArgError thrown by parsing `argv`. */
function errorOf(argv: string[], spec: ArgSpec, argv0 = 'info', style: 'qemu-img' | 'getopt' = 'qemu-img'): ArgError {
  try {
    parseArgs(argv, spec, { argv0, style });
  } catch (e) {
    assert.ok(e instanceof ArgError, String(e));
    return e;
  }
  assert.fail(`no error for ${argv.join(' ')}`);
}

describe('parseArgs values', () => {
  it('takes attached and separate short values and grouped flags', () => {
    const a = parseArgs(['-fqcow2', '-Uq', 'disk'], INFO);
    assert.equal(a.get('format'), 'qcow2');
    assert.ok(a.has('force-share') && a.has('quiet'));
    assert.deepEqual(a.positionals, ['disk']);
    assert.equal(parseArgs(['-f', 'raw', 'disk'], INFO).get('format'), 'raw');
    assert.equal(parseArgs(['-qf', 'raw', 'disk'], INFO).get('format'), 'raw');
    assert.equal(parseArgs(['-qfraw', 'disk'], INFO).get('format'), 'raw');
  });

  it('takes long values with = or separate, and unique prefixes', () => {
    assert.equal(parseArgs(['--output=json', 'd'], INFO).get('output'), 'json');
    assert.equal(parseArgs(['--output', 'json', 'd'], INFO).get('output'), 'json');
    // qemu-img 7.2 accepts "info --outp=json" and "--force-s".
    assert.equal(parseArgs(['--outp=json', 'd'], INFO).get('output'), 'json');
    assert.ok(parseArgs(['--force-s', 'd'], INFO).has('force-share'));
    assert.equal(parseArgs(['--output=', 'd'], INFO).get('output'), '');
  });

  it('keeps the last value and lists all values in order', () => {
    const a = parseArgs(['--output=json', '--output=human', '-c', 'a', '-c', 'b'], { options: [...INFO.options, { name: 'cmd', short: 'c', arg: 'required' }] });
    assert.equal(a.get('output'), 'human');
    assert.deepEqual(a.all('cmd'), ['a', 'b']);
    assert.deepEqual(a.options.map((o) => o.name), ['output', 'output', 'cmd', 'cmd']);
    assert.equal(a.get('format'), undefined);
  });

  it('permutes options that follow operands, as GNU getopt does', () => {
    const a = parseArgs(['a.qcow2', '-f', 'qcow2', 'b', '--output', 'json', 'c'], INFO);
    assert.deepEqual(a.positionals, ['a.qcow2', 'b', 'c']);
    assert.equal(a.get('output'), 'json');
  });

  it('ends options at -- and treats - as an operand', () => {
    assert.deepEqual(parseArgs(['-U', '--', '-x'], INFO).positionals, ['-x']);
    assert.deepEqual(parseArgs(['a.qcow2', '--', '-U'], INFO).positionals, ['a.qcow2', '-U']);
    assert.deepEqual(parseArgs(['-', '-U'], INFO).positionals, ['-']);
    assert.deepEqual(parseArgs(['--'], INFO).positionals, []);
  });

  it('stops at the first operand in order mode', () => {
    const top: ArgSpec = { inOrder: true, options: [{ name: 'version', short: 'V' }] };
    assert.deepEqual(parseArgs(['info', '-x', 'a'], top).positionals, ['info', '-x', 'a']);
    assert.deepEqual(parseArgs(['--', 'info', 'a'], top).positionals, ['info', 'a']);
    assert.equal(parseArgs(['-V', 'info', '-V'], top).options.length, 1);
  });

  it('stops at a stop option before later errors', () => {
    const a = parseArgs(['-h', '-x'], INFO);
    assert.equal(a.stoppedAt, 'help');
    assert.throws(() => parseArgs(['-x', '-h'], INFO), ArgError);
  });

  it('accepts an attached value for an optional argument only', () => {
    const spec: ArgSpec = { options: [{ name: 'r', short: 'r', arg: 'optional' }, { name: 'x', long: 'x', arg: 'optional' }] };
    assert.equal(parseArgs(['-rall'], spec).get('r'), 'all');
    const a = parseArgs(['-r', 'all'], spec);
    assert.equal(a.get('r'), undefined);
    assert.deepEqual(a.positionals, ['all']);
    assert.equal(parseArgs(['--x=1'], spec).get('x'), '1');
    assert.equal(parseArgs(['--x', '1'], spec).get('x'), undefined);
  });

  it('treats different long names of one option as one match', () => {
    const spec: ArgSpec = { options: [{ name: 'share', long: ['force-share', 'force-shared'] }] };
    assert.ok(parseArgs(['--force'], spec).has('share'));
  });

  it('rejects invalid short option specs', () => {
    assert.throws(() => parseArgs([], { options: [{ name: 'x', short: 'xy' }] }), TypeError);
  });
});

describe('parseArgs errors, qemu-img dialect (checked against qemu-img 7.2)', () => {
  it('quotes the argv element glibc points at', () => {
    assert.equal(errorOf(['-x', 'a.qcow2'], INFO).message, "unrecognized option '-x'");
    assert.equal(errorOf(['-Ux', 'a.qcow2'], INFO).message, "unrecognized option '-Ux'");
    // Mid-group, glibc has not advanced optind: qemu-img names the previous element.
    assert.equal(errorOf(['-xU', 'a.qcow2'], INFO).message, "unrecognized option 'info'");
    assert.equal(errorOf(['a', 'b', '-xU'], INFO).message, "unrecognized option 'b'");
    assert.equal(errorOf(['-U', 'a', '-f', 'qcow2', 'b', '-xU'], INFO).message, "unrecognized option 'b'");
    assert.equal(errorOf(['--foo', 'a.qcow2'], INFO).message, "unrecognized option '--foo'");
    assert.equal(errorOf(['--force-share=1', 'a'], INFO).message, "unrecognized option '--force-share=1'");
  });

  it('reports missing arguments', () => {
    assert.equal(errorOf(['-f'], INFO).message, "missing argument for option '-f'");
    assert.equal(errorOf(['-Uf'], INFO).message, "missing argument for option '-Uf'");
    assert.equal(errorOf(['a', '-U', 'b', '-f'], INFO).message, "missing argument for option '-f'");
    assert.equal(errorOf(['a', '--output'], INFO).message, "missing argument for option '--output'");
  });

  it('reports an ambiguous prefix as unrecognized', () => {
    const convert: ArgSpec = { options: [{ name: 'tio', long: 'target-image-opts' }, { name: 'tiz', long: 'target-is-zero' }] };
    assert.equal(errorOf(['a', '--target-i', 'b'], convert, 'convert').message, "unrecognized option '--target-i'");
    assert.equal(errorOf(['a', '--target-i=1', 'b'], convert, 'convert').message, "unrecognized option '--target-i=1'");
  });

  it('is a usage CliError with the kind and both texts', () => {
    const e = errorOf(['-x'], INFO);
    assert.ok(e instanceof CliError);
    assert.equal(e.usage, true);
    assert.equal(e.exitCode, 1);
    assert.equal(e.kind, 'unknown-short');
    assert.equal(e.getoptMessage, "invalid option -- 'x'");
    assert.equal(e.qemuImgMessage, "unrecognized option '-x'");
  });

  it('carries the options parsed before the error', () => {
    const e = errorOf(['-q', '-f', 'raw', '-x'], INFO);
    assert.deepEqual(e.parsed, [{ name: 'quiet', value: undefined }, { name: 'format', value: 'raw' }]);
  });
});

describe('parseArgs errors, glibc dialect (checked against qemu-io 7.2)', () => {
  const msg = (argv: string[]): string => errorOf(argv, QEMU_IO, 'qemu-io', 'getopt').message;

  it('matches glibc messages', () => {
    assert.equal(msg(['-rx']), "invalid option -- 'x'");
    assert.equal(msg(['-c']), "option requires an argument -- 'c'");
    assert.equal(msg(['--cmd']), "option '--cmd' requires an argument");
    assert.equal(msg(['--read-only=1']), "option '--read-only' doesn't allow an argument");
    assert.equal(msg(['--rea=1']), "option '--read-only' doesn't allow an argument");
    assert.equal(msg(['--foo=bar']), "unrecognized option '--foo=bar'");
    assert.equal(msg(['--c', 'x']), "option '--c' is ambiguous; possibilities: '--cmd' '--copy-on-read' '--cache'");
  });

  it('is not a usage error', () => {
    assert.equal(errorOf(['-x'], QEMU_IO, 'qemu-io', 'getopt').usage, false);
  });

  it('accepts an unambiguous prefix', () => {
    assert.equal(parseArgs(['--ca=none'], QEMU_IO).get('cache'), 'none');
  });
});

describe('parseCommandArgs', () => {
  const spec: ArgSpec = { options: [{ name: 'format', short: 'f', arg: 'required' }] };

  it('adds -h/--help and throws HelpRequest when seen first', () => {
    assert.throws(() => parseCommandArgs('info', ['-h', '-x'], spec), (e: unknown) => e instanceof HelpRequest && e.command === 'info');
    assert.throws(() => parseCommandArgs('info', ['--he'], spec), HelpRequest);
    assert.throws(() => parseCommandArgs('info', ['-x', '-h'], spec), (e: unknown) => e instanceof ArgError && e.message === "unrecognized option '-x'");
  });

  it('returns parsed args otherwise', () => {
    const a = parseCommandArgs('info', ['x.img', '-fraw'], spec);
    assert.equal(a.get('format'), 'raw');
    assert.deepEqual(a.positionals, ['x.img']);
  });
});
