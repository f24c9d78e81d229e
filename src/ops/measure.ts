/**
 * qemu-img measure: how large a new image would be, with QEMU 7.2's exact arithmetic
 * (qcow2_measure, qcow2_calc_prealloc_size, qcow2_refcount_metadata_size, raw_measure,
 * qcow2_get_persistent_dirty_bitmap_size). Browser-safe.
 *
 * Figures are bigints: QEMU computes in 64-bit integers and sizes go up to 2^63.
 */
import { Qcow2Error } from '../errors.js';
import type { BitmapDirectoryEntry } from '../format/qcow2/bitmap-directory.js';
import type { ImageReader } from '../image/types.js';

/** What qemu-img measure prints. */
export interface MeasureResult {
  /** "required size": bytes the new image needs for the given content. */
  required: bigint;
  /** "fully allocated size": bytes once every cluster is allocated. */
  fullyAllocated: bigint;
  /** "bitmaps size": only when both the source and the output format keep persistent bitmaps. */
  bitmaps?: bigint;
}

/** qcow2 creation options that change the figures (qemu-img's `-o` values). */
export interface Qcow2MeasureOptions {
  /** `size` (bytes); `--size` overrides `-o size`. Default 0. */
  size?: bigint;
  /** `cluster_size`; default 65536. */
  clusterSize?: bigint;
  extendedL2?: boolean;
  /** `compat`: only "0.10" and "1.1" are accepted by measure (default "1.1"). */
  compat?: string;
  /** `refcount_bits`; default 16. */
  refcountBits?: bigint;
  /** `preallocation`: off, metadata, falloc, full. */
  preallocation?: string;
  /** A `backing_file` was given: every source cluster counts as required. */
  hasBackingFile?: boolean;
  /** `encrypt.format`; "luks" is refused (needs a secret). */
  encryptFormat?: string;
}

/**
 * The source image being measured, with what measure reads from it: block status through
 * the chain, and the persistent bitmaps of a qcow2 v3 top layer.
 */
export interface MeasureSource {
  image: ImageReader;
  /**
   * Persistent bitmaps of the source, or undefined when its format cannot store any
   * (raw, qcow2 v2): then no "bitmaps size" is reported.
   */
  bitmaps: readonly Pick<BitmapDirectoryEntry, 'name' | 'granularityBits'>[] | undefined;
  /**
   * Optional hook for data the format reports as allocated but the host reports as a
   * hole (QEMU asks the file system with SEEK_DATA). Returns true when the run at
   * `offset` (from `blockStatus`) reads as zeros on the host. Default: never.
   */
  isHostHole?: (offset: number, length: number) => Promise<boolean>;
}

const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
const QCOW_MAX_L1_SIZE = 0x2000000n;
const L1E_SIZE = 8n;
const REFTABLE_ENTRY_SIZE = 8n;
const BME_TABLE_ENTRY_SIZE = 8n;
const BITMAP_DIR_ENTRY_SIZE = 24;
const SECTOR = 512n;
const U64 = (1n << 64n) - 1n;

function invalid(message: string): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', message);
}

const divRoundUp = (a: bigint, b: bigint): bigint => (a + b - 1n) / b;
/** ROUND_UP in uint64_t, wrapping as C does. */
const roundUp = (a: bigint, b: bigint): bigint => (divRoundUp(a, b) * b) & U64;

/**
 * qcow2_refcount_metadata_size(): bytes of refcount blocks and table needed to count
 * `clusters` clusters plus themselves (the fixed point QEMU iterates to).
 *
 * @example
 * ```ts
 * qcow2RefcountMetadataSize(16388n, 65536n, 4, false); // 131072n
 * ```
 */
export function qcow2RefcountMetadataSize(clusters: bigint, clusterSize: bigint, refcountOrder: number, generousIncrease: boolean): bigint {
  const blocksPerTableCluster = clusterSize / REFTABLE_ENTRY_SIZE;
  const refcountsPerBlock = (clusterSize * 8n) / (1n << BigInt(refcountOrder));
  let table = 0n;
  let blocks = 0n;
  let n = 0n;
  let last: bigint;
  let generous = generousIncrease;
  let c = clusters;
  do {
    last = n;
    blocks = divRoundUp(c + table + blocks, refcountsPerBlock);
    table = divRoundUp(blocks, blocksPerTableCluster);
    n = c + blocks + table;
    if (n === last && generous) {
      c += divRoundUp(table, 2n);
      n = 0n;
      generous = false;
    }
  } while (n !== last);
  return (blocks + table) * clusterSize;
}

