/**
 * qcow2 feature bit words. Bits above 31 matter (iotest 036 sets bits 61-63), so a word is
 * kept as two u32 halves rather than one lossy number.
 */
export interface FeatureWord {
  hi: number;
  lo: number;
}

export const INCOMPAT_DIRTY = 0;
export const INCOMPAT_CORRUPT = 1;
export const INCOMPAT_DATA_FILE = 2;
export const INCOMPAT_COMPRESSION = 3;
export const INCOMPAT_EXTL2 = 4;
/** Incompatible bits this implementation understands. */
export const KNOWN_INCOMPAT: FeatureWord = { hi: 0, lo: 0b11111 };

export const COMPAT_LAZY_REFCOUNTS = 0;
export const KNOWN_COMPAT: FeatureWord = { hi: 0, lo: 0b1 };

export const AUTOCLEAR_BITMAPS = 0;
export const AUTOCLEAR_DATA_FILE_RAW = 1;
export const KNOWN_AUTOCLEAR: FeatureWord = { hi: 0, lo: 0b11 };

/** Feature table entry types (feature name table extension). */
export type FeatureKind = 'incompatible' | 'compatible' | 'autoclear';

export const EMPTY_FEATURES: FeatureWord = Object.freeze({ hi: 0, lo: 0 });

export function hasBit(word: FeatureWord, bit: number): boolean {
  return bit < 32 ? ((word.lo >>> bit) & 1) === 1 : ((word.hi >>> (bit - 32)) & 1) === 1;
}

export function withBit(word: FeatureWord, bit: number, on: boolean): FeatureWord {
  const mask = (1 << (bit & 31)) >>> 0;
  if (bit < 32) return { hi: word.hi, lo: (on ? word.lo | mask : word.lo & ~mask) >>> 0 };
  return { hi: (on ? word.hi | mask : word.hi & ~mask) >>> 0, lo: word.lo };
}

/** Bits set in `word` but not in `known`. */
export function unknownBits(word: FeatureWord, known: FeatureWord): FeatureWord {
  return { hi: (word.hi & ~known.hi) >>> 0, lo: (word.lo & ~known.lo) >>> 0 };
}

export function isEmpty(word: FeatureWord): boolean {
  return word.hi === 0 && word.lo === 0;
}

/** Indexes of the set bits, ascending. */
export function setBits(word: FeatureWord): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64; b++) if (hasBit(word, b)) out.push(b);
  return out;
}

/** Hex like QEMU prints a feature mask: `0x8000000000000000`. */
export function featureHex(word: FeatureWord): string {
  if (word.hi === 0) return '0x' + word.lo.toString(16);
  return '0x' + word.hi.toString(16) + word.lo.toString(16).padStart(8, '0');
}
