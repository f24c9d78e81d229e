import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Qcow2Error } from '../errors.js';
import type { FormatDriver } from '../format/driver.js';
import type { BlockStatus } from '../image/types.js';
import type { IoImage } from './io-commands.js';
import { formatSpecific, runIo, type IoOpener } from './io.js';
import { createCaptureIO } from './main.js';

/** A 1 MiB qcow2-looking image of 0xab bytes, all allocated. */
class Fake implements IoImage {
  readonly driver = { format: 'qcow2', clusterSize: 65536, meta: { clusterSize: 65536, l2Entries: 8192 } } as unknown as FormatDriver;
  readonly backing = undefined;
  readonly size = 1 << 20;
  closed = 0;
  info?: unknown;
  write?: (src: Uint8Array, offset: number) => Promise<void>;

  async read(dst: Uint8Array): Promise<void> {
    dst.fill(0xab);
  }

  async blockStatus(offset: number, maxLength: number): Promise<BlockStatus> {
    return { offset, length: maxLength, depth: 0, present: true, zero: false, data: true, compressed: false };
  }

  async close(): Promise<void> {
    this.closed++;
  }
}

function opener(image = new Fake()): IoOpener & { calls: Array<{ path: string; format?: string; readOnly: boolean }>; image: Fake } {
  const calls: Array<{ path: string; format?: string; readOnly: boolean }> = [];
  const fn: IoOpener = async (path, options) => {
    calls.push({ path, ...options });
    return image;
  };
  return Object.assign(fn, { calls, image });
}

let t = 0;
const now = (): number => t++;

describe('runIo options', () => {
  it('rejects bad options with getopt text and the usage', async () => {
    for (const [argv, message] of [
      [['-x'], "invalid option -- 'x'"],
      [['--c', 'x'], "option '--c' is ambiguous; possibilities: '--cmd' '--copy-on-read' '--cache'"],
      [['--read-only=1'], "option '--read-only' doesn't allow an argument"],
      [['-c'], "option requires an argument -- 'c'"],
    ] as const) {
      const io = createCaptureIO();
      assert.equal(await runIo(argv, io, { open: opener() }), 1);
      assert.equal(io.stderrText(), `qcow2kit: ${message}\n`);
      assert.match(io.stdoutText(), /^Usage: qcow2kit io \[OPTIONS\]/);
    }
  });

  it('prints help and version', async () => {
    let io = createCaptureIO();
    assert.equal(await runIo(['-h', '-x'], io, { open: opener() }), 0);
    assert.match(io.stdoutText(), /^Usage: qcow2kit io/);
    io = createCaptureIO();
    assert.equal(await runIo(['--version'], io, { open: opener() }), 0);
    assert.match(io.stdoutText(), /^qcow2kit io version \S+ \(qemu-io 7\.2 compatible\)\n$/);
  });

  it('rejects more than one file, bad modes and unsupported options', async () => {
    let io = createCaptureIO();
    assert.equal(await runIo(['a', 'b'], io, { open: opener() }), 1);
    assert.match(io.stdoutText(), /^Usage/);
    io = createCaptureIO();
    assert.equal(await runIo(['-t', 'bogus', 'a'], io, { open: opener() }), 1);
    assert.equal(io.stderrText(), 'qcow2kit: Invalid cache option: bogus\n');
    io = createCaptureIO();
    assert.equal(await runIo(['-s', 'a'], io, { open: opener() }), 1);
    assert.equal(io.stderrText(), 'qcow2kit: option --snapshot is not supported\n');
    io = createCaptureIO();
    assert.equal(await runIo(['-n', '-m', '-k', '-U', '-t', 'none', '-i', 'threads', '-d', 'unmap', '-c', 'length', 'a'], io, { open: opener(), now }), 0);
    assert.equal(io.stdoutText(), '1 MiB\n');
  });
});

