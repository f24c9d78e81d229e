/**
 * Amend progress the way QEMU reports it: each operation (version change, refcount width
 * change) reports (done, total) of its own work; the helper turns that into one overall
 * (offset, total) by adding up finished operations and projecting the rest from the work
 * seen so far (QEMU's qcow2_amend_helper_cb). qemu-img then prints 100 * offset / total.
 */

/** Overall progress as QEMU's amend status callback receives it. */
export type AmendStatus = (offset: number, total: number) => void;

/** Which amend operation is reporting. */
export type AmendOperation = 'upgrade' | 'refcount-width' | 'downgrade';

/**
 * @example
 * ```ts
 * const p = new AmendProgress(2, (o, t) => console.log(o / t));
 * p.operation('upgrade');
 * p.report(1, 2); // 1 of a projected 4
 * ```
 */
export class AmendProgress {
  readonly #total: number;
  readonly #out: AmendStatus;
  #current: AmendOperation | undefined;
  #last: AmendOperation | undefined;
  #completed = 0;
  #offsetCompleted = 0;
  #lastWork = 0;

  constructor(totalOperations: number, out: AmendStatus) {
    this.#total = totalOperations;
    this.#out = out;
  }

  /** The operation that reports next. */
  operation(op: AmendOperation): void {
    this.#current = op;
  }

  /** The current operation has done `done` of `work` units. */
  report(done: number, work: number): void {
    if (this.#current !== this.#last) {
      if (this.#last !== undefined) {
        this.#offsetCompleted += this.#lastWork;
        this.#completed++;
      }
      this.#last = this.#current;
    }
    if (this.#total <= 0 || this.#completed >= this.#total) return;
    this.#lastWork = work;
    const current = this.#offsetCompleted + work;
    // Integer division, as QEMU's int64 arithmetic.
    const projected = Math.floor((current * (this.#total - this.#completed - 1)) / (this.#completed + 1));
    this.#out(this.#offsetCompleted + done, current + projected);
  }
}

/** qemu-img's amend_status_cb: the percentage in single precision. */
export function amendPercent(offset: number, total: number): number {
  const f = Math.fround;
  return f(f(f(100) * f(offset)) / f(total));
}
