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

test('block-status queries start small and grow; jobs are cut from the run start as with one query', async () => {
  const B = 2 * C;
  // Data from 3 clusters in up to 100 buffers later, then zeros to the end.
  const dataStart = 3 * C;
  const dataEnd = dataStart + 100 * B + C;
  const size = dataEnd + 500 * B;
  const queries: [number, number][] = [];
  const reader: ImageReader = {
    size,
    driver: undefined as never,
    backing: undefined,
    read: async () => {},
    blockStatus: async (offset, maxLength) => {
      queries.push([offset, maxLength]);
      const end = offset < dataStart ? dataStart : offset < dataEnd ? dataEnd : size;
      const data = offset >= dataStart && offset < dataEnd;
      return { offset, depth: 0, present: true, length: Math.min(maxLength, end - offset), zero: !data, data, compressed: false };
    },
    close: async () => {},
  };
  const cutter = new JobCutter(new ConcatSource([reader]), B, false);
  const jobs: [number, number, string][] = [];
  for (let job = await cutter.next(); job; job = await cutter.next()) jobs.push([job.offset, job.length, job.kind]);
  // 8 buffers first, then twice as many each time, never past the end.
  queries.forEach(([offset, maxLength], i) => assert.equal(maxLength, Math.min(8 * B * 2 ** i, size - offset), `query ${i}`));
  assert.ok(queries.length > 4);
  const dataJobs = jobs.filter(([, , k]) => k === 'data');
  assert.equal(dataJobs.length, 101);
  dataJobs.forEach(([offset, length], i) => {
    assert.equal(offset, dataStart + i * B);
    assert.equal(length, i < 100 ? B : C);
  });
  // Zero runs are never cut at the buffer size, only at the query limits.
  assert.equal(jobs.filter(([, , k]) => k === 'zero').reduce((n, [, l]) => n + l, 0), size - (dataEnd - dataStart));
});
