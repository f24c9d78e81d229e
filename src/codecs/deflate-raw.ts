/**
 * A small raw-DEFLATE (RFC 1951) encoder in plain JavaScript for browsers, where
 * CompressionStream('deflate-raw') uses a 32 KiB window that QEMU (which inflates with
 * a 4 KiB window, windowBits -12) cannot decode. This encoder never refers back more
 * than 4 KiB. LZ77 with hash chains and lazy matching (about zlib level 6), then per
 * block the smaller of fixed and dynamic Huffman codes.
 */

const WINDOW = 1 << 12; // QEMU's inflate window: distances must stay within 4 KiB
const MIN_MATCH = 3;
const MAX_MATCH = 258;
const HASH_BITS = 14;
const HASH_SIZE = 1 << HASH_BITS;
const MAX_CHAIN = 128;
const GOOD_LENGTH = 8;
const MAX_LAZY = 16;
const NICE_LENGTH = 128;
/** Symbols per block before the block is flushed with its own Huffman codes. */
const BLOCK_SYMBOLS = 16384;

const LENGTH_BASE = Uint16Array.of(3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
  115, 131, 163, 195, 227, 258);
const LENGTH_EXTRA = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0);
const DIST_BASE = Uint16Array.of(1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
  1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577);
const DIST_EXTRA = Uint8Array.of(0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
  13, 13);
const CL_ORDER = Uint8Array.of(16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15);

/** Symbol and fixed-code tables. */
interface SymbolTables {
  /** Length (3..258) -> length symbol index 0..28. */
  lengthSymbol: Uint8Array;
  /** Distance (1..4096) -> distance symbol. */
  distSymbol: Uint8Array;
  fixedLitLengths: Uint8Array;
  fixedLitCodes: Uint16Array;
  fixedDistLengths: Uint8Array;
  fixedDistCodes: Uint16Array;
}

// Built on the first compression: every CLI run loads this module, few compress with it
// (Node uses node:zlib).
let tables: SymbolTables | undefined;

function symbolTables(): SymbolTables {
  if (tables !== undefined) return tables;
  const lengthSymbol = new Uint8Array(MAX_MATCH + 1);
  for (let s = 0; s < 29; s++) {
    const top = s === 28 ? MAX_MATCH : LENGTH_BASE[s]! + (1 << LENGTH_EXTRA[s]!) - 1;
    for (let l = LENGTH_BASE[s]!; l <= top; l++) lengthSymbol[l] = s;
  }
  lengthSymbol[MAX_MATCH] = 28;
  const distSymbol = new Uint8Array(WINDOW + 1);
  for (let s = 0; s < 30 && DIST_BASE[s]! <= WINDOW; s++) distSymbol.fill(s, DIST_BASE[s]!, Math.min(WINDOW + 1, DIST_BASE[s]! + (1 << DIST_EXTRA[s]!)));
  const fixedLitLengths = new Uint8Array(288).fill(8, 0, 144).fill(9, 144, 256).fill(7, 256, 280).fill(8, 280, 288);
  const fixedDistLengths = new Uint8Array(30).fill(5);
  tables = {
    lengthSymbol,
    distSymbol,
    fixedLitLengths,
    fixedLitCodes: canonicalCodes(fixedLitLengths),
    fixedDistLengths,
    fixedDistCodes: canonicalCodes(fixedDistLengths),
  };
  return tables;
}

/** Reverse the low `length` bits: DEFLATE sends Huffman codes most-significant bit first. */
function reverseBits(code: number, length: number): number {
  let r = 0;
  for (let i = 0; i < length; i++) { r = (r << 1) | (code & 1); code >>>= 1; }
  return r;
}

/**
 * Huffman code lengths for `freq`, limited to `maxBits` (miniz-style Kraft repair).
 * At least two symbols get a code so that every decoder accepts the table.
 */
