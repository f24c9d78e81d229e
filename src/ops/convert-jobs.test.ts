import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BlockStatus, ImageReader } from '../image/types.js';
import { ConcatSource } from './concat-source.js';
import { JobCutter } from './convert-jobs.js';

const C = 65536;

/** 16 clusters: 0-5 compressed, 6 plain data, 7-9 compressed, 10-15 zero. Block status answers one compressed cluster at a time. */
function source(): ImageReader {
  const status = (offset: number, maxLength: number): BlockStatus => {
    const cluster = Math.floor(offset / C);
    const base = { offset, depth: 0, present: true };
    if (cluster === 6) return { ...base, length: C, zero: false, data: true, compressed: false };
    if (cluster >= 10) return { ...base, length: Math.min(maxLength, 16 * C - offset), zero: true, data: false, compressed: false };
    return { ...base, length: C - (offset % C), zero: false, data: true, compressed: true };
  };
  return {
    size: 16 * C,
    driver: undefined as never,
    backing: undefined,
    read: async () => {},
    blockStatus: async (offset, maxLength) => status(offset, maxLength),
    close: async () => {},
  };
}

test('neighbouring compressed clusters make one job, up to the buffer size', async () => {
  const cutter = new JobCutter(new ConcatSource([source()]), 4 * C, false);
  const jobs = [];
  for (let job = await cutter.next(); job; job = await cutter.next()) jobs.push([job.offset / C, job.length / C, job.kind]);
  assert.deepEqual(jobs, [
    [0, 4, 'data'], [4, 2, 'data'], // compressed run cut at the buffer size
    [6, 1, 'data'], // plain data on its own status
    [7, 3, 'data'], // the next compressed run stops before the zeros
    [10, 6, 'zero'],
  ]);
});
