/**
 * Structure-aware qcow2 mutator: given a valid seed image and its layout, produce a few
 * mutations aimed at what a parser trusts (header fields, feature bits, extension headers,
 * L1/L2/refcount/bitmap table entries, compressed descriptors, snapshot and bitmap directory
 * fields) plus plain random damage. Values come from "interesting" sets: boundaries, offsets
 * of other structures, the end of the file, flag bits, values just past QEMU's limits.
 *
 * @example
 * ```ts
 * const seed = makeSeed('basic', bytes);
 * const { bytes: mutated, mutations } = mutateImage(seed, new Prng(42));
 * ```
 */
import type { BytePatch, Mutation } from './mutation.js';
import { applyMutations, MAX_MUTATED_SIZE, toHex } from './mutation.js';
import type { Prng } from './prng.js';
import {
  BITMAP_DIR_FIELDS, BITMAP_EXT_FIELDS, HEADER_FIELDS, parseLayout, SNAPSHOT_FIELDS,
  type FieldSpec, type Qcow2Layout, type TableSlot,
} from './qcow2-layout.js';

/** A valid image the mutator starts from. */
export interface SeedImage {
  name: string;
  bytes: Uint8Array;
  layout: Qcow2Layout;
}

/** Parse a seed; throws when it is not qcow2 (seeds must be valid images). */
export function makeSeed(name: string, bytes: Uint8Array): SeedImage {
  const layout = parseLayout(bytes);
  if (layout === undefined) throw new Error(`seed ${name} is not a qcow2 image`);
  return { name, bytes, layout };
}

/** A 64-bit value as two u32 halves (no BigInt, exact beyond 2^53). */
interface U64 {
  hi: number;
  lo: number;
}

const TWO32 = 0x1_0000_0000;
const KNOWN_EXT_TYPES = [0x00000000, 0xe2792aca, 0x6803f857, 0x23852875, 0x0537be77, 0x44415441];

function num(n: number): U64 {
  const v = Math.max(0, Math.floor(n));
  return { hi: Math.floor(v / TWO32) >>> 0, lo: v >>> 0 };
}

function encode(width: number, v: U64): Uint8Array {
  const out = new Uint8Array(width);
  const dv = new DataView(out.buffer);
  if (width === 8) {
    dv.setUint32(0, v.hi >>> 0);
    dv.setUint32(4, v.lo >>> 0);
  } else if (width === 4) dv.setUint32(0, v.lo >>> 0);
  else if (width === 2) dv.setUint16(0, v.lo & 0xffff);
  else out[0] = v.lo & 0xff;
  return out;
}

function read(bytes: Uint8Array, at: number, width: number): U64 {
  if (at < 0 || at + width > bytes.byteLength) return { hi: 0, lo: 0 };
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (width === 8) return { hi: dv.getUint32(at), lo: dv.getUint32(at + 4) };
  if (width === 4) return { hi: 0, lo: dv.getUint32(at) };
  if (width === 2) return { hi: 0, lo: dv.getUint16(at) };
  return { hi: 0, lo: bytes[at] ?? 0 };
}

function asNumber(v: U64): number {
  return v.hi * TWO32 + v.lo;
}

function patch(at: number, bytes: Uint8Array): BytePatch {
  return { at, hex: toHex(bytes) };
}

function hexValue(v: U64, width: number): string {
  return width === 8 ? `0x${v.hi.toString(16)}${v.lo.toString(16).padStart(8, '0')}` : `0x${v.lo.toString(16)}`;
}

