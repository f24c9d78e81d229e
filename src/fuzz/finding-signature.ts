/**
 * Groups findings: the same kind of failure, the same error type, at the same place in our code
 * is one bug however many seeds hit it.
 */
import type { Finding } from './fuzz-exec.js';

/** The first stack frame inside the library (not the harness): where the bug is. */
export function topFrame(stack: string): string {
  for (const line of stack.split('\n')) {
    const m = /(?:\(|at )(?:file:\/\/)?[^()\s]*?\/((?:src|dist)\/[^()\s]*?):(\d+):\d+\)?$/.exec(line.trim());
    if (m !== null && !m[1]!.includes('/fuzz/')) return `${m[1]}:${m[2]}`;
  }
  return '';
}

/**
 * A stable grouping key. Timeouts and memory blow-ups group by step (their stacks only say
 * where the harness noticed them); the rest by kind, error name and top frame.
 *
 * @example
 * ```ts
 * signatureOf({ kind: 'crash', step: 'read', name: 'TypeError', message: 'x', stack }); // 'crash|TypeError|dist/a.js:12'
 * ```
 */
export function signatureOf(f: Finding): string {
  const where = f.kind === 'timeout' || f.kind === 'memory' || f.kind === 'worker-exit' ? f.step : topFrame(f.stack) || f.message.slice(0, 80);
  return `${f.kind}|${f.name}|${where}`;
}
