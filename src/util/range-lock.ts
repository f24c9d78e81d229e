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
  readonly #entries = new Set<{ first: number; last: number; done: Promise<void> }>();

  /** Registers synchronously (so call order is grant order), then waits for earlier overlaps. */
  acquire(first: number, last: number): Promise<() => void> {
    const blockers: Promise<void>[] = [];
    for (const e of this.#entries) if (e.first <= last && first <= e.last) blockers.push(e.done);
    let release!: () => void;
    const entry = { first, last, done: new Promise<void>((r) => (release = r)) };
    this.#entries.add(entry);
    const unlock = (): void => {
      this.#entries.delete(entry);
      release();
    };
    return Promise.all(blockers).then(() => unlock);
  }
}
