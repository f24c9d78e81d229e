import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Qcow2Error } from '../errors.js';
import { BenchRequestError, runBench, type BenchParams, type BenchTarget } from './bench.js';

type Event = { op: 'read' | 'write'; offset: number; inFlight: number } | { op: 'flush'; inFlight: number };

/** A target whose requests complete in a controlled, shuffled order. */
class FakeTarget implements BenchTarget {
  readonly size: number;
  readonly events: Event[] = [];
  inFlight = 0;
  maxInFlight = 0;
  readonly #delays: () => number;
  failAt: number | undefined;
  failFlush = false;

  constructor(size: number, delays: () => number = () => 0) {
    this.size = size;
    this.#delays = delays;
  }

  async #io(op: 'read' | 'write', buf: Uint8Array, offset: number): Promise<void> {
    if (offset + buf.byteLength > this.size) throw new Qcow2Error('INVALID_ARGUMENT', 'out of range');
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.events.push({ op, offset, inFlight: this.inFlight });
    const n = this.events.length;
    await sleep(this.#delays());
    this.inFlight--;
    if (n === this.failAt) throw new Error('boom');
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    return this.#io('read', dst, offset);
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    return this.#io('write', src, offset);
  }

  async flush(): Promise<void> {
    this.events.push({ op: 'flush', inFlight: this.inFlight });
    await sleep(this.#delays());
    if (this.failFlush) throw new Error('flush boom');
  }
}

function sleep(ms: number): Promise<void> {
  return ms <= 0 ? Promise.resolve() : new Promise((r) => setTimeout(r, ms));
}

function params(p: Partial<BenchParams>): BenchParams {
  return { count: 10, depth: 4, bufferSize: 4096, step: 0, offset: 0, write: false, pattern: 0, flushInterval: 0, drainOnFlush: true, ...p };
}

function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s % 3;
  };
}