function codeLengths(freq: Uint32Array, count: number, maxBits: number): Uint8Array {
  const lengths = new Uint8Array(count);
  const used: number[] = [];
  for (let s = 0; s < count; s++) if (freq[s]! > 0) used.push(s);
  for (let s = 0; used.length < 2 && s < count; s++) if (freq[s] === 0) used.push(s);
  used.sort((a, b) => (freq[a]! - freq[b]!) || (a - b));
  const n = used.length;

  // Two-queue Huffman: leaves sorted by weight, internal nodes created in weight order.
  const weight = new Float64Array(2 * n);
  const parent = new Int32Array(2 * n);
  for (let i = 0; i < n; i++) weight[i] = Math.max(1, freq[used[i]!]!);
  let leaf = 0;
  let node = n;
  let made = n;
  const pick = (): number => {
    if (leaf < n && (node >= made || weight[leaf]! <= weight[node]!)) return leaf++;
    return node++;
  };
  while (made < 2 * n - 1) {
    const a = pick();
    const b = pick();
    weight[made] = weight[a]! + weight[b]!;
    parent[a] = made;
    parent[b] = made;
    made++;
  }
  const depth = new Uint8Array(2 * n);
  for (let i = 2 * n - 3; i >= 0; i--) depth[i] = depth[parent[i]!]! + 1;

  // Enforce maxBits: clamp, then repair the Kraft sum by lengthening shorter codes.
  const bitCount = new Uint32Array(Math.max(maxBits, 32) + 1);
  for (let i = 0; i < n; i++) bitCount[Math.min(depth[i]!, maxBits)]!++;
  let total = 0;
  for (let b = 1; b <= maxBits; b++) total += bitCount[b]! * 2 ** (maxBits - b);
  while (total > 2 ** maxBits) {
    bitCount[maxBits]!--;
    for (let b = maxBits - 1; b > 0; b--) {
      if (bitCount[b]! > 0) { bitCount[b]!--; bitCount[b + 1]! += 2; break; }
    }
    total--;
  }
  // Longest codes to the rarest symbols (used[] is sorted rarest first).
  let i = 0;
  for (let b = maxBits; b >= 1; b--) {
    for (let k = bitCount[b]!; k > 0; k--) lengths[used[i++]!] = b;
  }
  return lengths;
}

/** Canonical codes (already bit-reversed for LSB-first output) for `lengths`. */
function canonicalCodes(lengths: Uint8Array): Uint16Array {
  const blCount = new Uint16Array(16);
  for (const l of lengths) blCount[l]!++;
  blCount[0] = 0;
  const next = new Uint16Array(16);
  let code = 0;
  for (let b = 1; b <= 15; b++) { code = (code + blCount[b - 1]!) << 1; next[b] = code; }
  const codes = new Uint16Array(lengths.length);
  for (let s = 0; s < lengths.length; s++) {
    const l = lengths[s]!;
    if (l > 0) codes[s] = reverseBits(next[l]!++, l);
  }
  return codes;
}

/** LSB-first bit writer into a buffer sized for the worst case. */
class BitWriter {
  readonly out: Uint8Array;
  pos = 0;
  private bits = 0;
  private count = 0;
  constructor(capacity: number) { this.out = new Uint8Array(capacity); }
  write(value: number, length: number): void {
    this.bits |= value << this.count;
    this.count += length;
    while (this.count >= 8) {
      this.out[this.pos++] = this.bits & 0xff;
      this.bits >>>= 8;
      this.count -= 8;
    }
  }
  finish(): Uint8Array {
    if (this.count > 0) this.out[this.pos++] = this.bits & 0xff;
    this.bits = 0;
    this.count = 0;
    return this.out.subarray(0, this.pos);
  }
}

/**
 * Symbol buffer of one block: `lit[i]` is a literal byte (dist 0) or a match length
 * (dist > 0).
 */
interface Block {
  lit: Uint16Array;
  dist: Uint16Array;
  n: number;
}

