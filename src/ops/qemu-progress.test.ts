import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addChunkPercent, formatFixed2, progressLine, QemuProgress } from './qemu-progress.js';

test('formatFixed2() rounds exact halves to even like glibc printf', () => {
  assert.equal(formatFixed2(0), '0.00');
  assert.equal(formatFixed2(100), '100.00');
  assert.equal(formatFixed2(34.375), '34.38');
  assert.equal(formatFixed2(0.125), '0.12');
  assert.equal(formatFixed2(0.375), '0.38');
  assert.equal(formatFixed2(6.25), '6.25');
  assert.equal(formatFixed2(Math.fround(100 / 3)), '33.33');
  assert.equal(formatFixed2(Math.fround(2.675)), '2.67'); // 2.67499995...
  assert.equal(formatFixed2(Math.fround(0.005)), '0.00');
  assert.equal(formatFixed2(99.995), '100.00');
});

test('progressLine() has qemu-img layout', () => {
  assert.equal(progressLine(12.5), '    (12.50/100%)\r');
});

test('QemuProgress prints only after min_skip, and always 0 and 100', () => {
  const out: string[] = [];
  const p = new QemuProgress(1.0, (s) => out.push(s));
  p.set(0);
  p.set(0.5);
  p.set(1.0);
  p.set(1.01);
  p.set(2.0);
  p.set(2.5);
  p.set(100);
  p.set(100);
  p.end();
  assert.deepEqual(out, [
    '    (0.00/100%)\r',
    '    (1.01/100%)\r',
    '    (2.50/100%)\r',
    '    (100.00/100%)\r',
    '    (100.00/100%)\r',
    '\n',
  ]);
});

test('addChunkPercent() accumulates like qemu-img compare (seen: 6.25 then 12.50 on 64 MiB)', () => {
  const base = 64 * 1024 * 1024;
  let c = addChunkPercent(0, 1 << 20, base);
  assert.equal(c, 1.5625);
  c = addChunkPercent(c, 3 << 20, base);
  assert.equal(formatFixed2(c), '6.25');
  c = addChunkPercent(c, 2 << 20, base);
  assert.equal(c > 9.3 && c < 9.4, true);
  assert.equal(addChunkPercent(99, base, base), 100);
});
