import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dataCluster, grow, imageWithData, L2, setRefcount, setU64Parts } from '../ops/check/damaged-image.test.helper.js';
import { createCaptureIO, main } from './main.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2kit-check-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

async function check(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = createCaptureIO();
  const code = await main(['check', ...args], io);
  return { code, out: io.stdoutText(), err: io.stderrText() };
}

/** A leak at cluster 6: the image's file holds 7 clusters, 6 of them referenced. */
function leakyImage(): Uint8Array {
  const img = grow(imageWithData(1), dataCluster(2));
  setRefcount(img, 6, 1);
  return img;
}

describe('check command line', () => {
  it('rejects bad arguments like qemu-img', async () => {
    const img = await file('clean.qcow2', imageWithData(1));
    let r = await check('-r', 'foo', img);
    assert.equal(r.code, 1);
    assert.equal(r.err, "qcow2kit: Unknown option value for -r (expecting 'leaks' or 'all'): foo\nTry 'qcow2kit --help' for more information\n");
    r = await check();
    assert.equal(r.err, "qcow2kit: Expecting one image file name\nTry 'qcow2kit --help' for more information\n");
    r = await check(img, img);
    assert.equal(r.code, 1);
    r = await check('--output=xml', img);
    assert.equal(r.err, 'qcow2kit: --output must be used with human or json as argument.\n');
    r = await check(join(dir, 'missing.qcow2'));
    assert.equal(r.code, 1);
    assert.match(r.err, /^qcow2kit: Could not open '.*missing\.qcow2': /);
  });

  it('exits 63 for raw images, which have no check', async () => {
    const raw = await file('disk.raw', new Uint8Array(4096));
    const r = await check(raw);
    assert.equal(r.code, 63);
    assert.equal(r.err, 'qcow2kit: This image format does not support checks\n');
    assert.equal((await check('-f', 'raw', raw)).code, 63);
  });

  it('prints the human summary of a clean image', async () => {
    const img = await file('clean.qcow2', imageWithData(3));
    const r = await check(img);
    assert.equal(r.code, 0);
    assert.equal(r.out, 'No errors were found on the image.\n3/1024 = 0.29% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 524288\n');
    assert.equal(r.err, '');
  });

  it('prints leaks and repairs them, with the second pass and the JSON fields of qemu-img', async () => {
    const img = await file('leak.qcow2', leakyImage());
    let r = await check('--output=json', img);
    assert.equal(r.code, 3);
    assert.equal(r.err, 'Leaked cluster 6 refcount=1 reference=0\n');
    assert.equal(r.out, `{
    "image-end-offset": 458752,
    "total-clusters": 1024,
    "check-errors": 0,
    "leaks": 1,
    "allocated-clusters": 1,
    "filename": "${img}",
    "format": "qcow2"
}
`);
    r = await check('-r', 'leaks', img);
    assert.equal(r.code, 0);
    assert.equal(r.out, 'The following inconsistencies were found and repaired:\n\n    1 leaked clusters\n    0 corruptions\n\n'
      + 'Double checking the fixed image now...\nNo errors were found on the image.\n'
      + '1/1024 = 0.10% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 393216\n');
    assert.equal(r.err, 'Leaked cluster 6 refcount=1 reference=0\nRepairing cluster 6 refcount=1 reference=0\n');
  });

  it('puts the fixed counts into the JSON of a repair and prints nothing with -q', async () => {
    const bytes = imageWithData(1);
    setU64Parts(bytes, L2 + 8, 0x80000000, dataCluster(0));
    const img = await file('shared.qcow2', bytes);
    const q = await check('-q', img);
    assert.equal(q.code, 2);
    assert.equal(q.out, '');
    assert.equal(q.err, 'ERROR cluster 5 refcount=1 reference=2\n');
    const r = await check('--output=json', '-r', 'all', img);
    assert.equal(r.code, 0);
    assert.equal(r.out, `{
    "image-end-offset": 393216,
    "total-clusters": 1024,
    "corruptions-fixed": 3,
    "check-errors": 0,
    "allocated-clusters": 2,
    "filename": "${img}",
    "format": "qcow2",
    "fragmented-clusters": 1
}
`);
  });

  it('exits 1 with "Check failed" when the check cannot complete', async () => {
    const bytes = imageWithData(1);
    setRefcount(bytes, 5, 0);
    const img = await file('rebuild.qcow2', bytes);
    const r = await check('-r', 'leaks', img);
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.equal(r.err, 'ERROR cluster 5 refcount=0 reference=1\nERROR need to rebuild refcount structures\nqcow2kit: Check failed: Input/output error\n');
    // The file was not changed.
    assert.deepEqual(new Uint8Array(await readFile(img)), bytes);
  });
});
