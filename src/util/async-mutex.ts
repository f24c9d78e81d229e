/**
 * A FIFO async mutex: metadata updates that span awaits (allocation, table growth) run one at
 * a time; plain reads never take it.
 *
 * @example
 * ```ts
 * const lock = new AsyncMutex();
 * await lock.run(async () => { await allocate(); });
 * if (lock.idle) updateSynchronously(); // nothing holds or awaits the lock: as good as holding it
 * ```
 */
export class AsyncMutex {
  #tail: Promise<void> = Promise.resolve();
  /** Holders running or waiting. */
  #queued = 0;

  /**
   * True when no holder is running or waiting. Synchronous code that finds the lock idle
   * cannot interleave with any holder, so it may act as one without taking the lock.
   */
  get idle(): boolean {
    return this.#queued === 0;
  }

  /** Run `fn` once every earlier holder has finished. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    this.#queued++;
    const result = this.#tail.then(fn);
    this.#tail = result.then(this.#leave, this.#leave);
    return result;
  }

  readonly #leave = (): void => {
    this.#queued--;
  };
}
