import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  allocatedRun,
  allocatedRunMin,
  allocatedRunMinByScan,
  findNonzeroSector,
  firstDifferentSector,
  rangeIsZero,
  sectorIsZero,
  SECTOR,
  wordsOf,
} from './sector-scan.js';

/**
 * Build sectors from a pattern like "DDZZ": D = data sector, Z = zero sector, d = data sector
 * whose first byte is non-zero (what random data looks like to the scans' quick checks).
 */
function sectors(spec: string): Int32Array {
  const buf = new Uint8Array(spec.length * SECTOR);
  for (let i = 0; i < spec.length; i++) {
    // Put the only non-zero byte at the END of the sector so a scan that stops early fails.
    if (spec[i] === 'D') buf[i * SECTOR + SECTOR - 1] = 1;
    if (spec[i] === 'd') buf[i * SECTOR] = 1;
  }
  return wordsOf(buf);
}

test('sectorIsZero() sees a single non-zero byte anywhere in the sector', () => {
  for (const pos of [0, 1, 255, 256, 510, 511]) {
    const buf = new Uint8Array(2 * SECTOR);
    buf[SECTOR + pos] = 0x80;
    const w = wordsOf(buf);
    assert.equal(sectorIsZero(w, 0), true);
    assert.equal(sectorIsZero(w, 1), false, `byte ${pos}`);
  }
});

test('rangeIsZero() handles unaligned starts, ends and word-sized values like -0.0', () => {
  const buf = new Uint8Array(100);
  assert.equal(rangeIsZero(buf, 3, 97), true);
  buf[96] = 1;
  assert.equal(rangeIsZero(buf, 3, 96), true);
  assert.equal(rangeIsZero(buf, 3, 97), false);
  buf[96] = 0;
  buf[7] = 0x80; // the sign bit of a float64 -0 pattern
  assert.equal(rangeIsZero(buf.subarray(1), 0, 99), false);
  assert.equal(rangeIsZero(buf, 8, 100), true);
});

test('allocatedRun() follows qemu is_allocated_sectors rounding', () => {
  assert.equal(allocatedRun(sectors('DDDDDDDDDDDDDDDD'), 0, 16, 0, 8), 16);
  assert.equal(allocatedRun(sectors('ZZZZZZZZZZZZZZZZ'), 0, 16, 0, 8), -16);
  assert.equal(allocatedRun(sectors('ZZZZZZZZDDDDDDDD'), 0, 16, 0, 8), -8);
  // A zero run shorter than the unaligned tail counts as data, rounded up to alignment.
  assert.equal(allocatedRun(sectors('ZZZDDDDDDDDDDDDD'), 0, 16, 0, 8), 8);
  // Data ends unaligned: extended to the next boundary.
  assert.equal(allocatedRun(sectors('DDDDDZZZZZZZZZZZ'), 0, 16, 0, 8), 8);
  // Zero run ending unaligned: cut back to the boundary (sector numbers start at 3).
  assert.equal(allocatedRun(sectors('ZZZZZZZZZZDDDDDD'), 0, 16, 3, 8), -5);
  // The whole range has one state: no alignment games.
  assert.equal(allocatedRun(sectors('ZZZZZZZZZZ'), 0, 10, 3, 8), -10);
  assert.equal(allocatedRun(sectors('DDD'), 0, 3, 5, 8), 3);
  // Data extension never passes the end.
  assert.equal(allocatedRun(sectors('DDZZ'), 0, 4, 0, 8), 4);
  // Start inside the buffer.
  assert.equal(allocatedRun(sectors('DDDDDDDDZZZZZZZZ'), 8, 8, 8, 8), -8);
  assert.equal(allocatedRun(sectors(''), 0, 0, 0, 8), 0);
});

