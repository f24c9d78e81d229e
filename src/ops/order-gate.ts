/**
 * Lets numbered jobs finish their writes in sequence while their reads overlap, like
 * qemu-img convert's default (write in order unless `-W`). Job n may write once jobs
 * 0..n-1 have written.
 *
 * @example
 * ```ts
 * const gate = new OrderGate();
 * await gate.turn(seq); // resolves once every earlier job called done()
 * await target.write(buf, offset);
 * gate.done(seq);
 * ```
 */
export class OrderGate {
  #next = 0;
  #waiters = new Map<number, () => void>();
  #open = false;

  /** Wait until job `seq` may write. */
  turn(seq: number): Promise<void> | undefined {
    if (this.#open || seq === this.#next) return undefined;
    return new Promise((resolve) => this.#waiters.set(seq, resolve));
  }

  /** Job `seq` has written: let the next one go. */
  done(seq: number): void {
    this.#next = seq + 1;
    const wake = this.#waiters.get(this.#next);
    if (wake) {
      this.#waiters.delete(this.#next);
      wake();
    }
  }

  /** Release every waiter (after a failure, so workers can wind down). */
  release(): void {
    this.#open = true;
    for (const wake of this.#waiters.values()) wake();
    this.#waiters.clear();
  }
}
