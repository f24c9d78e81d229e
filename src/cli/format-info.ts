import type { BitmapDirectoryEntry } from '../format/qcow2/bitmap-directory.js';
import type { SnapshotEntry } from '../format/qcow2/snapshot-table.js';
import { sizeToStr } from './human-size.js';

/** One internal snapshot as `qemu-img info --output=json` 7.2 names it (QAPI SnapshotInfo). */
export interface SnapshotInfoJson {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  /** Absent when icount was disabled (-1) or not recorded. */
  icount?: number;
}

/** A persistent dirty bitmap (QAPI Qcow2BitmapInfo). */
export interface Qcow2BitmapInfoJson {
  name: string;
  /** Bytes per bit. */
  granularity: number;
  /** "in-use" first, then "auto", as qemu-img lists them. */
  flags: Array<'in-use' | 'auto'>;
}

/** A LUKS key slot (QAPI QCryptoBlockInfoLUKSSlot). */
export interface LuksSlotInfoJson {
  active: boolean;
  iters?: number;
  stripes?: number;
  'key-offset': number;
}

/** Encryption details of a qcow2 image (QAPI ImageInfoSpecificQCow2Encryption). */
export type Qcow2EncryptInfoJson =
  | { format: 'aes' }
  | {
    format: 'luks';
    'cipher-alg': string;
    'cipher-mode': string;
    'ivgen-alg': string;
    'ivgen-hash-alg'?: string;
    'hash-alg': string;
    'payload-offset': number;
    'master-key-iters': number;
    uuid: string;
    slots: LuksSlotInfoJson[];
  };

/** qcow2 specifics (QAPI ImageInfoSpecificQCow2). v2 images have compat, compression-type, refcount-bits only. */
export interface Qcow2SpecificInfoJson {
  compat: '0.10' | '1.1';
  'data-file'?: string;
  'data-file-raw'?: boolean;
  'extended-l2'?: boolean;
  'lazy-refcounts'?: boolean;
  corrupt?: boolean;
  'refcount-bits': number;
  encrypt?: Qcow2EncryptInfoJson;
  bitmaps?: Qcow2BitmapInfoJson[];
  'compression-type': 'zlib' | 'zstd';
}

/**
 * What `qemu-img info --output=json` 7.2 prints for one image (QAPI ImageInfo). Optional keys
 * are printed only when present. Key order in the output does not follow this declaration:
 * the formatters reproduce QEMU's hash-table order whatever order the object was built in.
 */
export interface ImageInfoJson {
  /** The name as given (command line, or the combined backing path for chain members). */
  filename: string;
  format: string;
  /** qcow2: dirty bit; raw: false. */
  'dirty-flag'?: boolean;
  /** Host bytes allocated to the image file (st_blocks * 512); absent when unknown. */
  'actual-size'?: number;
  'virtual-size': number;
  /** qcow2 only. */
  'cluster-size'?: number;
  /** Present (true) only for encrypted images. */
  encrypted?: boolean;
  'backing-filename'?: string;
  /** Present with backing-filename when QEMU could resolve it (see `fullBackingFilename`). */
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  /** Present only when the image has at least one snapshot. */
  snapshots?: SnapshotInfoJson[];
  /** qcow2 only in 7.2 (raw images have none). */
  'format-specific'?: { type: 'qcow2'; data: Qcow2SpecificInfoJson };
}

type Json = string | number | boolean | readonly Json[] | { readonly [key: string]: Json | undefined };

/** QEMU's QDict hash (tdb_hash) bucket of a key; QDicts iterate bucket by bucket. */
function qdictBucket(key: string): number {
  const bytes = new TextEncoder().encode(key);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  bytes.forEach((b, i) => {
    value = (value + ((b << ((i * 5) % 24)) >>> 0)) >>> 0;
  });
  return ((Math.imul(1103515243, value) + 12345) >>> 0) % 512;
}

/**
 * Keys in the order a QEMU QDict built by inserting them in this order iterates them: by hash
 * bucket, and within a bucket the last inserted first. This is the key order of every
 * dictionary qemu-img prints (JSON and the human "Format specific information").
 */
export function qdictKeyOrder(keys: readonly string[]): string[] {
  return keys
    .map((key, index) => ({ key, index, bucket: qdictBucket(key) }))
    .sort((a, b) => a.bucket - b.bucket || b.index - a.index)
    .map((k) => k.key);
}

