// Node-only: the clock commands time themselves with.

/**
 * Milliseconds on a monotonic clock. `performance.now()` would do, but the global
 * `performance` loads node:perf_hooks on first use (~3 ms of a `bench` run).
 *
 * @example
 * ```ts
 * const t0 = monotonicMs();
 * await work();
 * console.log(`${(monotonicMs() - t0).toFixed(1)} ms`);
 * ```
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