function writeBlock(w: BitWriter, block: Block, final: boolean): void {
  const t = symbolTables();
  const litFreq = new Uint32Array(286);
  const distFreq = new Uint32Array(30);
  for (let i = 0; i < block.n; i++) {
    const d = block.dist[i]!;
    if (d === 0) litFreq[block.lit[i]!]!++;
    else { litFreq[257 + t.lengthSymbol[block.lit[i]!]!]!++; distFreq[t.distSymbol[d]!]!++; }
  }
  litFreq[256] = 1;

  const litLengths = codeLengths(litFreq, 286, 15);
  const distLengths = codeLengths(distFreq, 30, 15);
  let hlit = 286;
  while (hlit > 257 && litLengths[hlit - 1] === 0) hlit--;
  let hdist = 30;
  while (hdist > 1 && distLengths[hdist - 1] === 0) hdist--;

  // Run-length encode the code lengths (symbols 16, 17, 18).
  const all = new Uint8Array(hlit + hdist);
  all.set(litLengths.subarray(0, hlit));
  all.set(distLengths.subarray(0, hdist), hlit);
  const rleSym: number[] = [];
  const rleExtra: number[] = [];
  for (let i = 0; i < all.length;) {
    const v = all[i]!;
    let run = 1;
    while (i + run < all.length && all[i + run] === v) run++;
    i += run;
    if (v === 0) {
      while (run >= 11) { const r = Math.min(run, 138); rleSym.push(18); rleExtra.push(r - 11); run -= r; }
      if (run >= 3) { rleSym.push(17); rleExtra.push(run - 3); run = 0; }
    } else {
      rleSym.push(v); rleExtra.push(0); run--;
      while (run >= 3) { const r = Math.min(run, 6); rleSym.push(16); rleExtra.push(r - 3); run -= r; }
    }
    while (run-- > 0) { rleSym.push(v); rleExtra.push(0); }
  }
  const clFreq = new Uint32Array(19);
  for (const s of rleSym) clFreq[s]!++;
  const clLengths = codeLengths(clFreq, 19, 7);
  let hclen = 19;
  while (hclen > 4 && clLengths[CL_ORDER[hclen - 1]!] === 0) hclen--;

  // Extra bits cost the same under both codings, so only code bits are compared.
  let dynamicBits = 14 + 3 * hclen;
  for (const s of rleSym) dynamicBits += clLengths[s]! + (s === 16 ? 2 : s === 17 ? 3 : s === 18 ? 7 : 0);
  let fixedBits = 0;
  for (let s = 0; s < 286; s++) {
    dynamicBits += litFreq[s]! * litLengths[s]!;
    fixedBits += litFreq[s]! * t.fixedLitLengths[s]!;
  }
  for (let s = 0; s < 30; s++) {
    dynamicBits += distFreq[s]! * distLengths[s]!;
    fixedBits += distFreq[s]! * 5;
  }

  let litCodes: Uint16Array;
  let litLens: Uint8Array;
  let distCodes: Uint16Array;
  let distLens: Uint8Array;
  if (fixedBits <= dynamicBits) {
    w.write((final ? 1 : 0) | (1 << 1), 3);
    litCodes = t.fixedLitCodes; litLens = t.fixedLitLengths;
    distCodes = t.fixedDistCodes; distLens = t.fixedDistLengths;
  } else {
    w.write((final ? 1 : 0) | (2 << 1), 3);
    w.write(hlit - 257, 5);
    w.write(hdist - 1, 5);
    w.write(hclen - 4, 4);
    for (let i = 0; i < hclen; i++) w.write(clLengths[CL_ORDER[i]!]!, 3);
    const clCodes = canonicalCodes(clLengths);
    for (let i = 0; i < rleSym.length; i++) {
      const s = rleSym[i]!;
      w.write(clCodes[s]!, clLengths[s]!);
      if (s === 16) w.write(rleExtra[i]!, 2);
      else if (s === 17) w.write(rleExtra[i]!, 3);
      else if (s === 18) w.write(rleExtra[i]!, 7);
    }
    litCodes = canonicalCodes(litLengths); litLens = litLengths;
    distCodes = canonicalCodes(distLengths); distLens = distLengths;
  }

  for (let i = 0; i < block.n; i++) {
    const d = block.dist[i]!;
    const v = block.lit[i]!;
    if (d === 0) {
      w.write(litCodes[v]!, litLens[v]!);
    } else {
      const ls = t.lengthSymbol[v]!;
      w.write(litCodes[257 + ls]!, litLens[257 + ls]!);
      if (LENGTH_EXTRA[ls]!) w.write(v - LENGTH_BASE[ls]!, LENGTH_EXTRA[ls]!);
      const ds = t.distSymbol[d]!;
      w.write(distCodes[ds]!, distLens[ds]!);
      if (DIST_EXTRA[ds]!) w.write(d - DIST_BASE[ds]!, DIST_EXTRA[ds]!);
    }
  }
  w.write(litCodes[256]!, litLens[256]!);
}

