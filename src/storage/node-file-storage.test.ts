import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileStorage } from './node-file-storage.js';

const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-storage-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('NodeFileStorage: positional writes and reads, zeros past the end', async () => {
  const st = await NodeFileStorage.open(join(dir, 'a'), { create: true, truncate: true });
  await st.write(Uint8Array.of(1, 2, 3), 10);
  assert.equal(await st.size(), 13);
  const buf = new Uint8Array(8).fill(9);
  await st.read(buf, 8);
  assert.deepEqual(buf, Uint8Array.of(0, 0, 1, 2, 3, 0, 0, 0));
  await st.close();
});

test('NodeFileStorage: close waits for reads and writes still in flight', async () => {
  const st = await NodeFileStorage.open(join(dir, 'b'), { create: true, truncate: true });
  const MiB = 1024 * 1024;
  const data = new Uint8Array(MiB).fill(7);
  await Promise.all(Array.from({ length: 16 }, (_, i) => st.write(data, i * MiB)));
  const events: string[] = [];
  const ops = Array.from({ length: 16 }, (_, i) => {
    const dst = new Uint8Array(MiB);
    return st.read(dst, i * MiB).then(() => {
      assert.equal(dst[MiB - 1], 7);
      events.push('read');
    });
  });
  ops.push(st.write(data, 16 * MiB).then(() => void events.push('write')));
  const closed = st.close().then(() => void events.push('close'));
  await Promise.all([...ops, closed]);
  assert.equal(events.length, 18);
  assert.equal(events.at(-1), 'close', events.join(' '));
});

test('NodeFileStorage: a directory is refused and its descriptor closed', async (t) => {
  if (!existsSync('/proc/self/fd')) return t.skip('no /proc/self/fd');
  const before = readdirSync('/proc/self/fd').length;
  await assert.rejects(NodeFileStorage.open(dir, { readOnly: true }), /'file' driver requires .* to be a regular file/);
  assert.equal(readdirSync('/proc/self/fd').length, before);
});

test('NodeFileStorage: a second close leaves a file that reused the descriptor alone', async () => {
  const a = await NodeFileStorage.open(join(dir, 'c'), { create: true, truncate: true });
  await a.close();
  const b = await NodeFileStorage.open(join(dir, 'd'), { create: true, truncate: true });
  await a.close();
  await b.write(Uint8Array.of(5), 0);
  const buf = new Uint8Array(1);
  await b.read(buf, 0);
  assert.deepEqual(buf, Uint8Array.of(5));
  await b.close();
});
