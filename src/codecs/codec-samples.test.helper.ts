/**
 * Deterministic sample data for codec tests and benchmarks (not exported from the package).
 */

/** A xorshift32 byte generator: same seed, same bytes. */
export function randomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Compressible data resembling a disk: text-like runs with repeats at short and long
 * distances, some zero stretches and some noise.
 */
export function sampleCluster(length: number, seed = 7): Uint8Array {
  const out = new Uint8Array(length);
  const noise = randomBytes(length, seed);
  const words = ['qcow2 ', 'cluster ', 'refcount ', 'L2 table ', 'snapshot ', '\n', 'backing ', 'zstd ', 'deflate '];
  let i = 0;
  let n = 0;
  while (i < length) {
    const pick = (noise[n++ % length] ?? 0) % 16;
    if (pick < 9) {
      const word = words[pick] ?? '';
      for (let k = 0; k < word.length && i < length; k++) out[i++] = word.charCodeAt(k);
    } else if (pick < 11 && i > 300) {
      const dist = 1 + ((noise[n++ % length] ?? 0) * 7 % Math.min(i, 4000));
      const len = 3 + ((noise[n++ % length] ?? 0) % 60);
      for (let k = 0; k < len && i < length; k++, i++) out[i] = out[i - dist] ?? 0;
    } else if (pick < 12) {
      const len = (noise[n++ % length] ?? 0) % 40;
      for (let k = 0; k < len && i < length; k++) out[i++] = 0;
    } else {
      out[i++] = noise[n++ % length] ?? 0;
    }
  }
  return out;
}

/** Round up to a whole number of 512-byte sectors, filling the tail with `fill`. */
export function sectorRound(data: Uint8Array, tail: Uint8Array = new Uint8Array(0)): Uint8Array {
  const size = Math.ceil(data.byteLength / 512) * 512 || 512;
  const out = new Uint8Array(size);
  out.set(data);
  const room = size - data.byteLength;
  if (tail.byteLength > 0) {
    for (let i = 0; i < room; i++) out[data.byteLength + i] = tail[i % tail.byteLength] ?? 0;
  }
  return out;
}
