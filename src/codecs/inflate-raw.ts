/**
 * A small raw-DEFLATE (RFC 1951) decoder in plain JavaScript, shaped for qcow2 clusters:
 * it decodes into a fixed-size buffer and stops as soon as that buffer is full, like
 * QEMU's `inflate(Z_FINISH)` on a cluster-sized buffer. Bytes after the stream (sector
 * rounding) are never looked at; a stream cut after the last needed byte still succeeds.
 * The output buffer is the window, so distances up to 32 KiB back into it are accepted.
 */
import { Qcow2Error } from '../errors.js';

/** Root bits of the first-level lookup tables; longer codes go through a second level. */
const LIT_ROOT = 10;
const DIST_ROOT = 8;
const CL_ROOT = 7;
/**
 * Table capacity (root plus second-level tables). Complete codes need far less (zlib's
 * ENOUGH bounds are in the low thousands at most); a code that would not fit fails.
 */
const LIT_TABLE_SIZE = 1 << 12;
const DIST_TABLE_SIZE = 1 << 10;

const LENGTH_BASE = Uint16Array.of(3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
  115, 131, 163, 195, 227, 258);
const LENGTH_EXTRA = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0);
const DIST_BASE = Uint16Array.of(1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
  1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577);
const DIST_EXTRA = Uint8Array.of(0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
  13, 13);
/** Order in which code-length code lengths are stored (RFC 1951 3.2.7). */
const CL_ORDER = Uint8Array.of(16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15);

/*
 * Table entries (Int32): 0 = no code here (invalid input);
 * leaf  = symbol << 5 | codeLength          (codeLength 1..15, bit 4 clear)
 * link  = subtableOffset << 5 | 16 | subBits (second-level table indexed by the next subBits)
 */

function fail(message: string, context: Record<string, unknown> = {}): Qcow2Error {
  return new Qcow2Error('DECOMPRESS', `deflate: ${message}`, context);
}

const lengthCount = new Uint16Array(16);
const nextCode = new Uint16Array(16);
const subBitsFor = new Uint8Array(1 << LIT_ROOT);

function reverseBits(code: number, length: number): number {
  let r = 0;
  for (let i = 0; i < length; i++) {
    r = (r << 1) | (code & 1);
    code >>>= 1;
  }
  return r;
}

/**
 * Build a canonical Huffman lookup table from code lengths. Over-subscribed lengths are
 * rejected; incomplete codes leave 0 entries that fail when hit (zlib accepts only one
 * such case, a single distance code, and that is what incomplete codes are for).
 */
function buildTable(lengths: Uint8Array, count: number, root: number, table: Int32Array): void {
  lengthCount.fill(0);
  for (let s = 0; s < count; s++) lengthCount[lengths[s] ?? 0]!++;
  lengthCount[0] = 0;
  let left = 1;
  for (let len = 1; len <= 15; len++) {
    left = (left << 1) - (lengthCount[len] ?? 0);
    if (left < 0) throw fail('over-subscribed Huffman code');
  }
  // Canonical codes: nextCode[len] = first code of that length (RFC 1951 3.2.2).
  let code = 0;
  for (let len = 1; len <= 15; len++) {
    code = (code + (lengthCount[len - 1] ?? 0)) << 1;
    nextCode[len] = code;
  }

  const rootSize = 1 << root;
  const rootMask = rootSize - 1;
  table.fill(0, 0, rootSize);
  // First pass: the widest second-level table each root prefix needs.
  subBitsFor.fill(0, 0, rootSize);
  const firstCode = nextCode.slice();
  for (let s = 0; s < count; s++) {
    const len = lengths[s] ?? 0;
    if (len <= root) continue;
    const rev = reverseBits(firstCode[len]!++, len);
    const prefix = rev & rootMask;
    if (len - root > subBitsFor[prefix]!) subBitsFor[prefix] = len - root;
  }
  let used = rootSize;
  for (let p = 0; p < rootSize; p++) {
    const bits = subBitsFor[p]!;
    if (bits === 0) continue;
    const size = 1 << bits;
    if (used + size > table.length) throw fail('Huffman table too large');
    table[p] = (used << 5) | 16 | bits;
    table.fill(0, used, used + size);
    used += size;
  }
  // Second pass: fill leaves.
  for (let s = 0; s < count; s++) {
    const len = lengths[s] ?? 0;
    if (len === 0) continue;
    const rev = reverseBits(nextCode[len]!++, len);
    const leaf = (s << 5) | len;
    if (len <= root) {
      for (let i = rev; i < rootSize; i += 1 << len) table[i] = leaf;
    } else {
      const link = table[rev & rootMask]!;
      const base = link >>> 5;
      const bits = link & 15;
      const step = 1 << (len - root);
      for (let i = rev >>> root; i < 1 << bits; i += step) table[base + i] = leaf;
    }
  }
}

