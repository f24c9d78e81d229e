/**
 * A mutation is a list of byte patches (and optionally a new file length), so that every fuzz
 * case can be written down, replayed and minimised without the generator that made it.
 */

/** Bytes written at a file offset (as hex, so a finding's JSON is readable and exact). */
export interface BytePatch {
  at: number;
  hex: string;
}

/** One mutation: what it aimed at, and its effect on the bytes. */
export interface Mutation {
  /** Mutation family, e.g. 'header-field', 'l2-entry', 'compressed', 'random-bytes'. */
  kind: string;
  /** Human detail: field name, table index, value. */
  what: string;
  patches: BytePatch[];
  /** New file length (truncate or extend with zeros), applied before the patches. */
  resize?: number;
}

/** Largest file a mutation may produce (extensions beyond are clamped). */
export const MAX_MUTATED_SIZE = 64 << 20;

export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(hex)) throw new RangeError(`bad hex string of length ${hex.length}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Apply mutations in order to a copy of `base`. */
export function applyMutations(base: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let bytes: Uint8Array = base.slice();
  for (const m of mutations) {
    if (m.resize !== undefined) bytes = resized(bytes, Math.min(m.resize, MAX_MUTATED_SIZE));
    for (const p of m.patches) {
      const data = fromHex(p.hex);
      const end = Math.min(p.at + data.byteLength, MAX_MUTATED_SIZE);
      if (p.at >= end) continue;
      if (end > bytes.byteLength) bytes = resized(bytes, end);
      bytes.set(data.subarray(0, end - p.at), p.at);
    }
  }
  return bytes;
}

function resized(bytes: Uint8Array, size: number): Uint8Array {
  if (size <= bytes.byteLength) return bytes.slice(0, size);
  const out = new Uint8Array(size);
  out.set(bytes);
  return out;
}