/** What the mutator may choose as a value: boundaries and offsets that mean something here. */
function interestingValue(rng: Prng, width: number, old: U64, layout: Qcow2Layout): U64 {
  const cs = layout.clusterSize;
  const maxW = width === 8 ? { hi: 0xffffffff, lo: 0xffffffff } : { hi: 0, lo: width === 4 ? 0xffffffff : width === 2 ? 0xffff : 0xff };
  const oldN = asNumber(old);
  const choice = rng.int(22);
  switch (choice) {
    case 0: return { hi: 0, lo: 0 };
    case 1: return { hi: 0, lo: 1 };
    case 2: return maxW;
    case 3: return width === 8 ? { hi: 0x80000000, lo: 0 } : { hi: 0, lo: width === 4 ? 0x80000000 : width === 2 ? 0x8000 : 0x80 };
    case 4: return width === 8 ? { hi: 0x7fffffff, lo: 0xffffffff } : { hi: 0, lo: width === 4 ? 0x7fffffff : width === 2 ? 0x7fff : 0x7f };
    case 5: return num(oldN + rng.pick([1, -1, 2, -2, 7, 8, -8, 512]));
    case 6: return num(oldN + cs * rng.pick([1, -1, 2, 16]));
    case 7: return num(oldN * 2);
    case 8: return num(Math.floor(oldN / 2));
    case 9: return num(layout.fileSize + rng.pick([0, 1, -1, cs, -cs, 512]));
    case 10: return num(Math.ceil(layout.fileSize / cs) * cs);
    case 11: return num(rng.pick(layout.metadataClusters));
    case 12: return num(2 ** rng.int(width * 8 > 53 ? 54 : width * 8));
    case 13: return width === 8 ? { hi: 0x001fffff, lo: 0xffffffff } : maxW;
    case 14: return width === 8 ? { hi: 0x00200000, lo: 0 } : maxW;
    case 15: return width === 8 ? { hi: 0x00ffffff, lo: 0xfffffe00 } : maxW;
    case 16: return num(rng.int(64));
    case 17: return num(rng.int(cs * 4));
    case 18: return num(layout.dataClusters.length > 0 ? rng.pick(layout.dataClusters) : 0);
    case 19: return { hi: width === 8 ? old.hi ^ (1 << rng.int(32)) : 0, lo: width === 8 ? old.lo : (old.lo ^ (1 << rng.int(width * 8))) >>> 0 };
    case 20: return { hi: width === 8 ? old.hi : 0, lo: (old.lo ^ (1 << rng.int(Math.min(32, width * 8)))) >>> 0 };
    default: return width === 8 ? { hi: rng.u32(), lo: rng.u32() } : { hi: 0, lo: rng.u32() & maxW.lo };
  }
}

function fieldMutation(kind: string, base: number, field: FieldSpec, rng: Prng, seed: SeedImage, label: string): Mutation {
  const at = base + field.offset;
  const old = read(seed.bytes, at, field.width);
  const value = interestingValue(rng, field.width, old, seed.layout);
  return { kind, what: `${label}${field.name} = ${hexValue(value, field.width)}`, patches: [patch(at, encode(field.width, value))] };
}

function headerField(seed: SeedImage, rng: Prng): Mutation {
  const fields = seed.layout.version >= 3 ? HEADER_FIELDS : HEADER_FIELDS.filter((f) => f.offset < 72);
  const field = rng.pick(fields.filter((f) => f.name !== 'magic' || rng.chance(0.05)));
  // Field-specific values QEMU checks precisely, mixed with the generic ones.
  const special: Record<string, number[]> = {
    version: [1, 2, 3, 4],
    cluster_bits: [8, 9, 12, 16, 20, 21, 22, 31, 32, 63, 64],
    refcount_order: [0, 3, 4, 5, 6, 7, 31, 64],
    header_length: [0, 72, 103, 104, 105, 112, 113, 120, seed.layout.clusterSize, seed.layout.clusterSize + 8],
    crypt_method: [1, 2, 3],
    compression_type: [0, 1, 2, 255],
    nb_snapshots: [1, 2, 65535, 65536, 65537],
    refcount_table_clusters: [0, 1, 2, 256, 257, 0xffffff],
    backing_file_size: [0, 1, 1023, 1024, 0xffff],
    l1_size: [0, 1, 0x3fffff, 0x400000, 0x400001, 0x10000000],
  };
  const values = special[field.name];
  if (values !== undefined && rng.chance(0.5)) {
    const v = rng.pick(values);
    return { kind: 'header-field', what: `${field.name} = ${v}`, patches: [patch(field.offset, encode(field.width, num(v)))] };
  }
  return fieldMutation('header-field', 0, field, rng, seed, '');
}

