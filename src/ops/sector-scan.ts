/**
 * Sector-granular zero and difference scans with qemu-img's exact semantics
 * (is_allocated_sectors, find_nonzero, compare_buffers). They decide which parts of a
 * converted image become holes and which offset `compare` reports, so the rounding rules
 * are qemu's, not ours.
 *
 * Buffers are scanned as 32-bit words, eight at a time, and every scan stops at the first
 * non-zero word: a data sector usually costs one load.
 */

/** qemu's BDRV_SECTOR_SIZE. */
export const SECTOR = 512;

const WORDS_PER_SECTOR = SECTOR >>> 2;

/** A 32-bit view of `bytes`; `bytes` must start on a 4-byte boundary. */
export function wordsOf(bytes: Uint8Array): Int32Array {
  return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
}

/** True when sector `sector` of `words` (a whole 512-byte sector) is all zero. */
export function sectorIsZero(words: Int32Array, sector: number): boolean {
  let i = sector * WORDS_PER_SECTOR;
  const end = i + WORDS_PER_SECTOR;
  for (; i < end; i += 8) {
    if ((words[i]! | words[i + 1]! | words[i + 2]! | words[i + 3]! | words[i + 4]! | words[i + 5]! | words[i + 6]! | words[i + 7]!) !== 0) {
      return false;
    }
  }
  return true;
}

/** True when `bytes[start, end)` is all zero. Any alignment. */
export function rangeIsZero(bytes: Uint8Array, start: number, end: number): boolean {
  let i = start;
  // Bytes up to the first 4-byte boundary, then words, then the tail.
  while (i < end && ((bytes.byteOffset + i) & 3) !== 0) if (bytes[i++] !== 0) return false;
  const wordCount = (end - i) >>> 2;
  if (wordCount > 0) {
    const words = new Int32Array(bytes.buffer, bytes.byteOffset + i, wordCount);
    let w = 0;
    for (; w + 8 <= wordCount; w += 8) {
      if ((words[w]! | words[w + 1]! | words[w + 2]! | words[w + 3]! | words[w + 4]! | words[w + 5]! | words[w + 6]! | words[w + 7]!) !== 0) return false;
    }
    for (; w < wordCount; w++) if (words[w] !== 0) return false;
    i += wordCount << 2;
  }
  while (i < end) if (bytes[i++] !== 0) return false;
  return true;
}

/**
 * qemu's is_allocated_sectors: the length of the run of sectors at `first` (of `n`) that
 * share the first sector's zero/non-zero state, with the run end moved to an `alignment`
 * boundary (in sectors, counted from `sectorNum`) the way qemu does to avoid
 * read-modify-write on the target. Returns the run length, positive for data and negative
 * for zeros (never 0 when n > 0).
 */
export function allocatedRun(words: Int32Array, first: number, n: number, sectorNum: number, alignment: number): number {
  if (n <= 0) return 0;
  let isZero = sectorIsZero(words, first);
  let i = 1;
  if (isZero) {
    while (i < n && sectorIsZero(words, first + i)) i++;
  } else {
    // Data sectors almost always have a non-zero first or last word: one or two loads each.
    for (let w = (first + 1) * WORDS_PER_SECTOR; i < n; i++, w += WORDS_PER_SECTOR) {
      if (words[w] !== 0 || words[w + WORDS_PER_SECTOR - 1] !== 0) continue;
      if (sectorIsZero(words, first + i)) break;
    }
  }
  // The whole range has one state: no reason to split it.
  if (i === n) return isZero ? -i : i;
  const tail = (sectorNum + i) & (alignment - 1);
  if (tail !== 0) {
    // A zero run no longer than the unaligned tail is rewritten by the next data write anyway.
    if (isZero && i <= tail) isZero = false;
    if (!isZero) i = Math.min(i + alignment - tail, n);
    else i -= tail;
  }
  return isZero ? -i : i;
}

/**
 * qemu's is_allocated_sectors_min: like {@link allocatedRun}, but a run that starts with
 * data swallows zero runs shorter than `min` sectors, so small holes do not split writes.
 * Returns sectors to write (positive) or to treat as zeros (negative).
 */
export function allocatedRunMin(words: Int32Array, first: number, n: number, sectorNum: number, min: number, alignment: number): number {
  const probed = dataRunByProbes(words, first, n, sectorNum, Math.min(min, n), alignment);
  return probed > 0 ? probed : allocatedRunMinByScan(words, first, n, sectorNum, min, alignment);
}

