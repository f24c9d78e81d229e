/**
 * Just enough qcow2 for codec interop tests and benchmarks: list the compressed clusters
 * of an image made by qemu-img (descriptor math of qemu-qcow2-facts.md 1.6), and build a
 * v3 image whose clusters were compressed by our codecs so QEMU can judge them.
 * Test-only: BigInt is fine here.
 */
import type { CompressionType } from './codec.js';

const QCOW2_MAGIC = 0x514649fb;
const COMPRESSED = 1n << 62n;
const COPIED = 1n << 63n;
const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;

export interface CompressedCluster {
  readonly guestOffset: number;
  /** Host offset of the compressed stream (not sector aligned). */
  readonly hostOffset: number;
  /** The sector-rounded bytes QEMU reads: may include the next cluster's bytes. */
  readonly bytes: Uint8Array;
}

export interface ImageClusters {
  readonly clusterSize: number;
  readonly virtualSize: number;
  readonly compressionType: CompressionType;
  readonly compressed: CompressedCluster[];
  /** Allocated, uncompressed clusters: guest offset -> host offset. */
  readonly plain: { guestOffset: number; hostOffset: number }[];
}

function fail(message: string): never {
  throw new Error(`test qcow2 parser: ${message}`);
}

/** Walk L1 and L2 of a qcow2 image (no snapshots, no extended L2, no data file). */
export function readImageClusters(image: Uint8Array): ImageClusters {
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (view.getUint32(0) !== QCOW2_MAGIC) fail('not qcow2');
  const clusterBits = view.getUint32(20);
  if (clusterBits < 9 || clusterBits > 21) fail(`cluster_bits ${clusterBits}`);
  const clusterSize = 2 ** clusterBits;
  const virtualSize = Number(view.getBigUint64(24));
  const l1Size = view.getUint32(36);
  const l1Offset = Number(view.getBigUint64(40));
  const version = view.getUint32(4);
  const headerLength = version >= 3 ? view.getUint32(100) : 72;
  const typeByte = headerLength > 104 ? view.getUint8(104) : 0;
  if (typeByte > 1) fail(`compression type ${typeByte}`);
  if (version >= 3 && view.getUint32(76) & 16) fail('extended L2 entries not supported here');

  const l2Entries = clusterSize / 8;
  const x = 62n - BigInt(clusterBits - 8);
  const coffsetMask = (1n << x) - 1n;
  const csizeMask = (1n << BigInt(clusterBits - 8)) - 1n;
  const compressed: CompressedCluster[] = [];
  const plain: { guestOffset: number; hostOffset: number }[] = [];
  for (let i = 0; i < l1Size; i++) {
    const l2Offset = Number(view.getBigUint64(l1Offset + i * 8) & OFFSET_MASK);
    if (l2Offset === 0) continue;
    for (let j = 0; j < l2Entries; j++) {
      const guestOffset = (i * l2Entries + j) * clusterSize;
      if (guestOffset >= virtualSize) break;
      const entry = view.getBigUint64(l2Offset + j * 8);
      if (entry & COMPRESSED) {
        const coffset = Number(entry & coffsetMask);
        const sectors = Number((entry >> x) & csizeMask) + 1;
        const csize = sectors * 512 - (coffset & 511);
        const bytes = new Uint8Array(csize); // past the end of the file reads as zeros
        bytes.set(image.subarray(coffset, Math.min(coffset + csize, image.byteLength)));
        compressed.push({ guestOffset, hostOffset: coffset, bytes });
      } else {
        const hostOffset = Number(entry & OFFSET_MASK);
        if (hostOffset !== 0) plain.push({ guestOffset, hostOffset });
      }
    }
  }
  return { clusterSize, virtualSize, compressionType: typeByte === 1 ? 'zstd' : 'zlib', compressed, plain };
}

/**
 * Build a qcow2 v3 image of `raw` (size a multiple of 512) whose non-zero clusters are
 * compressed with `compress` (stored plainly when it returns undefined), packed
 * byte-granular like QEMU does. Refcounts follow QEMU's accounting of compressed clusters.
 */