function featureBit(seed: SeedImage, rng: Prng): Mutation {
  const word = rng.pick([72, 80, 88]);
  // Known bits most of the time; sometimes an unknown one (including the top bits, iotest 036).
  const bit = rng.chance(0.6) ? rng.int(5) : rng.pick([5, 6, 7, 12, 31, 32, 40, 61, 62, 63]);
  const at = word + (bit < 32 ? 4 : 0);
  const old = read(seed.bytes, at, 4).lo;
  const value = (old ^ (1 << (bit & 31))) >>> 0;
  const name = word === 72 ? 'incompatible' : word === 80 ? 'compatible' : 'autoclear';
  return { kind: 'feature-bit', what: `${name} bit ${bit} flipped`, patches: [patch(at, encode(4, num(value)))] };
}

function extensionMutation(seed: SeedImage, rng: Prng): Mutation {
  const { extensions, extensionEnd, clusterSize } = seed.layout;
  const op = extensions.length === 0 ? 'insert' : rng.pick(['length', 'length', 'type', 'insert', 'payload', 'end']);
  if (op === 'insert' || extensions.length === 0) {
    const type = rng.chance(0.8) ? rng.pick(KNOWN_EXT_TYPES.slice(1)) : rng.u32();
    let data: Uint8Array;
    switch (type) {
      case 0x44415441: data = new TextEncoder().encode(rng.pick(['data.raw', '/etc/passwd', '', 'x'.repeat(300)])); break;
      case 0xe2792aca: data = new TextEncoder().encode(rng.pick(['raw', 'qcow2', 'vmdk', 'x'.repeat(15), 'x'.repeat(16)])); break;
      case 0x23852875: data = rng.bytes(24); break;
      case 0x0537be77: data = rng.bytes(16); break;
      default: data = rng.bytes(rng.pick([0, 1, 8, 48, 96, 100]));
    }
    const declared = rng.chance(0.8) ? data.byteLength : interestingValue(rng, 4, num(data.byteLength), seed.layout).lo;
    const padded = Math.ceil(data.byteLength / 8) * 8;
    const rec = new Uint8Array(8 + padded + 8);
    const dv = new DataView(rec.buffer);
    dv.setUint32(0, type);
    dv.setUint32(4, declared);
    rec.set(data, 8);
    // The end marker follows (zeros).
    const at = Math.min(extensionEnd, Math.max(0, clusterSize - rec.byteLength));
    return { kind: 'ext-insert', what: `insert extension 0x${type.toString(16)} declared length ${declared}`, patches: [patch(at, rec)] };
  }
  const ext = rng.pick(extensions);
  switch (op) {
    case 'length': {
      const v = rng.chance(0.5)
        ? rng.pick([0, 1, ext.length - 1, ext.length + 1, ext.length + 8, clusterSize, clusterSize - ext.offset - 8, clusterSize - ext.offset - 7, 0xffffffff, 0x80000000])
        : interestingValue(rng, 4, num(ext.length), seed.layout).lo;
      return { kind: 'ext-length', what: `extension 0x${ext.type.toString(16)} length ${ext.length} -> ${v >>> 0}`, patches: [patch(ext.offset + 4, encode(4, num(v >>> 0)))] };
    }
    case 'type': {
      const t = rng.chance(0.8) ? rng.pick(KNOWN_EXT_TYPES) : rng.u32();
      return { kind: 'ext-type', what: `extension 0x${ext.type.toString(16)} type -> 0x${t.toString(16)}`, patches: [patch(ext.offset, encode(4, num(t)))] };
    }
    case 'payload': {
      const len = Math.max(1, Math.min(ext.length, 64));
      const at = ext.offset + 8 + rng.int(len);
      return { kind: 'ext-payload', what: `extension 0x${ext.type.toString(16)} payload bytes`, patches: [patch(at, rng.bytes(rng.range(1, 8)))] };
    }
    default: {
      // Remove the end marker: the walk then runs into whatever follows.
      return { kind: 'ext-end', what: 'end marker overwritten', patches: [patch(extensionEnd, rng.bytes(8))] };
    }
  }
}

