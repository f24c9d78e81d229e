import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dumpBuffer, hexdumpLine, matchesPattern, parsePattern, repeatPattern, strtol } from './io-pattern.js';
import { MemoryWriter } from './main.js';

describe('strtol', () => {
  it('follows C base-0 rules', () => {
    assert.deepEqual(strtol('0xab'), { value: 171, rest: '' });
    assert.deepEqual(strtol('0253'), { value: 171, rest: '' });
    assert.deepEqual(strtol('171'), { value: 171, rest: '' });
    assert.deepEqual(strtol('08'), { value: 0, rest: '8' });
    assert.deepEqual(strtol('0x'), { value: 0, rest: 'x' });
    assert.deepEqual(strtol('-5'), { value: -5, rest: '' });
    assert.deepEqual(strtol(' +7z'), { value: 7, rest: 'z' });
    assert.deepEqual(strtol('z'), { value: 0, rest: 'z' });
  });
});

describe('parsePattern', () => {
  it('accepts byte values and rejects the rest', () => {
    assert.equal(parsePattern('0xab'), 0xab);
    assert.equal(parsePattern('0'), 0);
    assert.equal(parsePattern('255'), 255);
    assert.equal(parsePattern('-0'), 0);
    for (const bad of ['0x100', '256', '-1', 'ab', '1k', '0x', '08']) assert.equal(parsePattern(bad), undefined, bad);
  });
});

describe('matchesPattern', () => {
  it('checks exactly the given range, aligned or not', () => {
    const buf = new Uint8Array(1000).fill(7);
    assert.ok(matchesPattern(buf, 0, 1000, 7));
    assert.ok(matchesPattern(buf.subarray(3), 1, 990, 7));
    buf[500] = 8;
    assert.ok(!matchesPattern(buf, 0, 1000, 7));
    assert.ok(!matchesPattern(buf.subarray(1), 0, 999, 7));
    assert.ok(matchesPattern(buf, 501, 499, 7));
    assert.ok(matchesPattern(buf, 0, 500, 7));
    assert.ok(!matchesPattern(buf, 497, 4, 7));
    assert.ok(matchesPattern(buf, 10, 0, 9));
    buf[999] = 0;
    assert.ok(!matchesPattern(buf, 501, 499, 7));
  });
});

describe('repeatPattern', () => {
  it('repeats the source to the requested length', () => {
    assert.deepEqual([...repeatPattern(new Uint8Array([1, 2, 3]), 8)], [1, 2, 3, 1, 2, 3, 1, 2]);
    assert.deepEqual([...repeatPattern(new Uint8Array([1, 2, 3]), 2)], [1, 2]);
    assert.deepEqual([...repeatPattern(new Uint8Array([9]), 0)], []);
  });
});

describe('hexdump', () => {
  it('formats lines like qemu-io read -v', () => {
    // From `qemu-io -c 'read -v 0 33'` on a 0xab-filled image.
    assert.equal(hexdumpLine(new Uint8Array(16).fill(0xab), 0), '00000000:  ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab  ................\n');
    assert.equal(hexdumpLine(new Uint8Array([0xab]), 0x20), '00000020:  ab  .\n');
    assert.equal(hexdumpLine(new Uint8Array([0x41, 0x7a, 0x30, 0x20, 0x2e]), 0x1_0000_0000), '100000000:  41 7a 30 20 2e  Az0..\n');
  });

  it('dumps whole buffers with running offsets', async () => {
    const out = new MemoryWriter();
    const buf = new Uint8Array(20).fill(0xab);
    await dumpBuffer(out, buf, 1000);
    assert.equal(
      out.text(),
      '000003e8:  ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab  ................\n000003f8:  ab ab ab ab  ....\n',
    );
  });

  it('flushes large dumps in chunks', async () => {
    let flushes = 0;
    let writes = 0;
    const out = { isTTY: false, write: () => (++writes, false), flush: async () => void flushes++ };
    await dumpBuffer(out, new Uint8Array(16 * 3000), 0);
    assert.equal(writes, 3);
    assert.equal(flushes, 3);
  });
});
