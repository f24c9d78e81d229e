import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStorage } from './memory-storage.js';
import { withoutFlush, withoutFlushResolver } from './no-flush-storage.js';
import type { Storage, StorageResolver } from './storage.js';

/** A MemoryStorage that counts flushes. */
class CountingStorage extends MemoryStorage {
  flushes = 0;
  override async flush(): Promise<void> {
    this.flushes++;
  }
}

test('withoutFlush drops flushes and passes everything else through', async () => {
  const inner = new CountingStorage(new Uint8Array(8), 'disk');
  const s = withoutFlush(inner);
  assert.equal(s.name, 'disk');
  assert.equal(s.readOnly, false);
  await s.write(Uint8Array.of(1, 2, 3), 6);
  await s.flush();
  assert.equal(inner.flushes, 0);
  assert.equal(await s.size(), 9);
  const back = new Uint8Array(4);
  await s.read(back, 6);
  assert.deepEqual(back, Uint8Array.of(1, 2, 3, 0));
  await s.resize(4);
  assert.equal(await inner.size(), 4);
  // Optional methods exist exactly when the inner storage has them.
  const full: Storage = inner;
  for (const m of ['allocatedSize', 'identity', 'writeZeroes', 'discard'] as const) {
    assert.equal(typeof s[m], typeof full[m], m);
  }
  const bare: Storage = {
    name: 'bare', readOnly: true, read: async () => {}, write: async () => {}, size: async () => 0,
    resize: async () => {}, flush: async () => {}, close: async () => {},
  };
  assert.deepEqual(Object.keys(withoutFlush(bare)).sort(), ['close', 'flush', 'name', 'read', 'readOnly', 'resize', 'size', 'write']);
});

test('withoutFlushResolver wraps the storages it opens and keeps their names', async () => {
  const inner = new CountingStorage(new Uint8Array(4), 'base.qcow2');
  const resolver: StorageResolver = {
    open: async () => inner,
    resolveName: (name) => `dir/${name}`,
  };
  const r = withoutFlushResolver(resolver);
  assert.equal(r.resolveName('base.qcow2', undefined), 'dir/base.qcow2');
  const opened = await r.open('base.qcow2', undefined, { readOnly: false });
  await opened.flush();
  assert.equal(inner.flushes, 0);
  assert.equal(opened.name, 'base.qcow2');
});
