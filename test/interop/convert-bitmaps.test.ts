// convert --bitmaps: persistent bitmaps (names, granularity, enabled flag, dirty bits) are copied
// the way qemu-img convert --bitmaps copies them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { must, qcow2kit, qemuImg, requireQemu, tempDir } from './helpers.js';

test('convert --bitmaps copies bitmaps like qemu-img', async (t) => {
  if (!requireQemu(t)) return;
  const dir = await tempDir(t);
  const opts = { cwd: dir };
  await must('qemu-img', ['create', '-q', '-f', 'qcow2', 'src.qcow2', '4M'], opts);
  await must('qemu-img', ['bitmap', '--add', 'src.qcow2', 'b1'], opts);
  await must('qemu-img', ['bitmap', '--add', '-g', '128k', 'src.qcow2', 'b2'], opts);
  await must('qemu-img', ['bitmap', '--disable', 'src.qcow2', 'b2'], opts);
  await must('qemu-io', ['-c', 'write -P 1 100k 300k', '-c', 'write -P 2 3M 4k', 'src.qcow2'], opts);
  const ours = await qcow2kit(['convert', '--bitmaps', '-O', 'qcow2', 'src.qcow2', 'ours.qcow2'], opts);
  assert.equal(ours.code, 0, ours.stderr);
  await must('qemu-img', ['convert', '--bitmaps', '-O', 'qcow2', 'src.qcow2', 'ref.qcow2'], opts);
  assert.equal((await qemuImg(['check', 'ours.qcow2'], opts)).code, 0);
  assert.equal((await qemuImg(['compare', 'ours.qcow2', 'ref.qcow2'], opts)).code, 0);
  const info = async (f: string): Promise<unknown> => {
    const r = await qemuImg(['info', '--output=json', f], opts);
    return (JSON.parse(r.stdout) as { 'format-specific': { data: { bitmaps?: unknown } } })['format-specific'].data.bitmaps;
  };
  assert.deepEqual(await info('ours.qcow2'), await info('ref.qcow2'));
  const raw = await qcow2kit(['convert', '--bitmaps', '-O', 'raw', 'src.qcow2', 'x.raw'], opts);
  assert.equal(raw.code, 1);
});
