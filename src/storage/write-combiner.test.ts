import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WriteCombiner, type CombinedWrites } from './write-combiner.js';

/** A file in memory that logs its calls and completes them when told to. */
function fakeFile(options: { shortBy?: number; failWritev?: boolean } = {}) {
  const bytes = new Uint8Array(1 << 16);
  const calls: string[] = [];
  const pending: (() => void)[] = [];
  const later = <T>(fn: () => T): Promise<T> => new Promise((resolve, reject) => pending.push(() => {
    try {
      resolve(fn());
    } catch (e) {
      reject(e);
    }
  }));
  const io: CombinedWrites = {
    write(src, position) {
      calls.push(`write ${position}+${src.byteLength}`);
      return later(() => {
        if (position >= 60000) throw new Error(`no space at ${position}`);
        bytes.set(src, position);
      });
    },
    writev(buffers, position) {
      calls.push(`writev ${position} ${buffers.map((b) => b.byteLength).join(',')}`);
      return later(() => {
        if (options.failWritev === true) throw new Error('writev failed');
        const total = buffers.reduce((n, b) => n + b.byteLength, 0) - (options.shortBy ?? 0);
        let at = position;
        for (const b of buffers) {
          const n = Math.max(0, Math.min(b.byteLength, position + total - at));
          bytes.set(b.subarray(0, n), at);
          at += b.byteLength;
        }
        return total;
      });
    },
  };
  /** Complete everything issued so far, and what that issues, until nothing is left. */
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setImmediate(r));
      const now = pending.splice(0);
      now.forEach((f) => f());
    }
  };
  return { io, bytes, calls, settle };
}

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

test('adjacent small writes of one turn go out as one writev, up to the byte cap', async () => {
  const f = fakeFile();
  const c = new WriteCombiner(f.io, 300, 2);
  const done = [0, 100, 200, 300, 400].map((at, i) => c.write(fill(100, i + 1), at));
  await f.settle();
  await Promise.all(done);
  // 300 bytes at most per batch: [0,100,200] and [300,400].
  assert.deepEqual(f.calls, ['writev 0 100,100,100', 'writev 300 100,100']);
  for (let i = 0; i < 5; i++) assert.equal(f.bytes[i * 100 + 50], i + 1);
});

test('writes wait while the running batches are full, and join up meanwhile', async () => {
  const f = fakeFile();
  const c = new WriteCombiner(f.io, 1000, 1);
  const first = c.write(fill(10, 1), 0);
  await new Promise((r) => setImmediate(r)); // submitted alone
  const more = [10, 20, 30].map((at) => c.write(fill(10, 2), at));
  const apart = c.write(fill(10, 3), 500); // not adjacent: a batch of its own
  assert.deepEqual(f.calls, ['write 0+10']);
  await f.settle();
  await Promise.all([first, ...more, apart]);
  assert.deepEqual(f.calls, ['write 0+10', 'writev 10 10,10,10', 'write 500+10']);
});

test('large writes go out at once and take no batch slot', async () => {
  const f = fakeFile();
  const c = new WriteCombiner(f.io, 100, 1);
  const small = [c.write(fill(10, 1), 0), c.write(fill(10, 1), 1000)];
  const big = c.write(fill(100, 2), 2000);
  assert.deepEqual(f.calls, ['write 2000+100']);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(f.calls, ['write 2000+100', 'write 0+10']); // while the large one runs
  await f.settle();
  await Promise.all([...small, big]);
  assert.deepEqual(f.calls, ['write 2000+100', 'write 0+10', 'write 1000+10']);
});

test('a short writev finishes each write with its own write', async () => {
  const f = fakeFile({ shortBy: 15 });
  const c = new WriteCombiner(f.io, 1000, 2);
  const done = [c.write(fill(10, 1), 0), c.write(fill(10, 2), 10), c.write(fill(10, 3), 20)];
  await f.settle();
  await Promise.all(done);
  // 15 bytes short: the second write lacks its last 5 bytes, the third all of them.
  assert.deepEqual(f.calls, ['writev 0 10,10,10', 'write 15+5', 'write 20+10']);
  assert.deepEqual([...f.bytes.subarray(0, 30)], [...fill(10, 1), ...fill(10, 2), ...fill(10, 3)]);
});

test('a failed writev retries each write alone: only the write that fails again rejects', async () => {
  const f = fakeFile({ failWritev: true });
  const c = new WriteCombiner(f.io, 1000, 2);
  const ok = c.write(fill(10, 1), 59990);
  const bad = assert.rejects(c.write(fill(10, 2), 60000), /no space at 60000/);
  await f.settle();
  await ok;
  await bad;
  assert.deepEqual(f.calls, ['writev 59990 10,10', 'write 59990+10', 'write 60000+10']);
});

test('drain settles after every write issued before it, including waiting ones', async () => {
  const f = fakeFile();
  const c = new WriteCombiner(f.io, 100, 1);
  const events: string[] = [];
  for (const at of [0, 500, 1000]) void c.write(fill(10, 1), at).then(() => events.push(`w${at}`));
  void c.write(fill(100, 1), 2000).then(() => events.push('big'));
  const drained = c.drain().then(() => events.push('drained'));
  await f.settle();
  await drained;
  assert.equal(events.at(-1), 'drained');
  assert.equal(events.length, 5);
  await c.drain(); // nothing left: settles at once
});
