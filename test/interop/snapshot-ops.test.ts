// Internal snapshots: create, apply and delete with qcow2kit and with qemu-img on each other's
// images; content compared with qemu-img compare, qemu-img check clean throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { must, qcow2kit, qemuImg, requireQemu, tempDir } from './helpers.js';

test('snapshots made, applied and deleted by either tool agree with qemu-img', async (t) => {
  if (!requireQemu(t)) return;
  const dir = await tempDir(t);
  const opts = { cwd: dir };
  const clean = async (f: string): Promise<void> => {
    const r = await qemuImg(['check', f], opts);
    assert.equal(r.code, 0, `${f}: ${r.stdout}${r.stderr}`);
  };
  const same = async (a: string, b: string, label: string): Promise<void> => {
    const r = await qemuImg(['compare', a, b], opts);
    assert.equal(r.code, 0, `${label}: ${r.stdout}${r.stderr}`);
  };
  await must('qemu-img', ['create', '-q', '-f', 'qcow2', 'ours.qcow2', '4M'], opts);
  await must('qemu-io', ['-c', 'write -P 1 0 1M', '-c', 'write -c -P 5 2M 64k', 'ours.qcow2'], opts);
  await must('qemu-img', ['convert', '-O', 'qcow2', 'ours.qcow2', 'ref.qcow2'], opts);
  // Ours takes s1 on its image, qemu-img on the reference.
  assert.equal((await qcow2kit(['snapshot', '-c', 's1', 'ours.qcow2'], opts)).code, 0);
  await must('qemu-img', ['snapshot', '-c', 's1', 'ref.qcow2'], opts);
  await clean('ours.qcow2');
  // Writes after the snapshot: by qemu-io on our image, by qcow2kit on qemu's.
  await must('qemu-io', ['-c', 'write -P 2 512k 1M', '-c', 'write -P 7 2M 64k', 'ours.qcow2'], opts);
  assert.equal((await qcow2kit(['io', '-c', 'write -P 2 512k 1M', '-c', 'write -P 7 2M 64k', 'ref.qcow2'], opts)).code, 0);
  await clean('ours.qcow2');
  await clean('ref.qcow2');
  await same('ours.qcow2', 'ref.qcow2', 'after writes');
  // Second snapshot the other way round.
  await must('qemu-img', ['snapshot', '-c', 's2', 'ours.qcow2'], opts);
  assert.equal((await qcow2kit(['snapshot', '-c', 's2', 'ref.qcow2'], opts)).code, 0);
  const list = await qcow2kit(['snapshot', '-l', 'ours.qcow2'], opts);
  assert.match(list.stdout, /s1[\s\S]*s2/);
  // Apply s1 with each tool on the other's image.
  assert.equal((await qcow2kit(['snapshot', '-a', 's1', 'ours.qcow2'], opts)).code, 0);
  await must('qemu-img', ['snapshot', '-a', 's1', 'ref.qcow2'], opts);
  await clean('ours.qcow2');
  await clean('ref.qcow2');
  await same('ours.qcow2', 'ref.qcow2', 'after applying s1');
  // Snapshot content read through convert -l by both tools.
  await must('qemu-img', ['convert', '-l', 's2', 'ours.qcow2', 'a.raw'], opts);
  assert.equal((await qcow2kit(['convert', '-l', 's2', 'ref.qcow2', 'b.raw'], opts)).code, 0);
  await same('a.raw', 'b.raw', 'snapshot s2 content');
  // Delete: ours on qemu's snapshots and the reverse, until none are left.
  assert.equal((await qcow2kit(['snapshot', '-d', 's1', 'ours.qcow2'], opts)).code, 0);
  await must('qemu-img', ['snapshot', '-d', 's1', 'ref.qcow2'], opts);
  await must('qemu-img', ['snapshot', '-d', 's2', 'ours.qcow2'], opts);
  assert.equal((await qcow2kit(['snapshot', '-d', 's2', 'ref.qcow2'], opts)).code, 0);
  await clean('ours.qcow2');
  await clean('ref.qcow2');
  await same('ours.qcow2', 'ref.qcow2', 'after deleting everything');
  const missing = await qcow2kit(['snapshot', '-a', 'nope', 'ours.qcow2'], opts);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Could not apply snapshot 'nope'/);
});
