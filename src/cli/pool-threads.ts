/**
 * libuv's thread pool, which runs Node's file I/O, starts on the first request and reads its
 * size from UV_THREADPOOL_SIZE then (default 4). A command may ask for one thread before its
 * first file operation; a size the user set is kept.
 *
 * @example
 * ```ts
 * useOnePoolThread(); // before the command opens anything
 * ```
 */
export function useOnePoolThread(env: Record<string, string | undefined> = process.env): void {
  env['UV_THREADPOOL_SIZE'] ??= '1';
}