let fixedLit: Int32Array | undefined;
let fixedDist: Int32Array | undefined;

function fixedTables(): [Int32Array, Int32Array] {
  if (!fixedLit || !fixedDist) {
    const lengths = new Uint8Array(288);
    lengths.fill(8, 0, 144);
    lengths.fill(9, 144, 256);
    lengths.fill(7, 256, 280);
    lengths.fill(8, 280, 288);
    const lit = new Int32Array(LIT_TABLE_SIZE);
    buildTable(lengths, 288, LIT_ROOT, lit);
    const dist = new Int32Array(DIST_TABLE_SIZE);
    // 32 codes: symbols 30 and 31 exist in the fixed code but are invalid in data.
    buildTable(new Uint8Array(32).fill(5), 32, DIST_ROOT, dist);
    fixedLit = lit;
    fixedDist = dist;
  }
  return [fixedLit, fixedDist];
}

const dynLit = new Int32Array(LIT_TABLE_SIZE);
const dynDist = new Int32Array(DIST_TABLE_SIZE);
const clTable = new Int32Array(1 << CL_ROOT);
const codeLengths = new Uint8Array(288 + 32);
const clLengths = new Uint8Array(19);

/**
 * Decode a raw DEFLATE stream from `src` until `dst` is full.
 * Throws Qcow2Error('DECOMPRESS') when the stream is invalid, ends (final block or end of
 * input) before `dst` is full, or refers back before the start of the output.
 *
 * @example
 * ```ts
 * const cluster = new Uint8Array(65536);
 * inflateRawInto(sectorRoundedBytes, cluster);
 * ```
 */
