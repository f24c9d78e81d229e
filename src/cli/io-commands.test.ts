import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Qcow2Error } from '../errors.js';
import type { FormatDriver } from '../format/driver.js';
import type { BlockStatus } from '../image/types.js';
import { MemoryStorage } from '../storage/memory-storage.js';
import {
  createIoSession,
  dumpQObject,
  EINVAL,
  formatElapsed,
  formatReport,
  IO_COMMANDS,
  runIoCommand,
  vmStateOffset,
  type IoImage,
  type IoSession,
} from './io-commands.js';
import { MemoryWriter } from './main.js';

const KiB = 1024;

interface Extent {
  start: number;
  length: number;
  depth: number;
  present: boolean;
}

/** A tiny image: bytes in a MemoryStorage, block status from a list of extents. */
class FakeImage implements IoImage {
  readonly driver: FormatDriver;
  readonly backing = undefined;
  size: number;
  readonly storage: MemoryStorage;
  extents: Extent[];
  closed = false;
  failReads = false;

  constructor(size: number, extents?: Extent[], format = 'qcow2') {
    this.size = size;
    this.storage = new MemoryStorage(new Uint8Array(size), 'fake');
    this.extents = extents ?? [{ start: 0, length: size, depth: 0, present: true }];
    this.driver = { format, clusterSize: 64 * KiB, meta: { clusterSize: 64 * KiB, l2Entries: 8192 } } as unknown as FormatDriver;
  }

  async read(dst: Uint8Array, offset: number): Promise<void> {
    if (this.failReads) throw new Qcow2Error('CORRUPT', 'L2 entry points outside the file');
    assert.ok(offset + dst.byteLength <= this.size, 'read past the end reached the image');
    await this.storage.read(dst, offset);
  }

