import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { ReadCacheStorage } from './read-cache-storage.js';

function filled(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
}

describe('ReadCacheStorage', () => {
  it('reads what the file holds, across chunk boundaries and past its end', async () => {
    const bytes = filled(200_000);
    const cached = new ReadCacheStorage(new MemoryStorage(bytes.slice()));
    for (const [offset, length] of [[0, 10], [65530, 20], [131000, 5000], [199_990, 30], [300_000, 8]] as const) {
      const dst = new Uint8Array(length).fill(0xee);
      await cached.read(dst, offset);
      const want = new Uint8Array(length);
      want.set(bytes.subarray(offset, Math.min(offset + length, bytes.byteLength)));
      assert.deepEqual(dst, want, `read at ${offset}`);
    }
  });

  it('sees its own writes and resizes (it never serves stale bytes)', async () => {
    const inner = new MemoryStorage(filled(150_000));
    const cached = new ReadCacheStorage(inner, 2 * 65536);
    const dst = new Uint8Array(100);
    await cached.read(dst, 65500); // caches chunks 0 and 1
    await cached.write(new Uint8Array(100).fill(9), 65500);
    await cached.read(dst, 65500);
    assert.deepEqual(dst, new Uint8Array(100).fill(9));
    await cached.resize(65536);
    await cached.read(dst, 65500);
    assert.deepEqual(dst.subarray(36), new Uint8Array(64));
    assert.deepEqual(inner.bytes().subarray(65500, 65536), new Uint8Array(36).fill(9));
  });

  it('evicts within its budget and still reads right', async () => {
    const bytes = filled(10 * 65536);
    const cached = new ReadCacheStorage(new MemoryStorage(bytes.slice()), 65536);
    const dst = new Uint8Array(16);
    for (const chunk of [0, 5, 9, 0, 5]) {
      await cached.read(dst, chunk * 65536 + 100);
      assert.deepEqual(dst, bytes.subarray(chunk * 65536 + 100, chunk * 65536 + 116));
    }
  });
});