function backingName(seed: SeedImage, rng: Prng): Mutation {
  const cs = seed.layout.clusterSize;
  const name = new TextEncoder().encode(rng.pick(['base.qcow2', '/etc/passwd', 'json:{"file":{"driver":"file","filename":"/etc/shadow"}}', 'nbd://127.0.0.1/x', '']));
  const bad = rng.chance(0.3) ? new Uint8Array([0xff, 0xfe, 0x00, 0xc3]) : name;
  const at = rng.chance(0.7) ? Math.max(seed.layout.extensionEnd + 8, cs - 1024) : rng.pick([0, 8, 72, seed.layout.headerLength, cs - 1, cs]);
  const size = rng.chance(0.7) ? bad.byteLength : rng.pick([0, 1, 1023, 1024, 4096, 0xffffffff, cs]);
  const patches = [patch(8, encode(8, num(at))), patch(16, encode(4, num(size >>> 0)))];
  if (at + bad.byteLength <= cs) patches.push(patch(at, bad));
  return { kind: 'backing-name', what: `backing name at ${at} size ${size >>> 0}`, patches };
}

function pickTable(seed: SeedImage, rng: Prng, kinds: readonly TableSlot['kind'][]): TableSlot | undefined {
  const tables = seed.layout.tables.filter((t) => kinds.includes(t.kind));
  return tables.length === 0 ? undefined : rng.pick(tables);
}

/** An entry index, preferring non-zero entries (they point somewhere worth redirecting). */
function pickEntry(seed: SeedImage, table: TableSlot, rng: Prng): number {
  for (let tries = 0; tries < 8; tries++) {
    const i = rng.int(table.entries);
    const e = read(seed.bytes, table.offset + i * table.entrySize, 8);
    if (e.hi !== 0 || e.lo !== 0) return i;
  }
  return rng.int(table.entries);
}

function tableEntry(seed: SeedImage, rng: Prng, kinds: readonly TableSlot['kind'][], kind: string): Mutation | undefined {
  const table = pickTable(seed, rng, kinds);
  if (table === undefined) return undefined;
  const i = pickEntry(seed, table, rng);
  const at = table.offset + i * table.entrySize;
  const old = read(seed.bytes, at, 8);
  const cs = seed.layout.clusterSize;
  const flagsHi = old.hi & 0xff000000;
  const withOffset = (off: number, keepFlags = true): U64 => {
    const v = num(off);
    return { hi: ((keepFlags ? flagsHi : 0) | (v.hi & 0x00ffffff)) >>> 0, lo: v.lo >>> 0 };
  };
  let value: U64;
  let what: string;
  const op = rng.int(14);
  switch (op) {
    case 0: value = { hi: 0, lo: 0 }; what = 'zeroed'; break;
    case 1: value = withOffset(rng.pick(seed.layout.metadataClusters)); what = 'points at metadata'; break;
    case 2: value = withOffset(seed.layout.dataClusters.length > 0 ? rng.pick(seed.layout.dataClusters) : cs); what = 'points at a data cluster'; break;
    case 3: value = withOffset(Math.ceil(seed.layout.fileSize / cs) * cs + cs * rng.int(4)); what = 'points past EOF'; break;
    case 4: value = withOffset(cs * 2 ** rng.range(20, 40)); what = 'points far away'; break;
    case 5: value = { hi: old.hi, lo: (old.lo + rng.pick([1, 8, 256, 512])) >>> 0 }; what = 'unaligned'; break;
    case 6: value = { hi: (old.hi ^ 0x80000000) >>> 0, lo: old.lo }; what = 'COPIED flipped'; break;
    case 7: value = { hi: (old.hi ^ 0x40000000) >>> 0, lo: old.lo }; what = 'compressed bit flipped'; break;
    case 8: value = { hi: old.hi, lo: (old.lo ^ 1) >>> 0 }; what = 'bit 0 (zero/all-ones) flipped'; break;
    case 9: value = { hi: (old.hi ^ (1 << rng.range(24, 29))) >>> 0, lo: (old.lo ^ (rng.chance(0.5) ? 1 << rng.range(1, 8) : 0)) >>> 0 }; what = 'reserved bits'; break;
    case 10: value = read(seed.bytes, table.offset + rng.int(table.entries) * table.entrySize, 8); what = 'copy of another entry'; break;
    case 11: value = { hi: (flagsHi | 0x00ffffff) >>> 0, lo: 0xfffffe00 }; what = 'maximum offset'; break;
    case 12: value = withOffset(table.offset); what = 'points at its own table'; break;
    default: value = interestingValue(rng, 8, old, seed.layout); what = 'interesting value'; break;
  }
  const patches = [patch(at, encode(8, value))];
  if (table.entrySize === 16 && rng.chance(0.4)) {
    // Extended L2 subcluster bitmap: zero bits (high word) and alloc bits (low word).
    const bm = rng.pick([{ hi: 0xffffffff, lo: 0xffffffff }, { hi: 0, lo: 0xffffffff }, { hi: 0xffffffff, lo: 0 }, { hi: rng.u32(), lo: rng.u32() }, { hi: 0, lo: 0 }]);
    patches.push(patch(at + 8, encode(8, bm)));
    what += ', subcluster bitmap changed';
  }
  return { kind, what: `${table.kind}@${table.offset}[${i}] ${what}`, patches };
}

