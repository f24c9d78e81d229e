import { viewOf } from '../../util/bytes.js';

/** A cached table's views, made once per table (the cache hands out the same bytes). */
export interface TableViews {
  view: DataView;
  /** 32-bit words, for all-zero tests only (host byte order does not matter there). */
  words: Uint32Array;
}

const viewCache = new WeakMap<Uint8Array, TableViews>();

/**
 * The views of an L2 table (or any cached table): scans and per-request updates use them
 * without making a DataView each time.
 */
export function tableViews(bytes: Uint8Array): TableViews {
  let v = viewCache.get(bytes);
  if (v === undefined) {
    // An unaligned table (never made by the cache) gets no words: the fast path then skips nothing.
    const words = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2) : new Uint32Array(0);
    v = { view: viewOf(bytes), words };
    viewCache.set(bytes, v);
  }
  return v;
}