describe('runBench', () => {
  it('sends count requests at step offsets, wrapping at the image size like qemu-img 7.2', async () => {
    const t = new FakeTarget(40960);
    const r = await runBench(t, params({ count: 12, depth: 3, bufferSize: 4096, step: 8192, offset: 4096 }));
    assert.equal(r.completed, 12);
    const offsets = t.events.map((e) => ('offset' in e ? e.offset : -1));
    // (offset + step) % 40960: 36864 + 8192 = 45056 wraps to 4096.
    assert.deepEqual(offsets, [4096, 12288, 20480, 28672, 36864, 4096, 12288, 20480, 28672, 36864, 4096, 12288]);
    assert.ok(t.events.every((e) => e.op === 'read'));
  });

  it('step 0 means the buffer size; an image the size of the buffer is hit at 0', async () => {
    let t = new FakeTarget(1 << 20);
    await runBench(t, params({ count: 3, bufferSize: 512 }));
    assert.deepEqual(t.events.map((e) => ('offset' in e ? e.offset : -1)), [0, 512, 1024]);
    t = new FakeTarget(4096);
    await runBench(t, params({ count: 3, bufferSize: 4096, offset: 0 }));
    assert.deepEqual(t.events.map((e) => ('offset' in e ? e.offset : -1)), [0, 0, 0]);
  });

  it('a request that crosses the end after wrapping fails, as in qemu-img 7.2', async () => {
    // 0, 3072, 6144 (+4096 > 10000): qemu-img 7.2 says "Failed request: Input/output error".
    const t = new FakeTarget(10000);
    await assert.rejects(
      runBench(t, params({ count: 5, depth: 1, bufferSize: 4096, step: 3072 })),
      (e: unknown) => e instanceof BenchRequestError && e.cause instanceof Qcow2Error,
    );
    assert.deepEqual(t.events.map((e) => ('offset' in e ? e.offset : -1)), [0, 3072]);
  });

  it('keeps at most depth requests in flight, and reaches depth', async () => {
    const t = new FakeTarget(1 << 20, lcg(7));
    await runBench(t, params({ count: 200, depth: 8, write: true }));
    assert.equal(t.maxInFlight, 8);
    assert.equal(t.events.length, 200);
    assert.ok(t.events.every((e) => e.op === 'write'));
  });

  it('writes the pattern byte', async () => {
    const seen: number[] = [];
    const target: BenchTarget = {
      size: 1 << 20,
      read: async () => undefined,
      write: async (src) => {
        seen.push(src[0]!, src[src.length - 1]!, src.length);
      },
      flush: async () => undefined,
    };
    await runBench(target, params({ count: 1, write: true, pattern: 0xa5, bufferSize: 1000 }));
    assert.deepEqual(seen, [0xa5, 0xa5, 1000]);
  });

  it('drained flushes: every interval requests, with nothing in flight, like bench_cb', async () => {
    const t = new FakeTarget(1 << 20, lcg(3));
    const r = await runBench(t, params({ count: 100, depth: 10, write: true, flushInterval: 10 }));
    const flushes = t.events.filter((e) => e.op === 'flush');
    // remaining = 90, 80, ..., 0 each trigger one flush: 10 in all, the last one untimed.
    assert.equal(flushes.length, 10);
    assert.equal(r.flushes, 10);
    assert.ok(flushes.every((f) => f.inFlight === 0));
    // Between two flushes exactly 10 writes.
    let run = 0;
    for (const e of t.events) {
      if (e.op === 'flush') {
        assert.equal(run, 10);
        run = 0;
      } else run++;
    }
  });

  it('undrained flushes are issued while requests are in flight', async () => {
    const t = new FakeTarget(1 << 20, lcg(5));
    await runBench(t, params({ count: 100, depth: 10, write: true, flushInterval: 10, drainOnFlush: false }));
    const flushes = t.events.filter((e) => e.op === 'flush');
    // bench_cb's arithmetic: remaining = 90, 80, ..., 10 once each while submitting, then 0
    // for each of the last 10 completions, when nothing is left to submit.
    assert.equal(flushes.length, 19);
    assert.ok(flushes.some((f) => f.inFlight > 0));
  });

  it('writethrough flushes after each write; unsafe drops flushes', async () => {
    let t = new FakeTarget(1 << 20);
    await runBench(t, params({ count: 5, depth: 1, write: true, writethrough: true }));
    assert.deepEqual(t.events.map((e) => e.op), ['write', 'flush', 'write', 'flush', 'write', 'flush', 'write', 'flush', 'write', 'flush']);
    t = new FakeTarget(1 << 20);
    await runBench(t, params({ count: 20, depth: 2, write: true, flushInterval: 5, noFlush: true }));
    assert.equal(t.events.filter((e) => e.op === 'flush').length, 0);
  });

  it('count 0 sends nothing', async () => {
    const t = new FakeTarget(1 << 20);
    const r = await runBench(t, params({ count: 0, depth: 0 }));
    assert.equal(t.events.length, 0);
    assert.equal(r.completed, 0);
  });

  it('reports the first failed request and stops submitting', async () => {
    const t = new FakeTarget(1 << 20, () => 1);
    t.failAt = 3;
    await assert.rejects(runBench(t, params({ count: 1000, depth: 4 })), (e: unknown) => e instanceof BenchRequestError && e.op === 'request');
    await sleep(20);
    assert.ok(t.events.length < 20, `stopped early (${t.events.length} requests)`);
  });

  it('a request past the end fails with the target error as cause', async () => {
    const t = new FakeTarget(65536);
    await assert.rejects(
      runBench(t, params({ count: 3, offset: 65536 })),
      (e: unknown) => e instanceof BenchRequestError && e.cause instanceof Qcow2Error && e.cause.code === 'INVALID_ARGUMENT',
    );
  });

  it('failed flushes: drained ones count as failed requests, undrained ones as failed flushes', async () => {
    let t = new FakeTarget(1 << 20);
    t.failFlush = true;
    await assert.rejects(runBench(t, params({ count: 10, depth: 2, write: true, flushInterval: 2 })), (e: unknown) => e instanceof BenchRequestError && e.op === 'request');
    t = new FakeTarget(1 << 20, () => 1);
    t.failFlush = true;
    await assert.rejects(
      runBench(t, params({ count: 10, depth: 2, write: true, flushInterval: 2, drainOnFlush: false })),
      (e: unknown) => e instanceof BenchRequestError && e.op === 'flush',
    );
  });

  it('times from first submission to last completion', async () => {
    const clock = [100, 350];
    const t = new FakeTarget(1 << 20);
    const r = await runBench(t, params({ count: 4 }), () => clock.shift() ?? 999);
    assert.equal(r.elapsedMs, 250);
  });

  it('rejects invalid parameters', async () => {
    const t = new FakeTarget(1 << 20);
    for (const bad of [{ depth: 0 }, { count: -1 }, { pattern: 256 }, { bufferSize: 1.5 }]) {
      await assert.rejects(runBench(t, params(bad)), (e: unknown) => e instanceof Qcow2Error && e.code === 'INVALID_ARGUMENT');
    }
  });
});