export async function buildCompressedImage(raw: Uint8Array, clusterSize: number, type: CompressionType,
  compress: (cluster: Uint8Array) => Promise<Uint8Array | undefined>): Promise<Uint8Array> {
  const clusterBits = Math.log2(clusterSize);
  const guestClusters = Math.ceil(raw.byteLength / clusterSize);
  const payload: ({ kind: 'zero' } | { kind: 'plain'; data: Uint8Array } | { kind: 'compressed'; data: Uint8Array })[] = [];
  for (let c = 0; c < guestClusters; c++) {
    const data = new Uint8Array(clusterSize);
    data.set(raw.subarray(c * clusterSize, (c + 1) * clusterSize));
    if (data.every((b) => b === 0)) { payload.push({ kind: 'zero' }); continue; }
    const stored = await compress(data);
    payload.push(stored ? { kind: 'compressed', data: stored } : { kind: 'plain', data });
  }
  const plainCount = payload.filter((p) => p.kind === 'plain').length;
  const streamBytes = payload.reduce((n, p) => n + (p.kind === 'compressed' ? p.data.byteLength : 0), 0);

  const l2Entries = clusterSize / 8;
  const l2Count = Math.ceil(guestClusters / l2Entries);
  const l1Clusters = Math.ceil((l2Count * 8) / clusterSize);
  const rbEntries = clusterSize / 2; // refcount_order 4
  const dataClusters = plainCount + Math.ceil(streamBytes / clusterSize) + 1;
  let refblocks = 1;
  let reftable = 1;
  for (;;) {
    const total = 1 + reftable + refblocks + l1Clusters + l2Count + dataClusters;
    const rb = Math.ceil(total / rbEntries);
    const rt = Math.ceil((rb * 8) / clusterSize);
    if (rb === refblocks && rt === reftable) break;
    refblocks = rb;
    reftable = rt;
  }
  const reftableOffset = clusterSize;
  const refblockOffset = reftableOffset + reftable * clusterSize;
  const l1Offset = refblockOffset + refblocks * clusterSize;
  const l2Offset = l1Offset + l1Clusters * clusterSize;
  const dataOffset = l2Offset + l2Count * clusterSize;
  const streamOffset = dataOffset + plainCount * clusterSize;
  const fileSize = Math.ceil((streamOffset + streamBytes) / clusterSize) * clusterSize;
  const image = new Uint8Array(fileSize);
  const view = new DataView(image.buffer);
  const refcount = new Uint16Array(fileSize / clusterSize);
  for (let c = 0; c < dataOffset / clusterSize; c++) refcount[c] = 1;

  const x = 62n - BigInt(clusterBits - 8);
  let plainAt = dataOffset;
  let streamAt = streamOffset;
  payload.forEach((p, c) => {
    const l2Entry = l2Offset + c * 8; // L2 tables are consecutive, so entry c sits here
    if (p.kind === 'plain') {
      image.set(p.data, plainAt);
      view.setBigUint64(l2Entry, BigInt(plainAt) | COPIED);
      refcount[plainAt / clusterSize]!++;
      plainAt += clusterSize;
    } else if (p.kind === 'compressed') {
      image.set(p.data, streamAt);
      const extraSectors = Math.floor((streamAt + p.data.byteLength - 1) / 512) - Math.floor(streamAt / 512);
      view.setBigUint64(l2Entry, COMPRESSED | (BigInt(extraSectors) << x) | BigInt(streamAt));
      const first = Math.floor(streamAt / 512) * 512;
      const end = first + (extraSectors + 1) * 512;
      for (let h = Math.floor(first / clusterSize); h * clusterSize < end; h++) refcount[h]!++;
      streamAt += p.data.byteLength;
    }
  });
  for (let i = 0; i < l2Count; i++) view.setBigUint64(l1Offset + i * 8, BigInt(l2Offset + i * clusterSize) | COPIED);
  for (let b = 0; b < refblocks; b++) {
    view.setBigUint64(reftableOffset + b * 8, BigInt(refblockOffset + b * clusterSize));
    for (let e = 0; e < rbEntries; e++) {
      const c = b * rbEntries + e;
      if (c < refcount.length) view.setUint16(refblockOffset + b * clusterSize + e * 2, refcount[c]!);
    }
  }
  view.setUint32(0, QCOW2_MAGIC);
  view.setUint32(4, 3);
  view.setUint32(20, clusterBits);
  view.setBigUint64(24, BigInt(raw.byteLength));
  view.setUint32(36, l2Count);
  view.setBigUint64(40, BigInt(l1Offset));
  view.setBigUint64(48, BigInt(reftableOffset));
  view.setUint32(56, reftable);
  view.setBigUint64(72, type === 'zstd' ? 8n : 0n); // incompatible bit 3: compression type
  view.setUint32(96, 4);
  view.setUint32(100, 112);
  view.setUint8(104, type === 'zstd' ? 1 : 0);
  return image;
}
