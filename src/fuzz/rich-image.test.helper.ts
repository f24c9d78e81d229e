// Test helper: a small qcow2 image with every structure the mutator aims at (L1/L2, refcounts,
// data, zero and compressed clusters, a snapshot table, a bitmap directory and its table).
import { deflateRawSync } from 'node:zlib';
import { encodeBitmapDirectory, encodeBitmapsExtension } from '../format/qcow2/bitmap-directory.js';
import { EXT_BITMAPS } from '../format/qcow2/header-extensions.js';
import { buildQcow2, pattern } from '../format/qcow2/qcow2-builder.test.helper.js';
import { encodeSnapshotTable } from '../format/qcow2/snapshot-table.js';
import { viewOf, writeU64 } from '../util/bytes.js';

export const RICH_CLUSTER_BITS = 12;
const CS = 2 ** RICH_CLUSTER_BITS;

/** Build it; `opts.valid` leaves out the snapshot and bitmap (whose clusters have no refcount). */
export function richImage(opts: { valid?: boolean } = {}): Uint8Array {
  const compressed = new Uint8Array(deflateRawSync(new Uint8Array(CS).fill(0x61)));
  const build = (extensions: { type: number; data: Uint8Array }[]): Uint8Array => buildQcow2({
    clusterBits: RICH_CLUSTER_BITS,
    size: 4 << 20,
    entries: [
      { cluster: 0, kind: 'data', bytes: pattern(CS, 1) },
      { cluster: 1, kind: 'zero' },
      { cluster: 2, kind: 'compressed', bytes: compressed },
      { cluster: 600, kind: 'data', bytes: pattern(CS, 2) },
    ],
    extensions,
  });
  if (opts.valid === true) return build([]);
  const size = build([{ type: EXT_BITMAPS, data: new Uint8Array(24) }]).byteLength;
  const snapAt = size;
  const dirAt = size + CS;
  const bitmapTableAt = size + 2 * CS;
  const dir = encodeBitmapDirectory([{
    name: 'b0', granularityBits: 16, flags: { inUse: false, auto: true }, type: 1, tableOffset: bitmapTableAt, tableSize: 1, extraData: new Uint8Array(0),
  }]);
  const base = build([{ type: EXT_BITMAPS, data: encodeBitmapsExtension({ nbBitmaps: 1, directorySize: dir.byteLength, directoryOffset: dirAt }) }]);
  const out = new Uint8Array(size + 3 * CS);
  out.set(base);
  out.set(encodeSnapshotTable([{
    l1TableOffset: 3 * CS, l1Size: 1, id: '1', name: 'snap', dateSec: 1, dateNsec: 2, vmClockNsec: 3, vmStateSize: 0, diskSize: 4 << 20, icount: -1, extraData: new Uint8Array(24),
  }]), snapAt);
  out.set(dir, dirAt);
  const v = viewOf(out);
  v.setUint32(60, 1);
  writeU64(v, 64, snapAt);
  v.setUint32(92, 1); // autoclear: bitmaps extension valid
  return out;
}