function refcountValue(seed: SeedImage, rng: Prng): Mutation | undefined {
  const table = pickTable(seed, rng, ['refblock']);
  if (table === undefined) return undefined;
  const order = Math.min(seed.layout.refcountOrder, 6);
  const bits = 2 ** order;
  const perBlock = (seed.layout.clusterSize * 8) / bits;
  const i = rng.int(Math.min(perBlock, Math.max(1, Math.ceil(seed.layout.fileSize / seed.layout.clusterSize) + 4)));
  const value = rng.pick([0, 1, 2, 3, 0xff, 0xffff, 0xffffffff]);
  if (bits >= 8) {
    const width = bits / 8;
    const at = table.offset + i * width;
    const v = width === 8 ? { hi: rng.chance(0.5) ? 0xffffffff : 0, lo: value >>> 0 } : num(value % 2 ** bits);
    return { kind: 'refcount', what: `refblock@${table.offset} refcount[${i}] = ${hexValue(v, width)}`, patches: [patch(at, encode(width, v))] };
  }
  const bitIndex = i * bits;
  const at = table.offset + Math.floor(bitIndex / 8);
  const old = seed.bytes[at] ?? 0;
  const shift = bitIndex % 8;
  const mask = ((1 << bits) - 1) << shift;
  const nv = ((old & ~mask) | ((value << shift) & mask)) & 0xff;
  return { kind: 'refcount', what: `refblock@${table.offset} refcount[${i}] (${bits}-bit) = ${value & ((1 << bits) - 1)}`, patches: [patch(at, new Uint8Array([nv]))] };
}

function compressedMutation(seed: SeedImage, rng: Prng): Mutation | undefined {
  const list = seed.layout.compressed;
  if (list.length === 0) return undefined;
  const c = rng.pick(list);
  const bits = seed.layout.clusterBits;
  const shiftHi = 62 - (bits - 8) - 32;
  const old = read(seed.bytes, c.entryOffset, 8);
  const sectorMask = (1 << (bits - 8)) - 1;
  const op = rng.int(8);
  if (op === 0) {
    const sectors = rng.pick([0, 1, 2, sectorMask, rng.int(sectorMask + 1)]);
    const hi = ((old.hi & ~(sectorMask << shiftHi)) | ((sectors & sectorMask) << shiftHi)) >>> 0;
    return { kind: 'compressed', what: `descriptor @${c.entryOffset}: extra sectors = ${sectors}`, patches: [patch(c.entryOffset, encode(8, { hi, lo: old.lo }))] };
  }
  if (op === 1 || op === 2) {
    const target = op === 1
      ? c.hostOffset + rng.pick([1, -1, 512, -512, 7])
      : rng.pick([seed.layout.fileSize - 10, seed.layout.fileSize + 512, rng.pick(seed.layout.metadataClusters), 0, 2 ** (shiftHi + 32) - 512]);
    const t = num(Math.max(0, target));
    const hi = ((old.hi & ~((1 << shiftHi) - 1)) | (t.hi & ((1 << shiftHi) - 1))) >>> 0;
    return { kind: 'compressed', what: `descriptor @${c.entryOffset}: host offset -> ${Math.max(0, target)}`, patches: [patch(c.entryOffset, encode(8, { hi, lo: t.lo }))] };
  }
  if (op === 3) {
    // Damage the compressed stream itself.
    const n = rng.range(1, 16);
    const patches: BytePatch[] = [];
    for (let k = 0; k < n; k++) patches.push(patch(c.hostOffset + rng.int(Math.max(1, c.length)), rng.bytes(1)));
    return { kind: 'compressed-data', what: `stream @${c.hostOffset}: ${n} bytes changed`, patches };
  }
  if (op === 4) {
    return { kind: 'compressed-data', what: `stream @${c.hostOffset}: zeroed`, patches: [patch(c.hostOffset, new Uint8Array(Math.min(c.length, 4096)))] };
  }
  if (op === 5) {
    return { kind: 'compressed-data', what: `file truncated inside stream @${c.hostOffset}`, patches: [], resize: c.hostOffset + rng.int(Math.max(1, c.length)) };
  }
  if (op === 6) {
    return { kind: 'compressed', what: `descriptor @${c.entryOffset}: COPIED set`, patches: [patch(c.entryOffset, encode(8, { hi: (old.hi | 0x80000000) >>> 0, lo: old.lo }))] };
  }
  // Another compressed cluster's descriptor, or a descriptor in an uncompressed slot.
  const other = rng.pick(list);
  return { kind: 'compressed', what: `descriptor @${c.entryOffset} := descriptor @${other.entryOffset}`, patches: [patch(c.entryOffset, encode(8, read(seed.bytes, other.entryOffset, 8)))] };
}