function entriesOf(obj: { readonly [key: string]: Json | undefined }): Array<[string, Json]> {
  const present = Object.keys(obj).filter((k) => obj[k] !== undefined);
  return qdictKeyOrder(present).map((k) => [k, obj[k] as Json]);
}

/** QEMU's JSON string quoting: ASCII printable kept, everything else as uppercase \uXXXX. */
function quote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"': out += '\\"'; break;
      case '\\': out += '\\\\'; break;
      case '\b': out += '\\b'; break;
      case '\f': out += '\\f'; break;
      case '\n': out += '\\n'; break;
      case '\r': out += '\\r'; break;
      case '\t': out += '\\t'; break;
      default:
        if (cp > 0xffff) {
          out += `\\u${hex4(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex4(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
        } else if (cp < 0x20 || cp >= 0x7f) {
          out += `\\u${hex4(cp)}`;
        } else {
          out += ch;
        }
    }
  }
  return `${out}"`;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

function scalar(v: string | number | boolean): string {
  if (typeof v === 'number' && !Number.isInteger(v)) throw new RangeError(`not an integer: ${v}`);
  return String(v);
}

/** QEMU's pretty JSON writer: 4-space indent, `"key": value`, empty containers as `[` newline `]`. */
function toJson(v: Json, depth: number): string {
  if (typeof v === 'string') return quote(v);
  if (typeof v !== 'object') return scalar(v);
  const inner = ' '.repeat((depth + 1) * 4);
  const outer = ' '.repeat(depth * 4);
  if (Array.isArray(v)) {
    const items = (v as readonly Json[]).map((x) => `\n${inner}${toJson(x, depth + 1)}`);
    return `[${items.join(',')}\n${outer}]`;
  }
  const items = entriesOf(v as { readonly [key: string]: Json | undefined }).map(([k, x]) => `\n${inner}${quote(k)}: ${toJson(x, depth + 1)}`);
  return `{${items.join(',')}\n${outer}}`;
}

/**
 * `qemu-img info --output=json` 7.2, byte for byte (trailing newline included). A list (from
 * `--backing-chain`) prints as a JSON array of the images, top first.
 *
 * @example
 * ```ts
 * process.stdout.write(formatInfoJson({ filename: 'a.qcow2', format: 'raw', 'virtual-size': 1024 }));
 * ```
 */
export function formatInfoJson(info: ImageInfoJson | readonly ImageInfoJson[]): string {
  return `${toJson(info as unknown as Json, 0)}\n`;
}

/** QEMU's dump_qobject for the human "Format specific information" block. */
function dumpHuman(v: Json, indent: number): string {
  if (typeof v !== 'object') return typeof v === 'string' ? v : scalar(v);
  const pad = ' '.repeat(indent * 4);
  const line = (label: string, x: Json): string => {
    const composite = typeof x === 'object';
    return `${pad}${label}:${composite ? '\n' : ' '}${dumpHuman(x, indent + 1)}${composite ? '' : '\n'}`;
  };
  if (Array.isArray(v)) return (v as readonly Json[]).map((x, i) => line(`[${i}]`, x)).join('');
  return entriesOf(v as { readonly [key: string]: Json | undefined }).map(([k, x]) => line(k.replaceAll('-', ' '), x)).join('');
}

function utf8Length(s: string): number {
  return new TextEncoder().encode(s).byteLength;
}

/** printf's %-Ns: pads by bytes, never truncates. */
function padEndBytes(s: string, width: number): string {
  return s + ' '.repeat(Math.max(0, width - utf8Length(s)));
}

function two(n: number): string {
  return String(n).padStart(2, '0');
}

/** "%Y-%m-%d %H:%M:%S" in the local time zone, as QEMU prints snapshot dates. */
function localDate(sec: number): string {
  const d = new Date(sec * 1000);
  return `${String(d.getFullYear()).padStart(4, '0')}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** VM clock as "%02d:%02d:%02d.%03d" (hours grow past two digits). */
function vmClock(sec: number, nsec: number): string {
  const secs = sec + Math.floor(nsec / 1e9);
  const ms = Math.floor((nsec % 1e9) / 1e6);
  return `${two(Math.floor(secs / 3600))}:${two(Math.floor(secs / 60) % 60)}:${two(secs % 60)}.${String(ms).padStart(3, '0')}`;
}

/** The column header line of a snapshot table (without newline). */
export const SNAPSHOT_LIST_HEADER =
  `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`;

/** One snapshot row as QEMU's bdrv_snapshot_dump prints it (without newline). */
export function formatSnapshotRow(s: SnapshotInfoJson): string {
  return `${padEndBytes(s.id, 9)} ${padEndBytes(s.name, 16)} ${sizeToStr(s['vm-state-size']).padStart(8)}` +
    `${localDate(s['date-sec']).padStart(20)}${vmClock(s['vm-clock-sec'], s['vm-clock-nsec']).padStart(13)}` +
    `${(s.icount === undefined ? '' : String(s.icount)).padStart(11)}`;
}

/**
 * "Snapshot list:" block as `qemu-img info` and `qemu-img snapshot -l` print it; empty when
 * there are no snapshots. Dates are in the process's local time zone, as QEMU prints them.
 *
 * @example
 * ```ts
 * process.stdout.write(formatSnapshotList(entries.map(snapshotInfoJson)));
 * ```
 */
export function formatSnapshotList(snapshots: readonly SnapshotInfoJson[]): string {
  if (snapshots.length === 0) return '';
  return `Snapshot list:\n${SNAPSHOT_LIST_HEADER}\n${snapshots.map((s) => `${formatSnapshotRow(s)}\n`).join('')}`;
}

function formatOneHuman(info: ImageInfoJson): string {
  const size = info['actual-size'];
  let out = `image: ${info.filename}\nfile format: ${info.format}\n` +
    `virtual size: ${sizeToStr(info['virtual-size'])} (${info['virtual-size']} bytes)\n` +
    `disk size: ${size === undefined ? 'unavailable' : sizeToStr(size)}\n`;
  if (info.encrypted === true) out += 'encrypted: yes\n';
  if (info['cluster-size'] !== undefined) out += `cluster_size: ${info['cluster-size']}\n`;
  if (info['dirty-flag'] === true) out += 'cleanly shut down: no\n';
  const backing = info['backing-filename'];
  if (backing !== undefined) {
    const full = info['full-backing-filename'];
    out += `backing file: ${backing}`;
    if (full === undefined) out += ' (cannot determine actual path)';
    else if (full !== backing) out += ` (actual path: ${full})`;
    out += '\n';
    if (info['backing-filename-format'] !== undefined) out += `backing file format: ${info['backing-filename-format']}\n`;
  }
  if (info.snapshots !== undefined) {
    out += `Snapshot list:\n${SNAPSHOT_LIST_HEADER}\n${info.snapshots.map((s) => `${formatSnapshotRow(s)}\n`).join('')}`;
  }
  const spec = info['format-specific'];
  if (spec !== undefined) out += `Format specific information:\n${dumpHuman(spec.data as unknown as Json, 1)}`;
  return out;
}

/**
 * `qemu-img info` 7.2 human output, byte for byte. A list (from `--backing-chain`) prints each
 * image with a blank line between them. Snapshot dates use the local time zone.
 *
 * @example
 * ```ts
 * process.stdout.write(formatInfoHuman(info));
 * // image: a.qcow2\nfile format: qcow2\nvirtual size: 1 GiB (1073741824 bytes)\n...
 * ```
 */
export function formatInfoHuman(info: ImageInfoJson | readonly ImageInfoJson[]): string {
  const list: readonly ImageInfoJson[] = Array.isArray(info) ? info : [info as ImageInfoJson];
  return list.map(formatOneHuman).join('\n');
}

/** Cut a string to at most `maxBytes` UTF-8 bytes; a split character becomes U+FFFD as QEMU's JSON shows it. */
function truncateBytes(s: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(s);
  return bytes.byteLength <= maxBytes ? s : new TextDecoder().decode(bytes.subarray(0, maxBytes));
}

/**
 * The info view of a snapshot table entry, computed as qemu-img 7.2 does: id cut to 127
 * bytes and name to 255 (QEMU copies them into fixed buffers), VM clock split into seconds and
 * nanoseconds, icount only when recorded and not -1.
 *
 * @example
 * ```ts
 * const snapshots = meta.snapshots.map(snapshotInfoJson);
 * ```
 */
export function snapshotInfoJson(entry: SnapshotEntry): SnapshotInfoJson {
  const info: SnapshotInfoJson = {
    id: truncateBytes(entry.id, 127),
    name: truncateBytes(entry.name, 255),
    'vm-state-size': entry.vmStateSize,
    'date-sec': entry.dateSec,
    'date-nsec': entry.dateNsec,
    'vm-clock-sec': Math.floor(entry.vmClockNsec / 1e9),
    'vm-clock-nsec': entry.vmClockNsec % 1e9,
  };
  if (entry.icount !== undefined && entry.icount !== -1) info.icount = entry.icount;
  return info;
}

/**
 * The info view of a bitmap directory entry.
 *
 * @example
 * ```ts
 * const bitmaps = meta.bitmaps.map(bitmapInfoJson);
 * ```
 */
export function bitmapInfoJson(entry: BitmapDirectoryEntry): Qcow2BitmapInfoJson {
  const flags: Array<'in-use' | 'auto'> = [];
  if (entry.flags.inUse) flags.push('in-use');
  if (entry.flags.auto) flags.push('auto');
  return { name: entry.name, granularity: 2 ** entry.granularityBits, flags };
}

/** Facts about a qcow2 image that its "format-specific" info is made of. */
export interface Qcow2SpecificFacts {
  version: 2 | 3;
  compressionType: 'zlib' | 'zstd';
  lazyRefcounts: boolean;
  refcountBits: number;
  corrupt: boolean;
  extendedL2: boolean;
  /** Data file name from the header extension, if any. */
  dataFileName?: string;
  /** The incompatible "external data file" bit is set (then data-file-raw is printed). */
  hasDataFile: boolean;
  /** Autoclear "raw external data" bit. */
  dataFileRaw: boolean;
  /** Bitmaps of the directory (omit, or pass none, when the image has no valid bitmaps extension). */
  bitmaps?: readonly BitmapDirectoryEntry[];
  encrypt?: Qcow2EncryptInfoJson;
}

/**
 * The "format-specific" value qemu-img 7.2 prints for a qcow2 image. v2 images show only
 * compat, compression type ("zlib") and refcount bits (plus encryption); v3 images add the
 * feature flags, the data file, and bitmaps when there is at least one.
 *
 * @example
 * ```ts
 * info['format-specific'] = qcow2FormatSpecific({ version: 3, compressionType: 'zlib', lazyRefcounts: false,
 *   refcountBits: 16, corrupt: false, extendedL2: false, hasDataFile: false, dataFileRaw: false });
 * ```
 */
export function qcow2FormatSpecific(f: Qcow2SpecificFacts): { type: 'qcow2'; data: Qcow2SpecificInfoJson } {
  const data: Qcow2SpecificInfoJson = f.version === 2
    ? { compat: '0.10', 'compression-type': 'zlib', 'refcount-bits': f.refcountBits }
    : {
      compat: '1.1',
      'compression-type': f.compressionType,
      'lazy-refcounts': f.lazyRefcounts,
      'refcount-bits': f.refcountBits,
      corrupt: f.corrupt,
      'extended-l2': f.extendedL2,
    };
  if (f.version === 3) {
    if (f.bitmaps !== undefined && f.bitmaps.length > 0) data.bitmaps = f.bitmaps.map(bitmapInfoJson);
    if (f.dataFileName !== undefined) data['data-file'] = f.dataFileName;
    if (f.hasDataFile) data['data-file-raw'] = f.dataFileRaw;
  }
  if (f.encrypt !== undefined) data.encrypt = f.encrypt;
  return { type: 'qcow2', data };
}

/**
 * QEMU's resolution of a backing file name for "full-backing-filename": names with a
 * protocol prefix ("nbd:...") or an absolute path stay as they are; others are taken relative
 * to the directory part of the image's filename as given ("sub/o2.qcow2" + "base.qcow2" =
 * "sub/base.qcow2"; "ov.qcow2" + "base.qcow2" = "base.qcow2").
 *
 * @example
 * ```ts
 * fullBackingFilename('/tmp/q/ov.qcow2', 'base.qcow2'); // "/tmp/q/base.qcow2"
 * ```
 */
export function fullBackingFilename(imageFilename: string, backing: string): string {
  const protocolEnd = backing.search(/[:/]/);
  if (backing.startsWith('/') || (protocolEnd >= 0 && backing[protocolEnd] === ':')) return backing;
  return imageFilename.slice(0, imageFilename.lastIndexOf('/') + 1) + backing;
}
