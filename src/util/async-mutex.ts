/**
 * A FIFO async mutex: metadata updates that span awaits (allocation, table growth) run one at
 * a time; plain reads never take it.
 *
 * @example
 * ```ts
 * const lock = new AsyncMutex();
 * await lock.run(async () => { await allocate(); });
 * ```
 */
export class AsyncMutex {
  #tail: Promise<void> = Promise.resolve();

  /** Run `fn` once every earlier holder has finished. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn);
    this.#tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
