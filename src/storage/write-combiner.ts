/** How a {@link WriteCombiner} reaches its file. */
export interface CombinedWrites {
  /** Write all of `src` at `position` (looping over short writes). */
  write(src: Uint8Array, position: number): Promise<void>;
  /** One vectored write of `buffers` from `position`: the bytes written (may be short). */
  writev(buffers: Uint8Array[], position: number): Promise<number>;
}

/** A run of adjacent writes going out as one. */
interface Batch {
  position: number;
  bytes: number;
  buffers: Uint8Array[];
  resolves: (() => void)[];
  rejects: ((e: unknown) => void)[];
}

/** A vectored write takes at most this many buffers (Linux's IOV_MAX). */
const MAX_BUFFERS = 1024;

/**
 * Joins small writes to adjacent ranges into one vectored write of at most `maxBytes`, holding
 * them back while `maxRunning` batches are in flight. A stream of small sequential writes
 * (`bench -w`: 64 KiB requests, 8 at a time) then costs one system call and one wake-up of the
 * main thread per batch instead of per write; on a small VM each wake-up takes several
 * microseconds of the I/O thread. With two batches in flight the I/O thread always has the next
 * one queued while the main thread refills. Writes of `maxBytes` or more go out at once. Each
 * write still settles on its own: a batch that fails or writes short is retried one write at
 * a time.
 *
 * @example
 * ```ts
 * const combiner = new WriteCombiner({ write: writeAll, writev: pwritev }, 256 << 10, 2);
 * await Promise.all([combiner.write(a, 0), combiner.write(b, a.byteLength)]); // one pwritev
 * await combiner.drain();
 * ```
 */
export class WriteCombiner {
  readonly #io: CombinedWrites;
  readonly #maxBytes: number;
  readonly #maxRunning: number;
  /** Batches waiting for a slot, oldest first. */
  #waiting: Batch[] = [];
  /** A submission is queued for the end of this turn. */
  #scheduled = false;
  /** Batches started and not yet settled. */
  #running = 0;
  /** Large writes started and not yet settled (they take no batch slot). */
  #direct = 0;
  #drained: (() => void) | undefined;

  constructor(io: CombinedWrites, maxBytes: number, maxRunning: number) {
    this.#io = io;
    this.#maxBytes = maxBytes;
    this.#maxRunning = maxRunning;
  }

  /** Write all of `src` at `position`. */
  write(src: Uint8Array, position: number): Promise<void> {
    if (src.byteLength >= this.#maxBytes) {
      this.#direct++;
      const done = this.#io.write(src, position);
      done.then(this.#directSettled, this.#directSettled);
      return done;
    }
    return new Promise((resolve, reject) => {
      const last = this.#waiting[this.#waiting.length - 1];
      if (last !== undefined && last.position + last.bytes === position && last.bytes + src.byteLength <= this.#maxBytes && last.buffers.length < MAX_BUFFERS) {
        last.buffers.push(src);
        last.bytes += src.byteLength;
        last.resolves.push(resolve);
        last.rejects.push(reject);
        return;
      }
      this.#waiting.push({ position, bytes: src.byteLength, buffers: [src], resolves: [resolve], rejects: [reject] });
      this.#schedule();
    });
  }

  /** Settles once every write issued so far has settled. */
  drain(): Promise<void> {
    if (this.#idle()) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#drained;
      this.#drained = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Submit at the end of this turn, so that writes issued later in it can still join. */
  #schedule(): void {
    if (this.#scheduled || this.#running >= this.#maxRunning || this.#waiting.length === 0) return;
    this.#scheduled = true;
    // A promise reaction, not queueMicrotask: Node wraps those in an AsyncResource each.
    void Promise.resolve().then(this.#submit);
  }

  readonly #submit = (): void => {
    this.#scheduled = false;
    while (this.#running < this.#maxRunning) {
      const b = this.#waiting.shift();
      if (b === undefined) break;
      this.#running++;
      void this.#run(b).then(this.#settled);
    }
  };

  readonly #settled = (): void => {
    this.#running--;
    this.#schedule();
    this.#checkDrained();
  };

  readonly #directSettled = (): void => {
    this.#direct--;
    this.#checkDrained();
  };

  #idle(): boolean {
    return this.#running === 0 && this.#direct === 0 && this.#waiting.length === 0;
  }

  #checkDrained(): void {
    if (!this.#idle()) return;
    const drained = this.#drained;
    this.#drained = undefined;
    drained?.();
  }

  /** Write one batch and settle its writes; never rejects. */
  async #run(b: Batch): Promise<void> {
    if (b.buffers.length === 1) {
      await this.#io.write(b.buffers[0]!, b.position).then(b.resolves[0]!, b.rejects[0]!);
      return;
    }
    let written: number;
    try {
      written = await this.#io.writev(b.buffers, b.position);
    } catch {
      written = 0; // each write on its own, to get its own result
    }
    let at = b.position;
    const rest: Promise<void>[] = [];
    for (let i = 0; i < b.buffers.length; i++) {
      const src = b.buffers[i]!;
      const done = Math.min(src.byteLength, Math.max(0, b.position + written - at));
      if (done === src.byteLength) b.resolves[i]!();
      else rest.push(this.#io.write(src.subarray(done), at + done).then(b.resolves[i]!, b.rejects[i]!));
      at += src.byteLength;
    }
    await Promise.all(rest);
  }
}
