import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ddCopy, planDd } from './dd.js';
import { MemoryFiles, runsOf } from './memory-chain.test.helper.js';

const INT64_MAX = (1n << 63n) - 1n;

test('planDd follows qemu-img dd: count limits the input from its start, skip comes off that', () => {
  // Seen with qemu-img dd -O qcow2 bs=64k skip=2 count=5 on a 3 MiB input: 192 KiB out.
  assert.deepEqual(planDd(3n << 20n, { blockSize: 65536n, count: 5n, skip: 2n }), { outputSize: 196608, inputStart: 131072, inputEnd: 327680, skipPastEnd: false });
  assert.deepEqual(planDd(1000n, { blockSize: 512n }), { outputSize: 1000, inputStart: 0, inputEnd: 1000, skipPastEnd: false });
  // count larger than the input: the input size wins.
  assert.deepEqual(planDd(1000n, { blockSize: 512n, count: 10n }), { outputSize: 1000, inputStart: 0, inputEnd: 1000, skipPastEnd: false });
  assert.deepEqual(planDd(1000n, { blockSize: 512n, count: 0n }), { outputSize: 0, inputStart: 0, inputEnd: 0, skipPastEnd: false });
  // count * bs overflowing int64 is ignored, as in qemu-img.
  assert.equal(planDd(1000n, { blockSize: 512n, count: INT64_MAX }).outputSize, 1000);
});

test('planDd: skipping past the input gives an empty output and the warning flag', () => {
  assert.deepEqual(planDd(3n << 20n, { blockSize: 1n << 20n, skip: 1000n }), { outputSize: 0, inputStart: 3 << 20, inputEnd: 3 << 20, skipPastEnd: true });
  assert.equal(planDd(4096n, { blockSize: 4096n, skip: INT64_MAX }).skipPastEnd, true);
  // Exactly at the end is not past it.
  assert.deepEqual(planDd(4096n, { blockSize: 1024n, skip: 4n }), { outputSize: 0, inputStart: 4096, inputEnd: 4096, skipPastEnd: false });
  assert.equal(planDd(4096n, { blockSize: 1024n, count: 2n, skip: 3n }).skipPastEnd, true);
});

test('ddCopy copies the planned range to the start of the target, zeros included as data', async () => {
  const f = new MemoryFiles();
  const src = new Uint8Array(300 * 1024);
  for (let i = 0; i < src.length; i++) src[i] = (i >> 10) & 0xff;
  src.fill(0, 100 * 1024, 200 * 1024);
  f.createRaw('in', src);
  await f.createQcow2('out', { size: 200 * 1024 });
  const input = await f.open('in');
  const output = await f.open('out', { readOnly: false });
  await ddCopy(input, output, planDd(BigInt(input.size), { blockSize: 1024n, skip: 50n, count: 250n }));
  const st = await output.blockStatus(0, output.size);
  await output.close();
  await input.close();
  assert.deepEqual([st.data, st.length], [true, 200 * 1024], 'every cluster written holds data');
  const expected = new Uint8Array(200 * 1024);
  expected.set(src.subarray(50 * 1024, 250 * 1024));
  assert.equal(runsOf(await f.content('out')), runsOf(expected));
});
