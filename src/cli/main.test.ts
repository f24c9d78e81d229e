import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { Qcow2Error } from '../errors.js';
import { parseCommandArgs } from './args.js';
import { CliError } from './cli-error.js';
import { COMMANDS, createCaptureIO, helpText, main, StreamWriter, type CliIO, type CommandRegistry } from './main.js';

const registry = (mods: Record<string, unknown>): CommandRegistry =>
  Object.fromEntries(Object.entries(mods).map(([k, v]) => [k, async () => v]));

describe('main dispatch', () => {
  it('passes the arguments after the command and returns its code', async () => {
    const seen: string[][] = [];
    const io = createCaptureIO();
    const code = await main(['info', '-f', 'raw', 'x'], io, registry({ info: { run: async (argv: string[], cio: CliIO) => (seen.push(argv), cio.stdout.write('ok\n'), 3) } }));
    assert.equal(code, 3);
    assert.deepEqual(seen, [['-f', 'raw', 'x']]);
    assert.equal(io.stdoutText(), 'ok\n');
    assert.ok(io.stdout.flushes > 0 && io.stderr.flushes > 0);
  });

  it('reports missing and unknown commands like qemu-img', async () => {
    let io = createCaptureIO();
    assert.equal(await main([], io, registry({})), 1);
    assert.equal(io.stderrText(), "qcow2kit: Not enough arguments\nTry 'qcow2kit --help' for more information\n");
    io = createCaptureIO();
    assert.equal(await main(['foo'], io, registry({})), 1);
    assert.equal(io.stderrText(), "qcow2kit: Command not found: foo\nTry 'qcow2kit --help' for more information\n");
    io = createCaptureIO();
    assert.equal(await main(['toString'], io, registry({})), 1);
    assert.match(io.stderrText(), /Command not found: toString/);
  });

  it('reports top-level option errors', async () => {
    let io = createCaptureIO();
    assert.equal(await main(['-x'], io, registry({})), 1);
    assert.equal(io.stderrText(), "qcow2kit: unrecognized option '-x'\nTry 'qcow2kit --help' for more information\n");
    io = createCaptureIO();
    assert.equal(await main(['-T'], io, registry({})), 1);
    assert.equal(io.stderrText(), "qcow2kit: missing argument for option '-T'\nTry 'qcow2kit --help' for more information\n");
  });

  it('stops top-level options at the command name', async () => {
    const io = createCaptureIO();
    let got: string[] = [];
    await main(['-T', 'x', '--', 'info', '-V'], io, registry({ info: { run: async (argv: string[]) => ((got = argv), 0) } }));
    assert.deepEqual(got, ['-V']);
  });

  it('prints help and version', async () => {
    let io = createCaptureIO();
    assert.equal(await main(['--help'], io, registry({})), 0);
    assert.match(io.stdoutText(), /^qcow2kit version .*\nusage: qcow2kit \[standard options\] command/);
    io = createCaptureIO();
    assert.equal(await main(['-V', 'info'], io, registry({})), 0);
    assert.match(io.stdoutText(), /^qcow2kit version \d+\.\d+\.\d+ \(qemu-img 7\.2 compatible\)\n$/);
    assert.match(helpText(), /\n {2}info \[--object objectdef\]/);
  });

  it('prints the global help for a command -h, as qemu-img does', async () => {
    const io = createCaptureIO();
    const info = { run: async (argv: string[]) => (parseCommandArgs('info', argv, { options: [] }), 0) };
    assert.equal(await main(['info', '-h', '-x'], io, registry({ info })), 0);
    assert.match(io.stdoutText(), /^qcow2kit version/);
    const io2 = createCaptureIO();
    assert.equal(await main(['info', '-x', '-h'], io2, registry({ info })), 1);
    assert.equal(io2.stderrText(), "qcow2kit: unrecognized option '-x'\nTry 'qcow2kit --help' for more information\n");
  });
});