describe('runIo commands', () => {
  it('runs commands in order and exits 1 when any failed', async () => {
    const open = opener();
    const io = createCaptureIO();
    const code = await runIo(['-c', 'read -q -P 0xac 0 64k', '-c', 'read -q -P 0xab 0 64k', '-c', 'alloc 0 64k', 'disk.qcow2'], io, { open, now });
    assert.equal(code, 1);
    assert.equal(io.stdoutText(), 'Pattern verification failed at offset 0, 65536 bytes\n65536/65536 bytes allocated at offset 0 bytes\n');
    assert.equal(open.image.closed, 1);
  });

  it('exits 0 when all succeed, and permutes options after the file', async () => {
    const open = opener();
    const io = createCaptureIO();
    assert.equal(await runIo(['disk.qcow2', '-c', 'read -q 0 1', '--form', 'qcow2'], io, { open, now }), 0);
    assert.deepEqual(open.calls, [{ path: 'disk.qcow2', format: 'qcow2', readOnly: true }]);
  });

  it('stops at quit', async () => {
    const io = createCaptureIO();
    assert.equal(await runIo(['-c', 'length', '-c', 'quit', '-c', 'foo', 'x'], io, { open: opener(), now }), 0);
    assert.equal(io.stdoutText(), '1 MiB\n');
    assert.equal(io.stderrText(), '');
  });

  it('fails without a file', async () => {
    const io = createCaptureIO();
    assert.equal(await runIo(['-c', 'read 0 1'], io, { open: opener() }), 1);
    assert.equal(io.stderrText(), "no file open, try 'help open'\n");
  });

  it("reports open failures like qemu-io and runs nothing", async () => {
    const io = createCaptureIO();
    const open: IoOpener = async (path) => {
      throw new Qcow2Error('NOT_FOUND', `Could not open '${path}': No such file or directory`);
    };
    assert.equal(await runIo(['-c', 'read 0 1', 'nope.qcow2'], io, { open }), 1);
    assert.equal(io.stderrText(), "qcow2kit: can't open device nope.qcow2: Could not open 'nope.qcow2': No such file or directory\n");
    assert.equal(io.stdoutText(), '');
  });

  it('opens read-write only when a command writes and -r is absent', async () => {
    let open = opener();
    await runIo(['-c', 'write -q 0 1', 'x'], createCaptureIO(), { open, now });
    assert.equal(open.calls[0]?.readOnly, false);
    open = opener();
    const io = createCaptureIO();
    assert.equal(await runIo(['-r', '-c', 'write -q 0 1', 'x'], io, { open, now }), 1);
    assert.equal(open.calls[0]?.readOnly, true);
    assert.equal(io.stderrText(), 'qcow2kit: Block node is read-only\n');
  });

  it('falls back to read-only when the image cannot be opened for writing', async () => {
    const image = new Fake();
    const calls: boolean[] = [];
    const open: IoOpener = async (_path, options) => {
      calls.push(options.readOnly);
      if (!options.readOnly) throw new Qcow2Error('UNSUPPORTED', 'writing is not implemented');
      return image;
    };
    const io = createCaptureIO();
    assert.equal(await runIo(['-c', 'write 0 1', '-c', 'read -q 0 1', 'x'], io, { open, now }), 1);
    assert.deepEqual(calls, [false, true]);
    assert.equal(io.stdoutText(), 'write failed: Operation not supported\n');
  });

  it('passes -s source files through readFile', async () => {
    const image = new Fake();
    const written: number[] = [];
    image.write = async (src) => void written.push(...src);
    const io = createCaptureIO();
    const readFile = async (): Promise<Uint8Array> => new Uint8Array([7, 8]);
    assert.equal(await runIo(['-c', 'write -q -s pat 0 3', 'x'], io, { open: opener(image), readFile, now }), 0);
    assert.deepEqual(written, [7, 8, 7]);
  });

  it('reads commands from stdin after prompts when no -c is given', async () => {
    const io = createCaptureIO({ stdin: ['length\n\nfo', 'o\nquit\nlength\n'] });
    assert.equal(await runIo(['x'], io, { open: opener(), now }), 1);
    assert.equal(io.stdoutText(), 'qcow2kit> 1 MiB\nqcow2kit> qcow2kit> qcow2kit> ');
    assert.equal(io.stderrText(), 'command "foo" not found\n');
  });

  it('runs a last stdin line without a newline', async () => {
    const io = createCaptureIO({ stdin: [new TextEncoder().encode('length')] });
    assert.equal(await runIo(['x'], io, { open: opener(), now }), 0);
    assert.equal(io.stdoutText(), 'qcow2kit> 1 MiB\n');
  });
});

describe('formatSpecific', () => {
  it('prefers the image info object', () => {
    const image = new Fake();
    image.info = { 'format-specific': { type: 'qcow2', data: { compat: '1.1', 'extended-l2': true } } };
    assert.deepEqual(formatSpecific(image), { compat: '1.1', 'extended-l2': true });
  });

  it('ignores images without a usable info object', () => {
    const image = new Fake();
    assert.equal(formatSpecific(image), undefined);
    image.info = { 'format-specific': { type: 'qcow2' } };
    assert.equal(formatSpecific(image), undefined);
  });

  it('uses the injected provider for info', async () => {
    const io = createCaptureIO();
    const deps = { open: opener(), now, formatSpecific: () => ({ compat: '0.10' }) };
    assert.equal(await runIo(['-c', 'info', 'x'], io, deps), 0);
    assert.equal(io.stdoutText(), 'format name: qcow2\ncluster size: 64 KiB\nvm state offset: 512 MiB\nFormat specific information:\n    compat: 0.10\n');
  });

});