function snapshotMutation(seed: SeedImage, rng: Prng): Mutation | undefined {
  const list = seed.layout.snapshots;
  if (list.length === 0) return undefined;
  const base = rng.pick(list);
  if (rng.chance(0.15)) {
    // Garbage in the id/name area (invalid UTF-8, NULs).
    return { kind: 'snapshot-field', what: `snapshot @${base}: id/name bytes`, patches: [patch(base + 40 + rng.int(40), rng.bytes(rng.range(1, 6)))] };
  }
  const field = rng.pick(SNAPSHOT_FIELDS);
  if (rng.chance(0.4)) {
    const special: Record<string, number[]> = {
      extra_data_size: [0, 8, 15, 16, 24, 1024, 1025, 0xffffffff],
      id_str_size: [0, 1, 0xffff],
      name_size: [0, 1, 0xffff],
      l1_size: [0, 1, 0x400000, 0x400001, 0xffffffff],
    };
    const vals = special[field.name];
    if (vals !== undefined) {
      const v = rng.pick(vals);
      return { kind: 'snapshot-field', what: `snapshot @${base}: ${field.name} = ${v}`, patches: [patch(base + field.offset, encode(field.width, num(v)))] };
    }
  }
  return fieldMutation('snapshot-field', base, field, rng, seed, `snapshot @${base}: `);
}

function bitmapMutation(seed: SeedImage, rng: Prng): Mutation | undefined {
  const { bitmapExt, bitmapEntries } = seed.layout;
  if (bitmapExt === undefined) return undefined;
  if (bitmapEntries.length === 0 || rng.chance(0.35)) {
    return fieldMutation('bitmap-ext', bitmapExt, rng.pick(BITMAP_EXT_FIELDS), rng, seed, 'bitmaps ext: ');
  }
  const base = rng.pick(bitmapEntries);
  const field = rng.pick(BITMAP_DIR_FIELDS);
  const special: Record<string, number[]> = {
    granularity_bits: [0, 8, 9, 31, 32, 63, 255],
    type: [0, 1, 2, 255],
    flags: [0, 1, 2, 3, 4, 0xffffffff],
    name_size: [0, 1, 1023, 1024, 0xffff],
    extra_data_size: [0, 1, 8, 0xffffffff],
    bitmap_table_size: [0, 1, 0x8000000, 0x8000001, 0xffffffff],
  };
  const vals = special[field.name];
  if (vals !== undefined && rng.chance(0.5)) {
    const v = rng.pick(vals);
    return { kind: 'bitmap-dir', what: `bitmap entry @${base}: ${field.name} = ${v}`, patches: [patch(base + field.offset, encode(field.width, num(v)))] };
  }
  return fieldMutation('bitmap-dir', base, field, rng, seed, `bitmap entry @${base}: `);
}

