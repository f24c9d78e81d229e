import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Qcow2Error } from '../errors.js';
import { formatFixed, formatIoNumberError, formatIoSize, parseIoNumber, parseSizeArg, strtosz } from './size.js';

const ok = (text: string): bigint => {
  const r = strtosz(text);
  assert.ok(r.ok, `${text} should parse, got ${JSON.stringify(r.ok ? '' : r.error)}`);
  return r.value;
};
const err = (text: string): string => {
  const r = strtosz(text);
  assert.ok(!r.ok, `${text} should fail`);
  return r.error;
};

describe('strtosz', () => {
  // Every expected value below was printed by `qemu-img create -f qcow2 x <size>` (7.2).
  it('parses integers, hex and suffixes like qemu', () => {
    const cases: Array<[string, bigint]> = [
      ['0', 0n], ['0b', 0n], ['1b', 1n], ['1B', 1n], ['1K', 1024n], ['1m', 1048576n], ['1g', 1073741824n],
      ['1t', 1099511627776n], ['1T', 1099511627776n], ['1p', 1125899906842624n], ['1P', 1125899906842624n],
      ['1e', 1152921504606846976n], ['1E', 1152921504606846976n], ['00010k', 10240n],
      ['0x10', 16n], ['0x10k', 16384n], ['0x1e', 30n], ['+0x10', 16n], ['+1k', 1024n], [' 1k', 1024n],
      ['9223372036854775807', 9223372036854775807n], ['0x7fffffffffffffff', 9223372036854775807n],
    ];
    for (const [text, value] of cases) assert.equal(ok(text), value, text);
  });

  it('parses fractions with a suffix, rounding half up', () => {
    const cases: Array<[string, bigint]> = [
      ['1.5G', 1610612736n], ['1.1k', 1126n], ['1.1M', 1153434n], ['3.3G', 3543348019n], ['0.3333333333k', 341n],
      ['1.0', 1n], ['1.0k', 1024n], ['1.k', 1024n], ['01.5k', 1536n], ['0.5k', 512n], ['1.5E', 1729382256910270464n],
      ['0.1E', 115292150460684704n], ['7.9999E', 9223256744704315136n], ['7.9999999999999E', 9223372036854660480n],
      ['0.0000001k', 0n], ['0.00048828125k', 1n], ['0.00146484375k', 2n], ['0.999999999999999999999M', 0n],
      ['1.99999999999999999999k', 1024n], ['4.9999999999999999E', 5764607523034234752n],
      ['7.99999999999999999E', 8070450532247928832n], ['1.00000000000000000001', 1n], ['1.0000000000000001k', 1024n],
    ];
    for (const [text, value] of cases) assert.equal(ok(text), value, text);
  });

  it('rejects what qemu rejects', () => {
    for (const text of ['', 'k', '1x', '1.5', '.5k', '0.5', '0x1.5k', '0x', '0xg', '1 k', '1k ', '0.1b', '1.1b', '1.5e3k', '1.5k5', '1kB', '1.5.5k', '-1', '-0x10', '0x0.5k', '1.0000000001', '1e3']) {
      assert.equal(err(text), 'EINVAL', text);
    }
  });

  it('reports ERANGE for values beyond 64 bits', () => {
    assert.equal(err('16E'), 'ERANGE');
    assert.equal(err('18446744073709551616'), 'ERANGE');
    assert.equal(err('0x10000000000000000'), 'ERANGE');
    assert.equal(ok('18446744073709551615'), 18446744073709551615n);
    assert.equal(ok('15E'), 15n << 60n);
    // Trailing junk wins over overflow.
    assert.equal(err('99999999999999999999k'), 'EINVAL');
  });

  it('supports the MiB default and metric variants', () => {
    const r = strtosz('2', { defaultSuffix: 'M' });
    assert.deepEqual(r, { ok: true, value: 2097152n });
    assert.deepEqual(strtosz('1.5k', { unit: 1000 }), { ok: true, value: 1500n });
  });
});

