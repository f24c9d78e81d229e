// Node-only: the file-system calls qcow2kit makes, as promises over node:fs's callback API.
// node:fs is loaded when Node starts; node:fs/promises is not, and requiring it costs ~1.8 ms
// on a small VM (it pulls in readline, fs/dir and the watchers), a real share of a CLI run
// that qemu-img starts in ~15 ms. Positional I/O goes through here too because it is faster
// (see readAt).
// Named imports: a namespace import makes the CLI bundle copy all of node:fs's exports into a
// new object at load (~0.6 ms of every run).
import { close, fdatasync, fstat, ftruncate, open, read, readFile, realpath, stat, unlink, write, writev, type BigIntStats, type Stats } from 'node:fs';

type Callback<T> = (err: NodeJS.ErrnoException | null, value: T) => void;

/** A promise settled by a Node callback. */
function settle<T>(start: (done: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    start((err, value) => (err ? reject(err) : resolve(value)));
  });
}

/** open(2); the descriptor must be closed with {@link closeFd}. */
export function openFd(path: string, flags: string): Promise<number> {
  return settle((done) => open(path, flags, done));
}

export function closeFd(fd: number): Promise<void> {
  return settle((done) => close(fd, (err) => done(err, undefined)));
}

export function fstatFd(fd: number): Promise<Stats>;
export function fstatFd(fd: number, options: { bigint: true }): Promise<BigIntStats>;
export function fstatFd(fd: number, options?: { bigint: true }): Promise<Stats | BigIntStats> {
  return settle<Stats | BigIntStats>((done) => fstat(fd, { bigint: options?.bigint ?? false }, done));
}

export function ftruncateFd(fd: number, length: number): Promise<void> {
  return settle((done) => ftruncate(fd, length, (err) => done(err, undefined)));
}

export function fdatasyncFd(fd: number): Promise<void> {
  return settle((done) => fdatasync(fd, (err) => done(err, undefined)));
}

// Positional I/O through the callback API: FileHandle.read/write cost about twice the
// main-thread time per call (measured: 30,000 64 KiB writes, ~0.45 s of CPU against ~0.23 s),
// which shows in runs of many small requests such as `bench`.
export function readAt(fd: number, dst: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return settle((done) => read(fd, dst, at, length, position, done));
}

export function writeAt(fd: number, src: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return settle((done) => write(fd, src, at, length, position, done));
}

/** pwritev(2): the bytes written, which may be fewer than the buffers hold. */
export function writevAt(fd: number, buffers: Uint8Array[], position: number): Promise<number> {
  return settle((done) => writev(fd, buffers, position, done));
}

export function statPath(path: string): Promise<Stats> {
  return settle((done) => stat(path, done));
}

/** realpath(3), as fs/promises' realpath does (fs.realpath without .native walks in JS). */
export function realpathOf(path: string): Promise<string> {
  return settle((done) => realpath.native(path, done));
}

export function unlinkPath(path: string): Promise<void> {
  return settle((done) => unlink(path, (err) => done(err, undefined)));
}

export function readWholeFile(path: string): Promise<Buffer> {
  return settle((done) => readFile(path, done));
}