function randomDamage(seed: SeedImage, rng: Prng): Mutation {
  const { fileSize, clusterSize: cs, metadataClusters } = seed.layout;
  const op = rng.int(7);
  if (op === 0 || op === 1) {
    // Bit flips, mostly in metadata clusters (that is where parsers live).
    const n = rng.range(1, 8);
    const patches: BytePatch[] = [];
    for (let k = 0; k < n; k++) {
      const base = op === 0 ? rng.pick(metadataClusters) : 0;
      const at = Math.min(fileSize - 1, base + rng.int(op === 0 ? cs : fileSize));
      patches.push(patch(at, new Uint8Array([((seed.bytes[at] ?? 0) ^ (1 << rng.int(8))) & 0xff])));
    }
    return { kind: 'bit-flips', what: `${n} bit flips`, patches };
  }
  if (op === 2) {
    const at = rng.chance(0.5) ? rng.int(Math.min(fileSize, 512)) : rng.int(fileSize);
    const n = rng.range(1, 32);
    return { kind: 'random-bytes', what: `${n} random bytes at ${at}`, patches: [patch(at, rng.bytes(n))] };
  }
  if (op === 3) {
    // Copy one metadata cluster over another (duplicated tables, self-references).
    const from = rng.pick(metadataClusters);
    const to = rng.pick(metadataClusters);
    const len = Math.min(cs, fileSize - from);
    return { kind: 'cluster-copy', what: `cluster ${from} copied to ${to}`, patches: [patch(to, seed.bytes.slice(from, from + len))] };
  }
  if (op === 4) {
    const to = rng.chance(0.5) ? rng.pick(metadataClusters) : Math.floor(rng.int(fileSize) / cs) * cs;
    return { kind: 'cluster-fill', what: `cluster ${to} filled`, patches: [patch(to, new Uint8Array(Math.min(cs, 65536)).fill(rng.pick([0, 0xff, 0x80])))] };
  }
  if (op === 5) {
    const size = rng.pick([0, 72, 104, 512, cs, cs + 1, Math.floor(fileSize / 2), fileSize - 1, fileSize - cs]);
    return { kind: 'truncate', what: `file truncated to ${Math.max(0, size)}`, patches: [], resize: Math.max(0, size) };
  }
  const size = Math.min(MAX_MUTATED_SIZE, fileSize + rng.pick([1, 511, cs, cs * 3 + 7]));
  return { kind: 'extend', what: `file extended to ${size}`, patches: [], resize: size };
}

type Generator = (seed: SeedImage, rng: Prng) => Mutation | undefined;

const GENERATORS: readonly (readonly [Generator, number])[] = [
  [headerField, 14],
  [featureBit, 7],
  [extensionMutation, 8],
  [backingName, 2],
  [(s, r) => tableEntry(s, r, ['l1', 'snapshot-l1'], 'l1-entry'), 9],
  [(s, r) => tableEntry(s, r, ['l2'], 'l2-entry'), 14],
  [(s, r) => tableEntry(s, r, ['reftable'], 'reftable-entry'), 6],
  [(s, r) => tableEntry(s, r, ['bitmap-table'], 'bitmap-table-entry'), 3],
  [refcountValue, 8],
  [compressedMutation, 8],
  [snapshotMutation, 7],
  [bitmapMutation, 6],
  [randomDamage, 12],
];

/** One mutation for `seed` (generators that do not apply to this seed fall back to random damage). */
export function generateMutation(seed: SeedImage, rng: Prng): Mutation {
  for (let tries = 0; tries < 4; tries++) {
    const m = rng.weighted(GENERATORS)(seed, rng);
    if (m !== undefined) return m;
  }
  return randomDamage(seed, rng);
}

/**
 * Mutate a seed: 1 to 4 mutations (fewer more often), applied to a copy.
 *
 * @example
 * ```ts
 * const { bytes, mutations } = mutateImage(seed, new Prng(7));
 * ```
 */
export function mutateImage(seed: SeedImage, rng: Prng): { bytes: Uint8Array; mutations: Mutation[] } {
  const count = rng.weighted([[1, 8], [2, 4], [3, 2], [4, 1]] as const);
  const mutations: Mutation[] = [];
  for (let i = 0; i < count; i++) mutations.push(generateMutation(seed, rng));
  return { bytes: applyMutations(seed.bytes, mutations), mutations };
}