/**
 * qcow2_calc_prealloc_size(): the file size of a fully allocated qcow2 image of
 * `totalSize` bytes (header, L1, L2, refcount metadata and data clusters).
 *
 * @example
 * ```ts
 * qcow2PreallocSize(1n << 30n, 65536n, 4, false); // 1074135040n
 * ```
 */
export function qcow2PreallocSize(totalSize: bigint, clusterSize: bigint, refcountOrder: number, extendedL2: boolean): bigint {
  const l2eSize = extendedL2 ? 16n : 8n;
  const aligned = roundUp(totalSize, clusterSize);
  let meta = clusterSize;
  let nl2e = aligned / clusterSize;
  nl2e = roundUp(nl2e, clusterSize / l2eSize);
  meta += nl2e * l2eSize;
  let nl1e = (nl2e * l2eSize) / clusterSize;
  nl1e = roundUp(nl1e, clusterSize / L1E_SIZE);
  meta += nl1e * L1E_SIZE;
  meta += qcow2RefcountMetadataSize((meta + aligned) / clusterSize, clusterSize, refcountOrder, false);
  return meta + aligned;
}

/**
 * qcow2_get_persistent_dirty_bitmap_size(): room for the bitmaps of a `diskSize`-byte
 * image if all of their data were allocated, with tables and directory.
 */
export function persistentBitmapsSize(bitmaps: readonly Pick<BitmapDirectoryEntry, 'name' | 'granularityBits'>[], diskSize: bigint, clusterSize: bigint): bigint {
  let total = 0n;
  let dirSize = 0n;
  for (const bm of bitmaps) {
    const granularity = 1n << BigInt(bm.granularityBits);
    const bits = divRoundUp(diskSize, granularity);
    const bytes = divRoundUp(bits, 8n);
    const clusters = divRoundUp(bytes, clusterSize);
    total += clusters * clusterSize;
    total += roundUp(clusters * BME_TABLE_ENTRY_SIZE, clusterSize);
    const nameBytes = new TextEncoder().encode(bm.name).byteLength;
    dirSize += roundUp(BigInt(BITMAP_DIR_ENTRY_SIZE + nameBytes), 8n);
  }
  return total + roundUp(dirSize, clusterSize);
}

/** ctz32() of the low 32 bits, 32 for zero. */
function ctz32(v: bigint): number {
  const low = Number(v & 0xffffffffn);
  if (low === 0) return 32;
  return 31 - Math.clz32(low & -low);
}