/**
 * Compress `src` as one raw DEFLATE stream whose distances stay within 4 KiB, so QEMU
 * (inflate windowBits -12) can decode it. Returns undefined as soon as the output would
 * reach `limit` bytes.
 *
 * @example
 * ```ts
 * const stored = deflateRawWindow4k(cluster, cluster.length); // undefined: not smaller
 * ```
 */
export function deflateRawWindow4k(src: Uint8Array, limit: number): Uint8Array | undefined {
  const n = src.byteLength;
  const blocks = Math.ceil(n / BLOCK_SYMBOLS) + 1;
  const w = new BitWriter(n + (n >>> 3) + 400 * blocks + 16);
  const head = new Int32Array(HASH_SIZE).fill(-1);
  const prev = new Int32Array(WINDOW);
  const block: Block = { lit: new Uint16Array(BLOCK_SYMBOLS), dist: new Uint16Array(BLOCK_SYMBOLS), n: 0 };
  const hashAt = (p: number): number =>
    Math.imul((src[p]! << 16) | (src[p + 1]! << 8) | src[p + 2]!, 0x9e3779b1) >>> (32 - HASH_BITS);
  const insert = (p: number): number => {
    if (p + MIN_MATCH > n) return -1;
    const h = hashAt(p);
    const cand = head[h]!;
    prev[p & (WINDOW - 1)] = cand;
    head[h] = p;
    return cand;
  };
  let matchLen = 0;
  let matchDist = 0;
  const longestMatch = (p: number, cand: number, prevLength: number): void => {
    matchLen = 0;
    matchDist = 0;
    let chain = prevLength >= GOOD_LENGTH ? MAX_CHAIN >> 2 : MAX_CHAIN;
    const maxLen = Math.min(MAX_MATCH, n - p);
    if (maxLen < MIN_MATCH) return;
    let best = Math.max(prevLength, MIN_MATCH - 1);
    while (cand >= 0 && p - cand <= WINDOW && chain-- > 0) {
      if (src[cand + best] === src[p + best] && src[cand] === src[p] && src[cand + 1] === src[p + 1]) {
        let len = 2;
        while (len < maxLen && src[cand + len] === src[p + len]) len++;
        if (len > best) {
          best = len;
          matchLen = len;
          matchDist = p - cand;
          if (len >= NICE_LENGTH || len >= maxLen) break;
        }
      }
      const next = prev[cand & (WINDOW - 1)]!;
      if (next >= cand) break; // slot reused by a newer position: chain ends
      cand = next;
    }
  };
  const push = (lit: number, dist: number): boolean => {
    block.lit[block.n] = lit;
    block.dist[block.n] = dist;
    block.n++;
    if (block.n < BLOCK_SYMBOLS) return true;
    writeBlock(w, block, false);
    block.n = 0;
    return w.pos < limit;
  };

  // Lazy matching: a match found at p is kept only if p+1 does not start a longer one.
  let p = 0;
  let prevLen = 0;
  let prevDist = 0;
  let pending = false; // a literal at p-1 awaits its fate
  while (p < n) {
    const cand = insert(p);
    let curLen = 0;
    let curDist = 0;
    if (cand >= 0 && prevLen < MAX_LAZY) {
      longestMatch(p, cand, prevLen);
      curLen = matchLen;
      curDist = matchDist;
    }
    if (pending && prevLen >= MIN_MATCH && curLen <= prevLen) {
      // Emit the match that started at p-1; it covers p-1 .. p-1+prevLen-1.
      if (!push(prevLen, prevDist)) return undefined;
      const end = p - 1 + prevLen;
      for (let q = p + 1; q < end; q++) insert(q);
      p = end;
      pending = false;
      prevLen = 0;
      continue;
    }
    if (pending && !push(src[p - 1]!, 0)) return undefined;
    pending = true;
    prevLen = curLen;
    prevDist = curDist;
    p++;
  }
  if (pending && !push(src[n - 1]!, 0)) return undefined;
  writeBlock(w, block, true);
  const out = w.finish();
  return out.byteLength < limit ? out.slice() : undefined;
}