describe('parseSizeArg (qemu-img cvtnum)', () => {
  it('returns numbers', () => {
    assert.equal(parseSizeArg('image size', '1.5G'), 1610612736);
    assert.equal(parseSizeArg('image size', '7E'), 7 * 2 ** 60);
  });

  it("uses qemu-img's two-line syntax message", () => {
    assert.throws(
      () => parseSizeArg('image size', '1x'),
      (e: unknown) =>
        e instanceof Qcow2Error &&
        e.code === 'INVALID_ARGUMENT' &&
        e.message ===
          'Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
    );
  });

  it("uses qemu-img's range message for overflow and out-of-range values", () => {
    const range = 'Invalid start offset specified. Must be between 0 and 9223372036854775807.';
    for (const text of ['8E', '99999999999999999999', '18446744073709551615']) {
      assert.throws(() => parseSizeArg('start offset', text), { message: range });
    }
    assert.throws(() => parseSizeArg('cluster size', '1M', { min: 512, max: 65536 }), {
      message: 'Invalid cluster size specified. Must be between 512 and 65536.',
    });
  });
});

describe('parseIoNumber (qemu-io cvtnum)', () => {
  it('parses like qemu_strtosz', () => {
    assert.equal(parseIoNumber('64k'), 65536);
    assert.equal(parseIoNumber('010'), 10);
    assert.equal(parseIoNumber('9223372036854775807'), 9223372036854775807);
  });

  it("throws qemu-io's texts", () => {
    assert.throws(() => parseIoNumber('x'), { message: 'Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x' });
    assert.throws(() => parseIoNumber('-1'), { message: 'Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- -1' });
    assert.throws(() => parseIoNumber('8E'), (e: unknown) => e instanceof Qcow2Error && e.message === 'Parsing error: argument too large -- 8E' && e.context.errno === 'ERANGE');
    assert.equal(formatIoNumberError('ERANGE', 'y'), 'Parsing error: argument too large -- y');
  });
});

describe('formatFixed', () => {
  it('rounds half to even on the exact binary value, like glibc', () => {
    assert.equal(formatFixed(1.0625, 3), '1.062');
    assert.equal(formatFixed(1.1875, 3), '1.188');
    assert.equal(formatFixed(0.5, 0), '0');
    assert.equal(formatFixed(1.5, 0), '2');
    assert.equal(formatFixed(2.675, 2), '2.67'); // 2.675 is 2.67499999... in binary
    assert.equal(formatFixed(0.004, 2), '0.00');
    assert.equal(formatFixed(512, 6), '512.000000');
    assert.equal(formatFixed(-1.25, 1), '-1.2');
    assert.equal(formatFixed(5e-324, 3), '0.000');
    assert.equal(formatFixed(2 ** 70, 1), '1180591620717411303424.0');
  });

  it('prints inf and nan like C', () => {
    assert.equal(formatFixed(Infinity, 3), 'inf');
    assert.equal(formatFixed(-Infinity, 3), '-inf');
    assert.equal(formatFixed(NaN, 3), 'nan');
  });
});

describe('formatIoSize (qemu-io cvtstr)', () => {
  it('matches qemu-io output', () => {
    assert.equal(formatIoSize(0), '0 bytes');
    assert.equal(formatIoSize(1), '1 bytes');
    assert.equal(formatIoSize(295.580335), '295.580335 bytes');
    assert.equal(formatIoSize(65536), '64 KiB');
    assert.equal(formatIoSize(1536), '1.500 KiB');
    assert.equal(formatIoSize(720896), '704 KiB');
    assert.equal(formatIoSize(512 * 2 ** 20), '512 MiB');
    assert.equal(formatIoSize(345.224 * 2 ** 20), '345.224 MiB');
    assert.equal(formatIoSize(3 * 2 ** 30), '3 GiB');
    assert.equal(formatIoSize(2 ** 40), '1 TiB');
    assert.equal(formatIoSize(2 ** 50), '1 PiB');
    assert.equal(formatIoSize(2 ** 61), '2 EiB');
    assert.equal(formatIoSize(1088), '1.062 KiB');
  });
});