/** Validated qcow2 options, in the order qcow2_measure reads them. */
function qcow2Params(o: Qcow2MeasureOptions): { clusterSize: bigint; version: number; refcountOrder: number; prealloc: string; extendedL2: boolean } {
  const extendedL2 = o.extendedL2 ?? false;
  const clusterSize = o.clusterSize ?? 65536n;
  const bits = ctz32(clusterSize);
  if (bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS || 1n << BigInt(bits) !== clusterSize) {
    throw invalid(`Cluster size must be a power of two between ${1 << MIN_CLUSTER_BITS} and ${1 << (MAX_CLUSTER_BITS - 10)}k`);
  }
  if (extendedL2 && clusterSize < 16384n) {
    throw invalid('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  }
  let version = 3;
  if (o.compat !== undefined) {
    if (o.compat === '0.10') version = 2;
    else if (o.compat !== '1.1') throw invalid(`Invalid compatibility level: '${o.compat}'`);
  }
  const refcountBits = o.refcountBits ?? 16n;
  if (refcountBits > 64n || refcountBits === 0n || (refcountBits & (refcountBits - 1n)) !== 0n) {
    throw invalid('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16n) {
    throw invalid('Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  const prealloc = o.preallocation ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc)) throw invalid(`invalid parameter value: ${prealloc}`);
  if (o.encryptFormat === 'luks') throw invalid("Parameter 'encrypt.key-secret' is required for cipher");
  return { clusterSize, version, refcountOrder: ctz32(refcountBits), prealloc, extendedL2 };
}

/**
 * Bytes of the source that a new image must store, counted as qcow2_measure does: ranges
 * that are data (not zero) anywhere in the chain, each extended to the end of its cluster.
 */
export async function requiredSourceBytes(source: MeasureSource, clusterSize: bigint): Promise<bigint> {
  const size = source.image.size;
  const cs = Number(clusterSize);
  let required = 0n;
  let offset = 0;
  while (offset < size) {
    const st = await source.image.blockStatus(offset, size - offset);
    let pnum = st.length;
    const zero = st.zero || (st.data && source.isHostHole !== undefined && (await source.isHostHole(offset, pnum)));
    if (!zero && st.data && st.present) {
      pnum = Math.ceil((offset + pnum) / cs) * cs - offset;
      required += BigInt((offset % cs) + pnum);
    }
    offset += pnum;
  }
  return required;
}

/**
 * qcow2_measure(): the size of a new qcow2 image, empty (`source` undefined: `size` from
 * the options) or holding the content of `source`. Throws Qcow2Error('INVALID_ARGUMENT')
 * with QEMU's message for bad options and for sizes past the L1 table limit.
 *
 * @example
 * ```ts
 * await measureQcow2({ size: 1n << 30n });               // { required: 393216n, fullyAllocated: 1074135040n }
 * await measureQcow2({ clusterSize: 4096n }, { image, bitmaps: [] });
 * ```
 */
export async function measureQcow2(options: Qcow2MeasureOptions, source?: MeasureSource): Promise<MeasureResult> {
  const p = qcow2Params(options);
  const cs = p.clusterSize;
  let virtualSize = roundUp(options.size ?? 0n, cs);
  const l2eSize = p.extendedL2 ? 16n : 8n;
  const l2Tables = divRoundUp(virtualSize / cs, cs / l2eSize);
  if (l2Tables * L1E_SIZE > QCOW_MAX_L1_SIZE) throw invalid('The image size is too large (try using a larger cluster size)');

  let required = 0n;
  if (source !== undefined) {
    // As in QEMU, the source's size is not checked against the L1 limit again.
    virtualSize = roundUp(BigInt(source.image.size), cs);
    required = options.hasBackingFile === true ? virtualSize : await requiredSourceBytes(source, cs);
  }
  if (p.prealloc === 'full' || p.prealloc === 'falloc') required = virtualSize;

  const fullyAllocated = qcow2PreallocSize(virtualSize, cs, p.refcountOrder, p.extendedL2);
  const result: MeasureResult = { required: fullyAllocated - virtualSize + required, fullyAllocated };
  if (p.version >= 3 && source?.bitmaps !== undefined) {
    result.bitmaps = persistentBitmapsSize(source.bitmaps, BigInt(source.image.size), cs);
  }
  return result;
}

/**
 * raw_measure(): a raw image is as large as its virtual disk (sector-rounded for `--size`).
 *
 * @example
 * ```ts
 * measureRaw(1000n); // { required: 1024n, fullyAllocated: 1024n }
 * ```
 */
export function measureRaw(size: bigint | undefined, source?: ImageReader): MeasureResult {
  const required = source !== undefined ? BigInt(source.size) : roundUp(size ?? 0n, SECTOR);
  return { required, fullyAllocated: required };
}

/**
 * qemu-img's JSON for a measurement (dump_json_block_measure_info): QEMU's pretty printer
 * with 4-space indentation and its key order.
 *
 * @example
 * ```ts
 * formatMeasureJson({ required: 393216n, fullyAllocated: 1074135040n });
 * // '{\n    "required": 393216,\n    "fully-allocated": 1074135040\n}\n'
 * ```
 */
export function formatMeasureJson(r: MeasureResult): string {
  // QEMU's JSON writer prints these 64-bit values as signed integers.
  const n = (v: bigint): string => BigInt.asIntN(64, v).toString();
  const lines: string[] = [];
  if (r.bitmaps !== undefined) lines.push(`    "bitmaps": ${n(r.bitmaps)}`);
  lines.push(`    "required": ${n(r.required)}`, `    "fully-allocated": ${n(r.fullyAllocated)}`);
  return `{\n${lines.join(',\n')}\n}\n`;
}

/** qemu-img's human output for a measurement (`required size: N` lines, unsigned). */
export function formatMeasureHuman(r: MeasureResult): string {
  let text = `required size: ${r.required}\nfully allocated size: ${r.fullyAllocated}\n`;
  if (r.bitmaps !== undefined) text += `bitmaps size: ${r.bitmaps}\n`;
  return text;
}
