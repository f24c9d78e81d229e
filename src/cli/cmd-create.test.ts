import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCaptureIO, main } from './main.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2kit-create-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function create(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = createCaptureIO();
  const code = await main(['create', ...args], io);
  return { code, out: io.stdoutText(), err: io.stderrText() };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe('cmd-create', () => {
  test('a default qcow2 image: qemu-img\'s line and bytes', async () => {
    const f = join(dir, 'a.qcow2');
    const r = await create('-f', 'qcow2', f, '1M');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, `Formatting '${f}', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=off refcount_bits=16\n`);
    assert.equal(r.err, '');
    // sha256 of `qemu-img create -f qcow2 a.qcow2 1M` (7.2).
    const hash = createHash('sha256').update(await readFile(f)).digest('hex');
    assert.equal(hash, '0e7db0d4ad0a3b83d343a88d5991fc5024f7a9ec21c1d0e5f15261ebc3fd587e');
  });

  test('-q, raw by default, options in QEMU order', async () => {
    const f = join(dir, 'b.raw');
    assert.deepEqual(await create('-q', f, '1000'), { code: 0, out: '', err: '' });
    assert.equal((await stat(f)).size, 1024);
    const g = join(dir, 'c.raw');
    const r = await create('-o', 'preallocation=full,nocow=on', g, '64k');
    assert.equal(r.out, `Formatting '${g}', fmt=raw size=65536 nocow=on preallocation=full\n`);
    const q = join(dir, 'c.qcow2');
    const r2 = await create('-f', 'qcow2', '-o', 'lazy_refcounts=yes,preallocation=metadata', '-o', 'cluster_size=4k,compat=0.10', q, '1M');
    assert.equal(r2.code, 1);
    assert.equal(r2.out, `Formatting '${q}', fmt=qcow2 cluster_size=4096 extended_l2=off preallocation=metadata compression_type=zlib size=1048576 compat=0.10 lazy_refcounts=yes refcount_bits=16\n`);
    assert.equal(r2.err, `qcow2kit: ${q}: Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)\n`);
    assert.equal(await exists(q), false, 'a failed create removes the image');
  });

  test('option errors before the Formatting line, with the file name', async () => {
    const f = join(dir, 'd.qcow2');
    assert.deepEqual(await create('-f', 'qcow2', '-o', 'foo=bar', f, '1M'), { code: 1, out: '', err: `qcow2kit: ${f}: Invalid parameter 'foo'\n` });
    const r = await create('-f', 'qcow2', '-o', 'cluster_size=abc', f, '1M');
    assert.equal(
      r.err,
      `qcow2kit: ${f}: Parameter 'cluster_size' expects a non-negative number below 2^64\n` +
        'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.\n',
    );
    assert.deepEqual(await create('-f', 'qcow2', '-o', 'a=b,', f), { code: 1, out: '', err: 'qcow2kit: Invalid option list: a=b,\n' });
    assert.deepEqual(await create('-f', 'qcow2', f), { code: 1, out: '', err: `qcow2kit: ${f}: Image creation needs a size parameter\n` });
    assert.deepEqual(await create('-f', 'qcow2', '-o', 'size=1M', f, '1M'), {
      code: 1,
      out: '',
      err: `qcow2kit: ${f}: The image size must be specified only once\n`,
    });
    assert.deepEqual(await create('-f', 'qcow2'), { code: 1, out: '', err: "qcow2kit: Expecting image file name\nTry 'qcow2kit --help' for more information\n" });
    assert.deepEqual(await create('-f', 'foo', f, '1M'), { code: 1, out: '', err: `qcow2kit: ${f}: Unknown file format 'foo'\n` });
    assert.equal((await create('-f', 'qcow2', f, '1x')).err.split('\n')[0], 'qcow2kit: Invalid image size specified. You may use k, M, G, T, P or E suffixes for');
    assert.equal(await exists(f), false);
  });

  test('backing files: format required, size taken from the backing image, -u', async () => {
    const base = join(dir, 'base.qcow2');
    await create('-q', '-f', 'qcow2', base, '3M');
    const top = join(dir, 'top.qcow2');
    const noFmt = await create('-f', 'qcow2', '-b', 'base.qcow2', top);
    assert.deepEqual(noFmt, { code: 1, out: '', err: `qcow2kit: ${top}: Backing file specified without backing format\nDetected format of qcow2.` });
    const ok = await create('-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, / size=3145728 backing_file=base.qcow2 backing_fmt=qcow2 /);
    const missing = await create('-f', 'qcow2', '-b', 'nothere', '-F', 'raw', top);
    assert.equal(missing.err, `qcow2kit: ${top}: Could not open '${join(dir, 'nothere')}': No such file or directory\nCould not open backing image.\n`);
    const unsafe = await create('-q', '-f', 'qcow2', '-u', '-b', 'nothere', '-F', 'raw', top, '1M');
    assert.equal(unsafe.code, 0, unsafe.err);
    assert.equal((await create('-f', 'qcow2', '-u', '-b', 'nothere', top, '1M')).err, `qcow2kit: ${top}: Backing file specified without backing format\n`);
    assert.equal((await create('-f', 'raw', '-b', 'x', top, '1M')).err, `qcow2kit: ${top}: Backing file not supported for file format 'raw'\n`);
  });

  test('data files are created beside the image name given, and removed on failure', async () => {
    const img = join(dir, 'e.qcow2');
    const data = join(dir, 'e.data');
    const r = await create('-q', '-f', 'qcow2', '-o', `data_file=${data},data_file_raw=on`, img, '2M');
    assert.equal(r.code, 0, r.err);
    assert.equal((await stat(data)).size, 2 << 20);
    const bad = await create('-q', '-f', 'qcow2', '-o', `data_file=${data},compat=0.10`, img, '2M');
    assert.equal(bad.err, `qcow2kit: ${img}: External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)\n`);
    assert.equal(await exists(img), false);
    assert.equal(await exists(data), false);
  });

  test('too large for the cluster size', async () => {
    const f = join(dir, 'f.qcow2');
    const r = await create('-q', '-f', 'qcow2', '-o', 'cluster_size=512', f, '200G');
    assert.equal(r.err, `qcow2kit: ${f}: The image size is too large for file format 'qcow2' (try using a larger cluster size)\n`);
  });

  test('-o help', async () => {
    const r = await create('-f', 'raw', '-o', 'help');
    assert.deepEqual(r, {
      code: 0,
      out:
        'Supported raw options:\n  size=<size>            - Virtual disk size\n\n' +
        'The protocol level may support further options.\nSpecify the target filename to include those options.\n',
      err: '',
    });
    const q = await create('-f', 'qcow2', '-o', '?', 'x.qcow2');
    assert.match(q.out, /^Supported options:\n  backing_file=<str>     - File name of a base image\n/);
    assert.match(q.out, /\n  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable\n/);
  });

  test('raw preallocation=metadata leaves an empty file, like qemu-img', async () => {
    const f = join(dir, 'g.raw');
    await writeFile(f, 'old contents');
    const r = await create('-f', 'raw', '-o', 'preallocation=metadata', f, '1M');
    assert.equal(r.err, `qcow2kit: ${f}: Unsupported preallocation mode: metadata\n`);
    assert.equal((await stat(f)).size, 0);
  });
});