describe('main error reporting', () => {
  const failing = (e: unknown): CommandRegistry => registry({ c: { run: async () => Promise.reject(e) } });

  it('prints CliError lines with the program prefix and its exit code', async () => {
    const io = createCaptureIO();
    assert.equal(await main(['c'], io, failing(new CliError('first\nsecond', { exitCode: 2 }))), 2);
    assert.equal(io.stderrText(), 'qcow2kit: first\nqcow2kit: second\n');
  });

  it('prints Qcow2Error as one line per message line, exit 1, no stack', async () => {
    const io = createCaptureIO();
    assert.equal(await main(['c'], io, failing(new Qcow2Error('INVALID_ARGUMENT', 'Invalid image size specified. You may use k\nkilobytes'))), 1);
    assert.equal(io.stderrText(), 'qcow2kit: Invalid image size specified. You may use k\nqcow2kit: kilobytes\n');
  });

  it('prints one line for unexpected errors, the stack only with QCOW2KIT_DEBUG=1', async () => {
    let io = createCaptureIO();
    assert.equal(await main(['c'], io, failing(new TypeError('boom\nmore'))), 1);
    assert.equal(io.stderrText(), 'qcow2kit: boom\n');
    io = createCaptureIO({ env: { QCOW2KIT_DEBUG: '1' } });
    assert.equal(await main(['c'], io, failing(new TypeError('boom'))), 1);
    assert.match(io.stderrText(), /^qcow2kit: boom\nTypeError: boom\n {4}at /);
    io = createCaptureIO();
    assert.equal(await main(['c'], io, failing('a string')), 1);
    assert.equal(io.stderrText(), 'qcow2kit: a string\n');
  });

  it('turns a non-integer result into exit 1', async () => {
    const io = createCaptureIO();
    assert.equal(await main(['c'], io, registry({ c: { run: async () => undefined } })), 1);
  });
});

describe('command loading', () => {
  it('says "not supported yet" when the command module does not exist', async () => {
    const io = createCaptureIO();
    const reg: CommandRegistry = { zzz: () => import('./cmd-zzz.js' as string) };
    assert.equal(await main(['zzz', 'a'], io, reg), 1);
    assert.equal(io.stderrText(), 'qcow2kit: Command not supported yet: zzz\n');
  });

  it('reports another missing module as an error', async () => {
    const io = createCaptureIO();
    const reg: CommandRegistry = { bench: () => import('./cmd-does-not-exist.js' as string) };
    assert.equal(await main(['bench'], io, reg), 1);
    assert.match(io.stderrText(), /^qcow2kit: Cannot find module .*cmd-does-not-exist\.js/);
  });

  it('says "not supported yet" for a module without run()', async () => {
    const io = createCaptureIO();
    assert.equal(await main(['x'], io, registry({ x: { other: 1 } })), 1);
    assert.equal(io.stderrText(), 'qcow2kit: Command not supported yet: x\n');
  });

  it('reports a missing dependency of an existing command as an error, not "not supported"', async () => {
    const io = createCaptureIO();
    const err = Object.assign(new Error("Cannot find module '/x/dist/node.js' imported from /x/dist/cli/cmd-info.js"), { code: 'ERR_MODULE_NOT_FOUND' });
    assert.equal(await main(['info'], io, { info: async () => Promise.reject(err) }), 1);
    assert.match(io.stderrText(), /^qcow2kit: Cannot find module '\/x\/dist\/node\.js'/);
    const io2 = createCaptureIO();
    const own = Object.assign(new Error("Cannot find module '/x/dist/cli/cmd-info.js' imported from /x/dist/cli/main.js"), { code: 'ERR_MODULE_NOT_FOUND' });
    assert.equal(await main(['info'], io2, { info: async () => Promise.reject(own) }), 1);
    assert.equal(io2.stderrText(), 'qcow2kit: Command not supported yet: info\n');
  });

  it('registers every qemu-img command and io', () => {
    for (const name of ['info', 'map', 'convert', 'compare', 'snapshot', 'io', 'create', 'check', 'resize', 'amend', 'commit', 'rebase', 'bitmap', 'measure', 'dd', 'bench']) {
      assert.equal(typeof COMMANDS[name], 'function', name);
    }
  });
});

