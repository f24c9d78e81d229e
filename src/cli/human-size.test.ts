import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sizeToStr } from './human-size.js';

/** [bytes, what qemu-img 7.2 printed for it] (info "virtual size"/"disk size", snapshot "VM SIZE"). */
const SEEN: Array<[number, string]> = [
  [0, '0 B'], [1, '1 B'], [512, '512 B'], [999, '999 B'],
  [1000, '0.977 KiB'], [1023, '0.999 KiB'], [1024, '1 KiB'], [1025, '1 KiB'], [1126, '1.1 KiB'], [1127, '1.1 KiB'],
  [1536, '1.5 KiB'], [2560, '2.5 KiB'], [4096, '4 KiB'], [10239, '10 KiB'], [10240, '10 KiB'],
  [102400, '100 KiB'], [200704, '196 KiB'], [1022975, '999 KiB'], [1022976, '999 KiB'], [1022977, '999 KiB'],
  [1023487, '999 KiB'], [1023488, '1e+03 KiB'], [1023999, '1e+03 KiB'],
  [1047552, '0.999 MiB'], [1048063, '1 MiB'], [1048064, '1 MiB'], [1048575, '1 MiB'], [1048576, '1 MiB'],
  [1314816, '1.25 MiB'], [1359872, '1.3 MiB'], [1572864, '1.5 MiB'], [1708032, '1.63 MiB'], [2297856, '2.19 MiB'],
  [5767168, '5.5 MiB'], [104857600, '100 MiB'], [1048051712, '1e+03 MiB'],
  [1073741824, '1 GiB'], [4294967295, '4 GiB'], [4294967296, '4 GiB'], [10737418240, '10 GiB'], [1073204953088, '1e+03 GiB'],
  [1099511627776, '1 TiB'], [1099199120913203, '1e+03 TiB'], [1125899906842623, '1 PiB'], [1125899906842624, '1 PiB'],
  [9007199254740991, '8 PiB'],
];

/** Exact ties round to even, as glibc's printf does: 1.125 -> 1.12, 1.375 -> 1.38. */
const TIES: Array<[number, string]> = [
  [1152, '1.12 KiB'], [1408, '1.38 KiB'], [1664, '1.62 KiB'], [1920, '1.88 KiB'], [10496, '10.2 KiB'],
  [102912, '100 KiB'], [103424, '101 KiB'], [1179648, '1.12 MiB'], [10747904, '10.2 MiB'],
  [105381888, '100 MiB'], [105381889, '101 MiB'],
];

test('matches qemu-img output for sizes across every suffix', () => {
  for (const [bytes, expected] of SEEN) assert.equal(sizeToStr(bytes), expected, `size ${bytes}`);
});

test('exact ties round to even like glibc', () => {
  for (const [bytes, expected] of TIES) assert.equal(sizeToStr(bytes), expected, `size ${bytes}`);
});

test('a sample of random sizes checked against qemu-img', () => {
  const sample: Array<[number, string]> = [
    [267227496448, '249 GiB'], [6506356932608, '5.92 TiB'], [1302432640, '1.21 GiB'], [113639424, '108 MiB'],
    [10, '10 B'], [264925888512, '247 GiB'], [15797831680, '14.7 GiB'], [76283904, '72.8 MiB'], [4441, '4.34 KiB'],
    [4158808064, '3.87 GiB'],
  ];
  for (const [bytes, expected] of sample) assert.equal(sizeToStr(bytes), expected, `size ${bytes}`);
});

test('rejects values that are not byte counts', () => {
  assert.throws(() => sizeToStr(-1), RangeError);
  assert.throws(() => sizeToStr(Number.NaN), RangeError);
});
