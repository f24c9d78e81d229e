import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  hasHelpOption,
  hexSuffixWarning,
  isValidOptionList,
  OptionError,
  optionHelpText,
  parseQemuOpts,
  readOptionValue,
  splitOptionString,
  type QemuOptDesc,
} from './option-string.js';

const DESCS: readonly QemuOptDesc[] = [
  { name: 'cluster_size', type: 'size', defaultValue: '65536', help: 'qcow2 cluster size' },
  { name: 'lazy_refcounts', type: 'bool', defaultValue: 'off', help: 'Postpone refcount updates' },
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'refcount_bits', type: 'number', defaultValue: '16', help: 'Width of a reference count entry in bits' },
  { name: 'data_file_raw', type: 'bool', help: 'The external data file must stay valid as a raw image' },
];

function fails(text: string, message: string, hint?: string): void {
  assert.throws(
    () => parseQemuOpts(text, DESCS),
    (e: unknown) => e instanceof OptionError && e.message === message && e.hint === hint,
    text,
  );
}

describe('option-string', () => {
  test('is_valid_option_list', () => {
    for (const ok of ['a=b', 'a=b,c=d', 'a=b,,', 'a=b,,,,', 'x']) assert.equal(isValidOptionList(ok), true, ok);
    for (const bad of ['', ',a=b', 'a=b,', 'a=b,,,']) assert.equal(isValidOptionList(bad), false, bad);
  });

  test('values: ",," is a comma, a single comma ends the value', () => {
    assert.deepEqual(readOptionValue('a,,b,c', 0), { value: 'a,b', end: 4 });
    assert.deepEqual(readOptionValue('abc', 0), { value: 'abc', end: 3 });
    assert.deepEqual(readOptionValue(',,,,', 0), { value: ',,', end: 4 });
  });

  test('splitting: name=value, flags, "no" flags, id dropped', () => {
    assert.deepEqual(splitOptionString('backing_file=a,,b c,lazy_refcounts,nodata_file_raw,id=x,size=1M'), [
      { name: 'backing_file', value: 'a,b c' },
      { name: 'lazy_refcounts', value: 'on' },
      { name: 'data_file_raw', value: 'off' },
      { name: 'size', value: '1M' },
    ]);
    assert.deepEqual(splitOptionString('a=b=c'), [{ name: 'a', value: 'b=c' }]);
    assert.deepEqual(splitOptionString('a='), [{ name: 'a', value: '' }]);
  });

  test('help requests', () => {
    assert.equal(hasHelpOption('help'), true);
    assert.equal(hasHelpOption('?'), true);
    assert.equal(hasHelpOption('cluster_size=4k,help'), true);
    assert.equal(hasHelpOption('backing_file=help'), false);
    assert.equal(hasHelpOption('a=b,,help'), false);
  });

  test('typed values and QEMU messages', () => {
    const o = parseQemuOpts('cluster_size=4k,lazy_refcounts=yes,refcount_bits=0x10,size=1.5k,backing_file=x', DESCS);
    assert.equal(o.get('cluster_size')?.number, 4096n);
    assert.equal(o.get('lazy_refcounts')?.bool, true);
    assert.equal(o.get('refcount_bits')?.number, 16n);
    assert.equal(o.get('size')?.number, 1536n);
    assert.equal(parseQemuOpts('refcount_bits=010', DESCS).get('refcount_bits')?.number, 8n);
    assert.equal(parseQemuOpts('refcount_bits=-1', DESCS).get('refcount_bits')?.number, 2n ** 64n - 1n);
    for (const t of ['on', 'yes', 'true', 'y']) assert.equal(parseQemuOpts(`lazy_refcounts=${t}`, DESCS).get('lazy_refcounts')?.bool, true);
    for (const f of ['off', 'no', 'false', 'n']) assert.equal(parseQemuOpts(`lazy_refcounts=${f}`, DESCS).get('lazy_refcounts')?.bool, false);
    fails('foo=bar', "Invalid parameter 'foo'");
    fails('lazy_refcounts=maybe', "Parameter 'lazy_refcounts' expects 'on' or 'off'");
    fails('lazy_refcounts=on,,', "Parameter 'lazy_refcounts' expects 'on' or 'off'");
    fails('refcount_bits=abc', "Parameter 'refcount_bits' expects a number");
    fails('refcount_bits=99999999999999999999', "Value '99999999999999999999' is too large for parameter 'refcount_bits'");
    fails('cluster_size=99999999999999999999', "Value '99999999999999999999' is out of range for parameter 'cluster_size'");
    fails(
      'cluster_size=-1',
      "Parameter 'cluster_size' expects a non-negative number below 2^64",
      'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.',
    );
    // The first bad item stops parsing.
    fails('foo=1,lazy_refcounts=maybe', "Invalid parameter 'foo'");
  });

  test('the last occurrence wins; print() is qemu_opts_print()', () => {
    const o = parseQemuOpts('cluster_size=4k,cluster_size=8k,backing_file=a,,b c,lazy_refcounts=yes', DESCS);
    o.add('size', '1048576');
    assert.equal(o.get('cluster_size')?.number, 8192n);
    assert.equal(o.print(), 'cluster_size=8192 lazy_refcounts=yes size=1048576 backing_file=a,,b c refcount_bits=16');
    const d = parseQemuOpts(undefined, DESCS);
    assert.equal(d.print(), 'cluster_size=65536 lazy_refcounts=off refcount_bits=16');
    assert.equal(parseQemuOpts('refcount_bits=-1', DESCS).print(), 'cluster_size=65536 lazy_refcounts=off refcount_bits=-1');
  });

  test('hex numbers with a suffix get QEMU\'s deprecation warning', () => {
    assert.equal(hexSuffixWarning('0x10k'), 'Using a multiplier suffix on hex numbers is deprecated: 0x10k');
    assert.equal(hexSuffixWarning('0x10'), undefined);
    assert.equal(hexSuffixWarning('16k'), undefined);
    const warnings: string[] = [];
    parseQemuOpts('cluster_size=0x1k', DESCS, (w) => warnings.push(w));
    assert.deepEqual(warnings, ['Using a multiplier suffix on hex numbers is deprecated: 0x1k']);
  });

  test('help listing is sorted and aligned like qemu-img', () => {
    assert.equal(
      optionHelpText(DESCS.slice(0, 3)),
      '  cluster_size=<size>    - qcow2 cluster size\n' +
        '  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n' +
        '  size=<size>            - Virtual disk size\n',
    );
  });
});