/** A fake Node writable: records writes; reports backpressure after `limit` writes. */
class FakeStream extends EventEmitter {
  readonly chunks: Array<string | Uint8Array> = [];
  isTTY = false;
  limit = Infinity;

  write(chunk: string | Uint8Array): boolean {
    this.chunks.push(chunk);
    return this.chunks.length < this.limit;
  }
}

describe('StreamWriter', () => {
  it('coalesces small writes and keeps bytes in order', async () => {
    const s = new FakeStream();
    const w = new StreamWriter(s);
    w.write('a');
    w.write('b');
    w.write(new Uint8Array([1]));
    w.write('c');
    assert.equal(s.chunks.length, 0);
    await w.flush();
    assert.deepEqual(s.chunks, ['ab', new Uint8Array([1]), 'c']);
  });

  it('pushes at the high-water mark and asks callers to wait when the stream is full', async () => {
    const s = new FakeStream();
    s.limit = 1;
    const w = new StreamWriter(s);
    assert.equal(w.write('x'.repeat(70000)), false);
    assert.equal(s.chunks.length, 1);
    let done = false;
    const p = w.flush().then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(done, false);
    s.emit('drain');
    await p;
    assert.equal(done, true);
  });

  it('does not wait for a drain that came before flush()', async () => {
    const s = new FakeStream();
    s.limit = 1;
    const w = new StreamWriter(s);
    assert.equal(w.write('x'.repeat(70000)), false);
    s.emit('drain');
    await w.flush(); // would never settle if the early drain were missed
    assert.equal(w.write('y'), true);
  });

  it('writes straight to the descriptor when given one, without making the stream', async () => {
    const written: Uint8Array[] = [];
    // At most 3 bytes per call: short writes must be continued.
    const writeSync = (fd: number, bytes: Uint8Array, offset: number): number => {
      assert.equal(fd, 1);
      const n = Math.min(3, bytes.byteLength - offset);
      written.push(bytes.slice(offset, offset + n));
      return n;
    };
    const w = new StreamWriter(() => assert.fail('the stream was made'), { fd: 1, writeSync });
    w.write('héllo ');
    w.write(new Uint8Array([1, 2]));
    await w.flush();
    assert.equal(Buffer.concat(written).toString('latin1'), Buffer.concat([Buffer.from('héllo '), Buffer.from([1, 2])]).toString('latin1'));
  });

  it('hands over to the stream when the descriptor would block, and stops after EPIPE', async () => {
    const s = new FakeStream();
    let calls = 0;
    const writeSync = (_fd: number, bytes: Uint8Array, offset: number): number => {
      if (++calls === 1) return 2;
      void bytes;
      void offset;
      throw Object.assign(new Error('EAGAIN'), { code: 'EAGAIN' });
    };
    const w = new StreamWriter(() => s, { fd: 1, writeSync });
    w.write('abcdef');
    await w.flush();
    assert.deepEqual(s.chunks, [new TextEncoder().encode('cdef')]);
    w.write('g');
    await w.flush();
    assert.deepEqual(s.chunks.at(-1), 'g');
    assert.equal(calls, 2);
    const broken = new StreamWriter(() => assert.fail('the stream was made'), {
      fd: 2,
      writeSync: () => {
        throw Object.assign(new Error('EPIPE'), { code: 'EPIPE' });
      },
    });
    broken.write('x');
    await broken.flush();
    assert.equal(broken.write('y'), true);
    await broken.flush();
  });

  it('drops output after a broken pipe instead of failing', async () => {
    const s = new FakeStream();
    s.limit = 1;
    const w = new StreamWriter(s);
    w.write('x'.repeat(70000));
    const p = w.flush();
    s.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    await p;
    assert.equal(w.write('more'), true);
    await w.flush();
    assert.equal(s.chunks.length, 1);
  });
});
