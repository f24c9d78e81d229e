import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryStorage } from '../../storage/memory-storage.js';
import { planRawImage, writeRawImage } from './raw-create.js';

describe('raw-create', () => {
  test('sizes round up to 512; off writes the first block like file-posix', () => {
    assert.deepEqual(planRawImage(0), { length: 0, zeroWrites: [], reserve: undefined });
    assert.deepEqual(planRawImage(1000), { length: 1024, zeroWrites: [{ offset: 0, length: 512 }], reserve: undefined });
    assert.deepEqual(planRawImage(4096), { length: 4096, zeroWrites: [{ offset: 0, length: 4096 }], reserve: undefined });
    assert.deepEqual(planRawImage(1 << 20), { length: 1 << 20, zeroWrites: [{ offset: 0, length: 4096 }], reserve: undefined });
  });

  test('full writes every byte, falloc reserves', () => {
    assert.deepEqual(planRawImage(3 << 20, 'full').zeroWrites, [{ offset: 0, length: 3 << 20 }]);
    assert.deepEqual(planRawImage(3 << 20, 'falloc'), { length: 3 << 20, zeroWrites: [], reserve: { offset: 0, length: 3 << 20 } });
    assert.throws(() => planRawImage(-1), RangeError);
  });

  test('writing a plan gives a zero-filled file of the right length', async () => {
    for (const mode of ['off', 'falloc', 'full'] as const) {
      const m = new MemoryStorage(new Uint8Array([1, 2, 3]));
      await m.resize(0);
      await writeRawImage(planRawImage(2.5 * (1 << 20) + 1, mode), m);
      assert.equal(await m.size(), 2.5 * (1 << 20) + 512);
      assert.ok(m.bytes().every((b) => b === 0));
    }
  });
});
