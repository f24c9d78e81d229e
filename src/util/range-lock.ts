/**
 * Exclusive locks on integer ranges (guest clusters), granted in request order: a request
 * waits for every earlier request whose range overlaps its own, held or still waiting. So
 * overlapping writes apply in the order they were issued, and disjoint ones run in parallel.
 *
 * @example
 * ```ts
 * const locks = new RangeLock();
 * const release = await locks.acquire(0, 3); // clusters 0..3 inclusive
 * try { await writeClusters(); } finally { release(); }
 * ```
 */
export class RangeLock {
  readonly #entries = new Set<Held>();

  /** The lock at once, when no earlier request overlaps; else `undefined` and nothing registered. */
  tryAcquire(first: number, last: number): (() => void) | undefined {
    for (const e of this.#entries) if (e.first <= last && first <= e.last) return undefined;
    return this.#register(first, last);
  }

  /** Registers synchronously (so call order is grant order), then waits for earlier overlaps. */
  acquire(first: number, last: number): Promise<() => void> {
    const blockers: Promise<void>[] = [];
    for (const e of this.#entries) if (e.first <= last && first <= e.last) blockers.push((e.done ??= new Promise((r) => (e.wake = r))));
    const unlock = this.#register(first, last);
    return Promise.all(blockers).then(() => unlock);
  }

  #register(first: number, last: number): () => void {
    const entry: Held = { first, last, done: undefined, wake: undefined };
    this.#entries.add(entry);
    return () => {
      this.#entries.delete(entry);
      entry.wake?.();
    };
  }
}

/** A request holding or awaiting its range; `done` is made when a later request must wait for it. */
interface Held {
  first: number;
  last: number;
  done: Promise<void> | undefined;
  wake: (() => void) | undefined;
}