export function inflateRawInto(src: Uint8Array, dst: Uint8Array): void {
  const srcLen = src.byteLength;
  const dstLen = dst.byteLength;
  let pos = 0; // next input byte to load (may run past srcLen: zeros are loaded, then caught)
  let bitBuf = 0;
  let bitCnt = 0;
  let out = 0;

  // Reading past the input loads zero bytes; any symbol that used them fails here.
  const checkOverrun = (): void => {
    if (pos > srcLen && pos * 8 - bitCnt > srcLen * 8) {
      throw fail('input ended before the cluster was full', { produced: out, expected: dstLen });
    }
  };

  while (out < dstLen) {
    while (bitCnt < 3) { bitBuf |= (src[pos++] ?? 0) << bitCnt; bitCnt += 8; }
    const final = bitBuf & 1;
    const type = (bitBuf >>> 1) & 3;
    bitBuf >>>= 3; bitCnt -= 3;
    checkOverrun();

    if (type === 0) {
      // Stored block: skip to a byte boundary, then LEN and NLEN.
      const dropped = bitCnt & 7;
      bitBuf >>>= dropped; bitCnt -= dropped;
      let at = pos - (bitCnt >>> 3);
      bitBuf = 0; bitCnt = 0;
      if (at + 4 > srcLen) throw fail('input ended in a stored block header', { produced: out, expected: dstLen });
      const len = (src[at] ?? 0) | ((src[at + 1] ?? 0) << 8);
      const nlen = (src[at + 2] ?? 0) | ((src[at + 3] ?? 0) << 8);
      if ((len ^ 0xffff) !== nlen) throw fail('stored block length check failed', { inputOffset: at });
      at += 4;
      const take = Math.min(len, dstLen - out, srcLen - at);
      dst.set(src.subarray(at, at + take), out);
      out += take;
      at += take;
      pos = at;
      if (out >= dstLen) return;
      if (take < len) throw fail('input ended in a stored block', { produced: out, expected: dstLen });
    } else if (type === 3) {
      throw fail('reserved block type');
    } else {
      let lit: Int32Array;
      let dist: Int32Array;
      if (type === 1) {
        [lit, dist] = fixedTables();
      } else {
        while (bitCnt < 14) { bitBuf |= (src[pos++] ?? 0) << bitCnt; bitCnt += 8; }
        const hlit = (bitBuf & 31) + 257;
        const hdist = ((bitBuf >>> 5) & 31) + 1;
        const hclen = ((bitBuf >>> 10) & 15) + 4;
        bitBuf >>>= 14; bitCnt -= 14;
        if (hlit > 286 || hdist > 30) throw fail('too many length or distance codes');
        clLengths.fill(0);
        for (let i = 0; i < hclen; i++) {
          while (bitCnt < 3) { bitBuf |= (src[pos++] ?? 0) << bitCnt; bitCnt += 8; }
          clLengths[CL_ORDER[i]!] = bitBuf & 7;
          bitBuf >>>= 3; bitCnt -= 3;
        }
        checkOverrun();
        buildTable(clLengths, 19, CL_ROOT, clTable);
        const total = hlit + hdist;
        codeLengths.fill(0);
        let n = 0;
        while (n < total) {
          while (bitCnt < 16) { bitBuf |= (src[pos++] ?? 0) << bitCnt; bitCnt += 8; }
          const e = clTable[bitBuf & ((1 << CL_ROOT) - 1)]!;
          const elen = e & 15;
          if (elen === 0) throw fail('invalid code-length code');
          bitBuf >>>= elen; bitCnt -= elen;
          const sym = e >>> 5;
          if (sym < 16) {
            codeLengths[n++] = sym;
          } else {
            let repeat: number;
            let value = 0;
            if (sym === 16) {
              if (n === 0) throw fail('repeat with no previous length');
              value = codeLengths[n - 1]!;
              repeat = 3 + (bitBuf & 3); bitBuf >>>= 2; bitCnt -= 2;
            } else if (sym === 17) {
              repeat = 3 + (bitBuf & 7); bitBuf >>>= 3; bitCnt -= 3;
            } else {
              repeat = 11 + (bitBuf & 127); bitBuf >>>= 7; bitCnt -= 7;
            }
            if (n + repeat > total) throw fail('code lengths overflow');
            codeLengths.fill(value, n, n + repeat);
            n += repeat;
          }
          checkOverrun();
        }
        if (codeLengths[256] === 0) throw fail('missing end-of-block code');
        buildTable(codeLengths.subarray(0, hlit), hlit, LIT_ROOT, dynLit);
        buildTable(codeLengths.subarray(hlit, total), hdist, DIST_ROOT, dynDist);
        lit = dynLit;
        dist = dynDist;
      }

      // Huffman-coded data: the hot loop.
      for (;;) {
        while (bitCnt < 25) { bitBuf |= (src[pos++] ?? 0) << bitCnt; bitCnt += 8; }
        let e = lit[bitBuf & ((1 << LIT_ROOT) - 1)]!;
        if (e & 16) e = lit[(e >>> 5) + ((bitBuf >>> LIT_ROOT) & ((1 << (e & 15)) - 1))]!;
        const elen = e & 15;
        if (elen === 0) throw fail('invalid literal/length code');
        bitBuf >>>= elen; bitCnt -= elen;
        let sym = e >>> 5;
        if (sym < 256) {
          if (pos > srcLen) checkOverrun();
          dst[out++] = sym;
          if (out >= dstLen) return;
          continue;
        }
        if (sym === 256) { checkOverrun(); break; }
        sym -= 257;
        if (sym >= 29) throw fail('invalid length symbol');
        const lx = LENGTH_EXTRA[sym]!;
        const length = LENGTH_BASE[sym]! + (bitBuf & ((1 << lx) - 1));
        bitBuf >>>= lx; bitCnt -= lx;

        while (bitCnt < 25) { bitBuf |= (src[pos++] ?? 0) << bitCnt; bitCnt += 8; }
        let d = dist[bitBuf & ((1 << DIST_ROOT) - 1)]!;
        if (d & 16) d = dist[(d >>> 5) + ((bitBuf >>> DIST_ROOT) & ((1 << (d & 15)) - 1))]!;
        const dlen = d & 15;
        if (dlen === 0) throw fail('invalid distance code');
        bitBuf >>>= dlen; bitCnt -= dlen;
        const dsym = d >>> 5;
        if (dsym >= 30) throw fail('invalid distance symbol');
        if (bitCnt < 13) { while (bitCnt < 25) { bitBuf |= (src[pos++] ?? 0) << bitCnt; bitCnt += 8; } }
        const dx = DIST_EXTRA[dsym]!;
        const distance = DIST_BASE[dsym]! + (bitBuf & ((1 << dx) - 1));
        bitBuf >>>= dx; bitCnt -= dx;
        if (pos > srcLen) checkOverrun();
        if (distance > out) throw fail('distance too far back', { distance, produced: out });

        const end = Math.min(out + length, dstLen);
        if (distance >= length && end - out >= 16) {
          dst.copyWithin(out, out - distance, end - distance);
          out = end;
        } else {
          while (out < end) { dst[out] = dst[out - distance]!; out++; }
        }
        if (out >= dstLen) return;
      }
    }
    if (final) throw fail('stream ended before the cluster was full', { produced: out, expected: dstLen });
  }
}