test('allocatedRunMin() swallows zero runs shorter than min after data, like qemu', () => {
  assert.equal(allocatedRunMin(sectors('DDDDDDDDZZZZDDDD'), 0, 16, 0, 8, 8), 16);
  assert.equal(allocatedRunMin(sectors('DDDDDDDDZZZZZZZZZZZZZZZZDDDDDDDD'), 0, 32, 0, 8, 8), 8);
  assert.equal(allocatedRunMin(sectors('DDDDDDDDZZZZZZZZZZZZZZZZDDDDDDDD'), 8, 24, 8, 8, 8), -16);
  assert.equal(allocatedRunMin(sectors('ZZZDDDDDDDDDDDDD'), 0, 16, 0, 8, 8), 16);
  assert.equal(allocatedRunMin(sectors('DDDDDZZZZZZZZZZZ'), 0, 16, 0, 8, 8), 8);
  // A leading zero run is reported even when it is shorter than min (qemu only merges after data).
  assert.equal(allocatedRunMin(sectors('ZZZZZZZZDDDDDDDD'), 0, 16, 0, 16, 8), -8);
  // n < min: min shrinks to n.
  assert.equal(allocatedRunMin(sectors('DDZZ'), 0, 4, 0, 8, 8), 4);
  // Trailing short zero run after data is left out (becomes the next call's zero run).
  assert.equal(allocatedRunMin(sectors('DDDDDDDDZZZZZZZZ'), 0, 16, 0, 16, 8), 8);
  // -S 1k: min 2 sectors, alignment 2.
  assert.equal(allocatedRunMin(sectors('DDZDDZDD'), 0, 8, 0, 2, 2), 8);
  assert.equal(allocatedRunMin(sectors('DDZZDDZD'), 0, 8, 0, 2, 2), 2); // a zero run of exactly min ends it
  assert.equal(allocatedRunMin(sectors('DDZZZZDD'), 0, 8, 0, 2, 2), 2);
});

test('allocatedRunMin() answers like the full loop on random sector patterns', () => {
  let seed = 12345;
  const rnd = (k: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % k;
  for (let trial = 0; trial < 4000; trial++) {
    // Mostly data with zero runs of every length, some of them long.
    let spec = '';
    const len = 1 + rnd(80);
    while (spec.length < len) spec += rnd(3) === 0 ? 'Z'.repeat(1 + rnd(rnd(4) === 0 ? 20 : 6)) : (rnd(2) === 0 ? 'D' : 'd').repeat(1 + rnd(12));
    spec = spec.slice(0, len);
    const words = sectors(spec);
    const min = 1 + rnd(16);
    const alignment = 2 ** rnd(5);
    const first = rnd(len);
    const n = len - first;
    const sectorNum = rnd(64) + first;
    assert.equal(allocatedRunMin(words, first, n, sectorNum, min, alignment), allocatedRunMinByScan(words, first, n, sectorNum, min, alignment),
      `${spec} first=${first} sectorNum=${sectorNum} min=${min} alignment=${alignment}`);
  }
});

test('findNonzeroSector() reports the sector start, including a partial last sector', () => {
  const buf = new Uint8Array(3 * SECTOR + 100);
  assert.equal(findNonzeroSector(buf, buf.length), -1);
  buf[SECTOR * 2 + 511] = 9;
  assert.equal(findNonzeroSector(buf, buf.length), 2 * SECTOR);
  buf[SECTOR * 2 + 511] = 0;
  buf[3 * SECTOR + 99] = 9;
  assert.equal(findNonzeroSector(buf, buf.length), 3 * SECTOR);
  assert.equal(findNonzeroSector(buf, 3 * SECTOR + 99), -1);
});

test('firstDifferentSector() reports the first differing sector start, aligned or not', () => {
  const a = new Uint8Array(8 * SECTOR + 8);
  const b = new Uint8Array(8 * SECTOR + 8);
  assert.equal(firstDifferentSector(a, b, a.length), -1);
  b[5 * SECTOR + 300] = 1;
  assert.equal(firstDifferentSector(a, b, a.length), 5 * SECTOR);
  b[2 * SECTOR] = 1;
  assert.equal(firstDifferentSector(a, b, a.length), 2 * SECTOR);
  assert.equal(firstDifferentSector(a.subarray(1), b.subarray(1), 2 * SECTOR - 1), -1);
  assert.equal(firstDifferentSector(a.subarray(1), b.subarray(1), 2 * SECTOR), SECTOR);
  const c = new Uint8Array(8 * SECTOR + 8);
  c[8 * SECTOR + 7] = 1;
  assert.equal(firstDifferentSector(a, c, a.length), 8 * SECTOR);
  assert.equal(firstDifferentSector(a, c, 8 * SECTOR + 7), -1);
});