  async blockStatus(offset: number, maxLength: number): Promise<BlockStatus> {
    const e = this.extents.find((x) => offset >= x.start && offset < x.start + x.length);
    assert.ok(e !== undefined, `no extent at ${offset}`);
    const length = Math.min(e.start + e.length - offset, maxLength);
    return { offset, length, depth: e.depth, present: e.present, zero: false, data: e.present, compressed: false };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** FakeImage with the optional write interface. */
class WritableFakeImage extends FakeImage {
  readonly calls: string[] = [];

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.calls.push(`write ${offset} ${src.byteLength} ${src[0] ?? ''}`);
    await this.storage.write(src, offset);
  }

  async writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void> {
    this.calls.push(`zero ${offset} ${length} ${options?.unmap === true}`);
    await this.storage.write(new Uint8Array(length), offset);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.calls.push(`discard ${offset} ${length}`);
  }

  async flush(): Promise<void> {
    this.calls.push('flush');
  }

  async resize(size: number, options?: { preallocation?: string }): Promise<void> {
    this.calls.push(`resize ${size} ${options?.preallocation ?? ''}`);
    this.size = size;
  }
}

/** A clock that advances 1 ms per reading: every operation takes exactly 1 ms. */
function stepClock(): () => number {
  let t = 0;
  return () => t++;
}

function session(image: IoImage | undefined, extra: Partial<Pick<IoSession, 'readOnly'>> & { readFile?: (p: string) => Promise<Uint8Array> } = {}) {
  const out = new MemoryWriter();
  const err = new MemoryWriter();
  const s = createIoSession({
    image,
    out,
    err,
    now: stepClock(),
    readOnly: extra.readOnly ?? false,
    ...(extra.readFile === undefined ? {} : { readFile: extra.readFile }),
    formatSpecific: () => ({ compat: '1.1', 'lazy-refcounts': false, 'refcount-bits': 16 }),
  });
  return { s, out, err };
}

async function run(s: IoSession, ...lines: string[]): Promise<number[]> {
  const codes: number[] = [];
  for (const line of lines) codes.push(await runIoCommand(s, line));
  return codes;
}

const REPORT_64K = '64 KiB, 1 ops; 00.00 sec (62.500 MiB/sec and 1000.0000 ops/sec)\n';

describe('read', () => {
  it('prints the report and verifies a pattern', async () => {
    const img = new FakeImage(1024 * KiB);
    img.storage.bytes().fill(0xab, 0, 64 * KiB);
    const { s, out, err } = session(img);
    assert.deepEqual(await run(s, 'read -P 0xab 0 64k'), [0]);
    assert.equal(out.text(), `read 65536/65536 bytes at offset 0\n${REPORT_64K}`);
    assert.equal(err.text(), '');
  });

  it('reports a pattern mismatch, keeps going, and fails the command', async () => {
    const img = new FakeImage(1024 * KiB);
    const { s, out } = session(img);
    assert.deepEqual(await run(s, 'read -P 0xac 0 64k'), [-EINVAL]);
    assert.equal(out.text(), `Pattern verification failed at offset 0, 65536 bytes\nread 65536/65536 bytes at offset 0\n${REPORT_64K}`);
  });

  it('verifies only the -s/-l window', async () => {
    const img = new FakeImage(1024 * KiB);
    img.storage.bytes().fill(0xab, 100, 300);
    const { s, out } = session(img);
    assert.deepEqual(await run(s, 'read -q -P 0xab -s 100 -l 200 0 64k', 'read -q -P 0xab -s 100 -l 201 0 64k'), [0, -EINVAL]);
    assert.equal(out.text(), 'Pattern verification failed at offset 100, 201 bytes\n');
  });

  it('dumps with -v and prints machine stats with -C', async () => {
    const img = new FakeImage(64 * KiB);
    img.storage.bytes().set([0x41, 0x42, 0x00], 1000);
    const { s, out } = session(img);
    await run(s, 'read -v 1000 20', 'read -C 0 64k');
    assert.equal(
      out.text(),
      '000003e8:  41 42 00 00 00 00 00 00 00 00 00 00 00 00 00 00  AB..............\n' +
        '000003f8:  00 00 00 00  ....\n' +
        'read 20/20 bytes at offset 1000\n20 bytes, 1 ops; 00.00 sec (19.531 KiB/sec and 1000.0000 ops/sec)\n' +
        '65536,1,0:00:00.00,65536000.000,1000.000\n',
    );
  });

  it('fails reads past the end with EIO, like qemu', async () => {
    const { s, out } = session(new FakeImage(100 * KiB));
    const codes = await run(s, 'read 2M 64k', 'read 100k 0', 'read 101k 0', 'read 99k 2k');
    assert.deepEqual(codes, [-5, 0, -5, -5]);
    assert.equal(
      out.text(),
      'read failed: Input/output error\nread 0/0 bytes at offset 102400\n0 bytes, 1 ops; 00.00 sec (0 bytes/sec and 1000.0000 ops/sec)\n' +
        'read failed: Input/output error\nread failed: Input/output error\n',
    );
  });

  it('reports library errors on stderr and EIO on stdout', async () => {
    const img = new FakeImage(64 * KiB);
    img.failReads = true;
    const { s, out, err } = session(img);
    assert.deepEqual(await run(s, 'read 0 512'), [-5]);
    assert.equal(out.text(), 'read failed: Input/output error\n');
    assert.equal(err.text(), 'qcow2kit: L2 entry points outside the file\n');
  });

  it("prints qemu-io's argument errors", async () => {
    const { s, out, err } = session(new FakeImage(64 * KiB));
    const usage = 'read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset\n';
    const codes = await run(s, 'read x 1', 'read -P 0x100 0 1', 'read -z 0 1', 'read 0 1 2', 'read 0 3G', 'read 0 1e3', 'read -s 100 0 64k', 'read -P 1 -s 100 -l 64k 0 64k', 'read 8E 1', 'read 0 1 -P');
    assert.ok(codes.every((c) => c < 0));
    assert.equal(
      out.text(),
      'Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x\n' +
        '0x100 is not a valid pattern byte\n' +
        usage +
        usage +
        'length cannot exceed 2147483136, given 3G\n' +
        'Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1e3\n' +
        usage +
        'pattern verification range exceeds end of read data\n' +
        'Parsing error: argument too large -- 8E\n' +
        usage,
    );
    assert.equal(err.text(), "read: invalid option -- 'z'\nread: option requires an argument -- 'P'\n");
  });

  it('acts on options before a getopt error, as getopt callers do', async () => {
    const { s, out, err } = session(new FakeImage(64 * KiB));
    assert.deepEqual(await run(s, 'read -l y -x 0 1'), [-EINVAL]);
    assert.equal(out.text(), 'Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- y\n');
    assert.equal(err.text(), '');
  });

  it('accepts options after operands and -- before negative-looking operands', async () => {
    const img = new FakeImage(64 * KiB);
    const { s, out } = session(img);
    assert.deepEqual(await run(s, 'read 0 -q 1', 'read -P 0 -- -1 1'), [0, -EINVAL]);
    assert.equal(out.text(), 'Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- -1\n');
  });

  it('works through its alias and reads 0 bytes', async () => {
    const { s, out } = session(new FakeImage(KiB));
    await run(s, 'r -q 0 0');
    assert.equal(out.text(), '');
  });
});

describe('readv and aio_read', () => {
  it('reads several buffers and checks them as one', async () => {
    const img = new FakeImage(64 * KiB);
    img.storage.bytes().fill(3, 0, 1024);
    const { s, out } = session(img);
    assert.deepEqual(await run(s, 'readv -P 3 0 512 512', 'readv 0 3G', 'readv -P 3 0 512 1k'), [0, -EINVAL, -EINVAL]);
    assert.equal(
      out.text(),
      'read 1024/1024 bytes at offset 0\n1 KiB, 1 ops; 00.00 sec (1000 KiB/sec and 1000.0000 ops/sec)\n' +
        "Argument '3G' exceeds maximum size 2147483136\n" +
        'Pattern verification failed at offset 0, 1536 bytes\nread 1536/1536 bytes at offset 0\n1.500 KiB, 1 ops; 00.00 sec (1.465 MiB/sec and 1000.0000 ops/sec)\n',
    );
  });

  it('completes aio reads at aio_flush without failing on mismatch', async () => {
    const img = new FakeImage(64 * KiB);
    const { s, out } = session(img);
    assert.deepEqual(await run(s, 'aio_read -P 1 0 4k', 'aio_read -i 0 4k', 'aio_flush'), [0, 0, 0]);
    assert.equal(s.pending.size, 0);
    assert.match(out.text(), /injecting invalid read request\n/);
    assert.match(out.text(), /Pattern verification failed at offset 0, 4096 bytes\nread 4096\/4096 bytes at offset 0\n/);
  });
});

describe('alloc and map', () => {
  // The layout of an overlay made by qemu: 64k of data in the top layer at 64k, 64k at 256k.
  const overlay = (): FakeImage =>
    new FakeImage(1024 * KiB, [
      { start: 0, length: 64 * KiB, depth: 1, present: true },
      { start: 64 * KiB, length: 64 * KiB, depth: 0, present: true },
      { start: 128 * KiB, length: 64 * KiB, depth: 1, present: true },
      { start: 192 * KiB, length: 64 * KiB, depth: 2, present: false },
      { start: 256 * KiB, length: 32 * KiB, depth: 0, present: true },
      { start: 288 * KiB, length: 32 * KiB, depth: 0, present: true },
      { start: 320 * KiB, length: 704 * KiB, depth: 1, present: true },
    ]);

  it('counts top-layer allocation only (qemu-io alloc)', async () => {
    const { s, out } = session(overlay());
    await run(s, 'alloc 0 1M', 'alloc 64k 64k', 'alloc 300k', 'alloc 0', 'alloc 0 2M', 'alloc 1M', 'alloc 2M 0', 'alloc 1088', 'a 1 1');
    assert.equal(
      out.text(),
      [
        '131072/1048576 bytes allocated at offset 0 bytes',
        '65536/65536 bytes allocated at offset 64 KiB',
        '512/512 bytes allocated at offset 300 KiB',
        '0/512 bytes allocated at offset 0 bytes',
        '131072/1048576 bytes allocated at offset 0 bytes',
        '0/0 bytes allocated at offset 1 MiB',
        '0/0 bytes allocated at offset 2 MiB',
        '0/512 bytes allocated at offset 1.062 KiB',
        '0/1 bytes allocated at offset 1 bytes',
      ].join('\n') + '\n',
    );
  });

  it('merges runs like qemu-io map', async () => {
    const { s, out } = session(overlay());
    assert.deepEqual(await run(s, 'map'), [0]);
    assert.equal(
      out.text(),
      '64 KiB (0x10000) bytes not allocated at offset 0 bytes (0x0)\n' +
        '64 KiB (0x10000) bytes     allocated at offset 64 KiB (0x10000)\n' +
        '128 KiB (0x20000) bytes not allocated at offset 128 KiB (0x20000)\n' +
        '64 KiB (0x10000) bytes     allocated at offset 256 KiB (0x40000)\n' +
        '704 KiB (0xb0000) bytes not allocated at offset 320 KiB (0x50000)\n',
    );
  });

  it('reports a block status that makes no progress', async () => {
    const img = new FakeImage(64 * KiB);
    img.blockStatus = async (offset) => ({ offset, length: 0, depth: 0, present: true, zero: false, data: true, compressed: false });
    const { s, err } = session(img);
    assert.deepEqual(await run(s, 'map'), [-5]);
    assert.equal(err.text(), 'qcow2kit: Unexpected end of image\n');
  });

  it('checks argument counts', async () => {
    const { s, err } = session(overlay());
    assert.deepEqual(await run(s, 'alloc', 'map x', 'alloc 0 x'), [-EINVAL, -EINVAL, -EINVAL]);
    assert.equal(err.text(), 'bad argument count 0 to alloc, expected between 1 and 2 arguments\nbad argument count 1 to map, expected 0 arguments\n');
  });
});

describe('info and length', () => {
  it('prints format, sizes and format specific information', async () => {
    const { s, out } = session(new FakeImage(1024 * KiB));
    await run(s, 'info', 'length', 'l');
    assert.equal(
      out.text(),
      'format name: qcow2\ncluster size: 64 KiB\nvm state offset: 512 MiB\nFormat specific information:\n' +
        '    compat: 1.1\n    lazy refcounts: false\n    refcount bits: 16\n1 MiB\n1 MiB\n',
    );
  });

  it('prints zero cluster size and no specific information for raw', async () => {
    const out = new MemoryWriter();
    const s = createIoSession({ image: new FakeImage(100 * KiB, undefined, 'raw'), out, err: new MemoryWriter() });
    await run(s, 'info');
    assert.equal(out.text(), 'format name: raw\ncluster size: 0 bytes\nvm state offset: 0 bytes\n');
  });

  it('computes the vm state offset from what L2 tables cover', () => {
    // qemu-io info: 1 MiB with 64k clusters -> 512 MiB; 3 GiB with 4k clusters -> 3 GiB;
    // 1 GiB with 64k clusters and extended L2 (4096 entries) -> 1 GiB.
    const withMeta = (size: number, clusterSize: number, l2Entries: number): FakeImage => {
      const img = new FakeImage(0);
      img.size = size;
      (img.driver as unknown as { meta: object }).meta = { clusterSize, l2Entries };
      return img;
    };
    assert.equal(vmStateOffset(withMeta(1024 * KiB, 64 * KiB, 8192)), 512 * 1024 * KiB);
    assert.equal(vmStateOffset(withMeta(3 * 2 ** 30, 4 * KiB, 512)), 3 * 2 ** 30);
    assert.equal(vmStateOffset(withMeta(2 ** 30, 64 * KiB, 4096)), 2 ** 30);
    assert.equal(vmStateOffset(withMeta(0, 64 * KiB, 8192)), 0);
    assert.equal(vmStateOffset(withMeta(KiB, 0, 8192)), 0);
  });

  it('dumps nested objects like qemu', () => {
    const bitmaps = [{ flags: ['in-use', 'auto'], name: 'bm0', granularity: 65536 }];
    assert.equal(
      dumpQObject({ compat: '1.1', bitmaps, 'refcount-bits': 16 }, 1),
      '    compat: 1.1\n    bitmaps:\n        [0]:\n            flags:\n                [0]: in-use\n                [1]: auto\n' +
        '            name: bm0\n            granularity: 65536\n    refcount bits: 16\n',
    );
  });
});

describe('dispatch', () => {
  it('reports unknown commands, missing files and bad counts on stderr', async () => {
    const { s, out, err } = session(undefined);
    assert.deepEqual(await run(s, 'foo', 'read 0 1', '', 'flush x'), [-EINVAL, -EINVAL, 0, -EINVAL]);
    assert.equal(out.text(), '');
    assert.equal(err.text(), "command \"foo\" not found\nno file open, try 'help open'\nno file open, try 'help open'\n");
  });

  it('splits on single spaces only', async () => {
    const { s, out } = session(new FakeImage(KiB));
    await run(s, '  read   -q  0   1  ');
    assert.equal(out.text(), '');
  });

  it('lists commands sorted, and extended help', async () => {
    const { s, out } = session(undefined);
    assert.deepEqual(await run(s, 'help', 'help map', 'help foo'), [0, 0, -EINVAL]);
    const text = out.text();
    assert.ok(text.startsWith('aio_flush -- completes all outstanding aio requests\naio_read [-Ciqv]'));
    assert.ok(text.includes('\nmap  -- prints the allocated areas of a file\nquit -- exit the program\n'));
    assert.ok(text.endsWith("\nUse 'help commandname' for extended help.\nmap  -- prints the allocated areas of a file\ncommand foo not found\n"));
    const names = IO_COMMANDS.map((c) => c.name);
    assert.equal(new Set(names).size, names.length);
  });

  it('quit stops the session', async () => {
    const { s } = session(undefined);
    await run(s, 'quit');
    assert.equal(s.quit, true);
  });

  it('sleep validates its argument', async () => {
    const { s, out } = session(undefined);
    assert.deepEqual(await run(s, 'sleep x', 'sleep 0'), [-EINVAL, 0]);
    assert.equal(out.text(), 'x is not a valid number\n');
  });

  it('close closes the image', async () => {
    const img = new FakeImage(KiB);
    const { s, err } = session(img);
    assert.deepEqual(await run(s, 'close', 'read 0 1'), [0, -EINVAL]);
    assert.ok(img.closed);
    assert.equal(err.text(), "no file open, try 'help open'\n");
  });
});

describe('write-side commands', () => {
  it('refuse to run on a read-only session before parsing', async () => {
    const { s, out, err } = session(new WritableFakeImage(KiB), { readOnly: true });
    assert.deepEqual(await run(s, 'write -x 0 1', 'discard 0 1', 'truncate 1', 'flush'), [-1, -1, -1, 0]);
    assert.equal(out.text(), '');
    assert.equal(err.text(), 'qcow2kit: Block node is read-only\n'.repeat(3));
  });

  it('report Operation not supported when the image cannot write', async () => {
    const { s, out, err } = session(new FakeImage(64 * KiB));
    assert.deepEqual(await run(s, 'write 0 1', 'write -z 0 1', 'discard 0 1', 'truncate 1', 'aio_write 0 512', 'aio_flush'), [-95, -95, -95, -95, 0, 0]);
    assert.equal(out.text(), 'write failed: Operation not supported\nwrite failed: Operation not supported\ndiscard failed: Operation not supported\naio_write failed: Operation not supported\n');
    assert.equal(err.text(), 'qcow2kit: Image format driver does not support resize\n');
  });

  it('write fills a pattern, zeroes, flushes with -f and reports', async () => {
    const img = new WritableFakeImage(64 * KiB);
    const { s, out } = session(img);
    assert.deepEqual(await run(s, 'write -P 0x22 0 4k', 'write -z -u 4k 4k', 'write -f 8k 1', 'write -q 0 1', 'w -C 0 1'), [0, 0, 0, 0, 0]);
    assert.deepEqual(img.calls, ['write 0 4096 34', 'zero 4096 4096 true', 'write 8192 1 205', 'flush', 'write 0 1 205', 'write 0 1 205']);
    assert.equal(img.storage.bytes()[4095], 0x22);
    assert.equal(
      out.text(),
      'wrote 4096/4096 bytes at offset 0\n4 KiB, 1 ops; 00.00 sec (3.906 MiB/sec and 1000.0000 ops/sec)\n' +
        'wrote 4096/4096 bytes at offset 4096\n4 KiB, 1 ops; 00.00 sec (3.906 MiB/sec and 1000.0000 ops/sec)\n' +
        'wrote 1/1 bytes at offset 8192\n1 bytes, 1 ops; 00.00 sec (1000 bytes/sec and 1000.0000 ops/sec)\n' +
        '1,1,0:00:00.00,1000.000,1000.000\n',
    );
  });

  it('write checks option combinations in qemu-io order', async () => {
    const { s, out } = session(new WritableFakeImage(64 * KiB));
    await run(s, 'write -u 0 1', 'write -z -P 1 0 1', 'write -b -z 0 1', 'write -f -c 0 1', 'write -n 0 1', 'write 0 3G', 'write -c 1 64k', 'write -c 0 100', 'write 64k 1', 'write -P 0x100 0 1', 'write -c 0 512');
    assert.equal(
      out.text(),
      [
        '-u requires -z to be specified',
        'Only one of -z, -P, and -s can be specified at the same time',
        '-b and -z cannot be specified at the same time',
        '-f and -b or -c cannot be specified at the same time',
        '-n requires -z to be specified',
        'length cannot exceed 2147483136 without -n, given 3G',
        "1 is not a sector-aligned value for 'offset'",
        "100 is not a sector-aligned value for 'count'",
        'write failed: Input/output error',
        '0x100 is not a valid pattern byte',
        'write failed: Operation not supported',
      ].join('\n') + '\n',
    );
  });

  it('write -s repeats a file and reports missing or empty files', async () => {
    const img = new WritableFakeImage(64 * KiB);
    const files: Record<string, Uint8Array> = { '/p': new Uint8Array([1, 2, 3]), '/empty': new Uint8Array(0) };
    const readFile = async (p: string): Promise<Uint8Array> => {
      const f = files[p];
      if (f === undefined) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
      return f;
    };
    const { s, err } = session(img, { readFile });
    assert.deepEqual(await run(s, 'write -q -s /p 10 7', 'write -s /none 0 1', 'write -s /empty 0 1'), [0, -EINVAL, -EINVAL]);
    assert.deepEqual([...img.storage.bytes().subarray(10, 17)], [1, 2, 3, 1, 2, 3, 1]);
    assert.equal(err.text(), '/none: No such file or directory\n/empty: file is empty\n');
  });

  it('writev, aio_write, discard and truncate', async () => {
    const img = new WritableFakeImage(64 * KiB);
    const { s, out, err } = session(img);
    const codes = await run(s, 'writev -q -P 3 0 512 512', 'aio_write -q -z -u 0 512', 'aio_write -z 0 512 512', 'aio_flush', 'discard -q 0 64k', 'discard 0 128k', 'truncate -m full 128k', 'truncate -m bogus 1', 'truncate -m off x', 'length');
    assert.deepEqual(codes, [0, 0, -EINVAL, 0, 0, -5, 0, -EINVAL, -EINVAL, 0]);
    assert.deepEqual(img.calls, ['write 0 1024 3', 'zero 0 512 true', 'discard 0 65536', 'resize 131072 full']);
    assert.equal(
      out.text(),
      '-z supports only a single length parameter\ndiscard failed: Input/output error\n' +
        'Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- -m\n128 KiB\n',
    );
    assert.equal(err.text(), "qcow2kit: Invalid preallocation mode 'bogus'\n");
  });
});

describe('report formatting', () => {
  it('formats elapsed times like timestr()', () => {
    assert.equal(formatElapsed(0.004, false), '00.00 sec');
    assert.equal(formatElapsed(0.5, false), '00.50 sec');
    assert.equal(formatElapsed(0.5, true), '0:00:00.50');
    assert.equal(formatElapsed(506.02, false), '0:08:26.02');
    assert.equal(formatElapsed(3723.5, false), '1:02:03.50');
  });

  it('formats reports like print_report()', () => {
    assert.equal(formatReport('read', 1000, 0, 1, 1, 1, false), 'read 1/1 bytes at offset 0\n1 bytes, 1 ops; 0:00:01.00 (1 bytes/sec and 1.0000 ops/sec)\n');
    assert.equal(formatReport('wrote', 1000, 5, 10, 10, 1, true), '10,1,0:00:01.00,10.000,1.000\n');
  });
});
