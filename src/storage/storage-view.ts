import type { Storage } from './storage.js';

/**
 * `storage` with `flush` or `close` replaced; every other method, the optional ones included
 * when `storage` has them, passes through. Wrappers that change how a storage is flushed or
 * closed (cache=unsafe, a borrowed storage) are built on this.
 *
 * @example
 * ```ts
 * const borrowed = storageView(storage, { close: async () => {} });
 * ```
 */
export function storageView(storage: Storage, replace: Partial<Pick<Storage, 'flush' | 'close'>>): Storage {
  const s = storage;
  return {
    name: s.name,
    readOnly: s.readOnly,
    read: (dst, offset) => s.read(dst, offset),
    write: (src, offset) => s.write(src, offset),
    size: () => s.size(),
    resize: (size) => s.resize(size),
    flush: replace.flush ?? (() => s.flush()),
    close: replace.close ?? (() => s.close()),
    ...(s.allocatedSize ? { allocatedSize: () => s.allocatedSize!() } : {}),
    ...(s.identity ? { identity: () => s.identity!() } : {}),
    ...(s.writeZeroes ? { writeZeroes: (offset: number, length: number) => s.writeZeroes!(offset, length) } : {}),
    ...(s.discard ? { discard: (offset: number, length: number) => s.discard!(offset, length) } : {}),
  };
}