/** {@link allocatedRunMin} by qemu's loop alone, sector run after sector run. */
export function allocatedRunMinByScan(words: Int32Array, first: number, n: number, sectorNum: number, min: number, alignment: number): number {
  if (n < min) min = n;
  const head = allocatedRun(words, first, n, sectorNum, alignment);
  if (head <= 0) return head;
  let used = head;
  let checked = head;
  let pos = first + head;
  let left = n - head;
  let sector = sectorNum + head;
  while (left > 0) {
    const run = allocatedRun(words, pos, left, sector, alignment);
    const len = run < 0 ? -run : run;
    pos += len;
    left -= len;
    sector += len;
    checked += len;
    if (run > 0) used = checked;
    else if (len >= min) break;
  }
  return used;
}

/**
 * {@link allocatedRunMin}'s answer for the common case of data without long zero runs, from
 * one sector in every `min`: a run of `min` or more zero sectors always holds one of those.
 * When all of them hold data, every zero run in the range is shorter than `min`, so qemu's
 * loop swallows them all but a zero tail, and its answer is the data up to that tail rounded
 * up to `alignment`. Returns 0 when it cannot tell (the full scan decides then).
 */
function dataRunByProbes(words: Int32Array, first: number, n: number, sectorNum: number, min: number, alignment: number): number {
  if (min <= 1) return 0;
  const end = first + n;
  const step = min * WORDS_PER_SECTOR;
  let s = first;
  let w = first * WORDS_PER_SECTOR;
  // Four probes per turn with one load each: this loop runs before V8 optimizes it, often
  // for most of a conversion, and random data almost never has a zero first word.
  for (; s + 3 * min < end; s += 4 * min, w += 4 * step) {
    if (words[w] !== 0 && words[w + step] !== 0 && words[w + 2 * step] !== 0 && words[w + 3 * step] !== 0) continue;
    for (let k = 0; k < 4; k++) if (probeIsZero(words, s + k * min)) return 0;
  }
  for (; s < end; s += min) if (probeIsZero(words, s)) return 0;
  // The zero tail is shorter than min (or a probe would have found it).
  let dataEnd = end;
  while (sectorIsZero(words, dataEnd - 1)) dataEnd--;
  if (dataEnd === end) return n;
  const used = dataEnd - first;
  const aligned = Math.ceil((sectorNum + used) / alignment) * alignment - sectorNum;
  return Math.min(aligned, n);
}

/** {@link sectorIsZero}, with its first and last word checked first. */
function probeIsZero(words: Int32Array, sector: number): boolean {
  const w = sector * WORDS_PER_SECTOR;
  return words[w] === 0 && words[w + WORDS_PER_SECTOR - 1] === 0 && sectorIsZero(words, sector);
}

/**
 * qemu's find_nonzero: byte index of the first sector of `bytes[0, length)` holding a
 * non-zero byte, or -1. A partial last sector counts as a sector.
 */
export function findNonzeroSector(bytes: Uint8Array, length: number): number {
  for (let i = 0; i < length; i += SECTOR) {
    if (!rangeIsZero(bytes, i, Math.min(i + SECTOR, length))) return i;
  }
  return -1;
}

/**
 * The offset qemu-img compare reports for two buffers: the start of the first 512-byte
 * sector (counted from the buffer start) where they differ, or -1 when equal.
 */
export function firstDifferentSector(a: Uint8Array, b: Uint8Array, length: number): number {
  const aligned = (a.byteOffset & 3) === 0 && (b.byteOffset & 3) === 0;
  if (aligned) {
    const wa = new Int32Array(a.buffer, a.byteOffset, length >>> 2);
    const wb = new Int32Array(b.buffer, b.byteOffset, length >>> 2);
    const words = wa.length;
    let w = 0;
    for (; w + 4 <= words; w += 4) {
      if (wa[w] !== wb[w] || wa[w + 1] !== wb[w + 1] || wa[w + 2] !== wb[w + 2] || wa[w + 3] !== wb[w + 3]) break;
    }
    for (; w < words; w++) if (wa[w] !== wb[w]) break;
    if (w < words) return Math.floor((w << 2) / SECTOR) * SECTOR;
    for (let i = words << 2; i < length; i++) if (a[i] !== b[i]) return Math.floor(i / SECTOR) * SECTOR;
    return -1;
  }
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return Math.floor(i / SECTOR) * SECTOR;
  return -1;
}
