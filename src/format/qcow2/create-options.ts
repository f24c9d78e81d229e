/**
 * Options for creating a qcow2 image, and QEMU 7.2's rules for them (qcow2_co_create and the
 * QAPI enums it is fed through), with QEMU's error messages. Browser-safe.
 */
import { Qcow2Error } from '../../errors.js';

/** How much of a new image to allocate up front. */
export type PreallocationMode = 'off' | 'metadata' | 'falloc' | 'full';
/** Compression of compressed clusters. */
export type CompressionType = 'zlib' | 'zstd';

/**
 * What a caller asks for, before validation: the values of qemu-img's `-o` options, with
 * enums still as text. Every field is optional except `size`.
 *
 * @example
 * ```ts
 * const options = resolveQcow2CreateOptions({ size: 1 << 30, clusterSize: 65536, lazyRefcounts: true });
 * ```
 */
export interface Qcow2CreateRequest {
  /** Virtual size in bytes; rounded up to a multiple of 512. Exact below 2^62. */
  size: number;
  /** `compat`: "0.10" or "v2", "1.1" or "v3" (default 1.1). */
  compat?: string | undefined;
  backingFile?: string | undefined;
  /** A QEMU block driver name ("qcow2", "raw", ...). Requires `backingFile`. */
  backingFormat?: string | undefined;
  /** Name of an external data file, stored in the header as given. */
  dataFile?: string | undefined;
  dataFileRaw?: boolean | undefined;
  clusterSize?: number | undefined;
  extendedL2?: boolean | undefined;
  /** "off", "metadata", "falloc" or "full". */
  preallocation?: string | undefined;
  lazyRefcounts?: boolean | undefined;
  refcountBits?: number | undefined;
  /** "zlib" or "zstd". */
  compressionType?: string | undefined;
  /** Any encryption request is refused (not implemented). */
  encrypt?: boolean | undefined;
}

/** Validated options: everything a layout needs, defaults filled in. */
export interface Qcow2CreateOptions {
  /** Virtual size in bytes, a multiple of 512. */
  readonly size: number;
  readonly version: 2 | 3;
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly refcountBits: number;
  readonly refcountOrder: number;
  readonly lazyRefcounts: boolean;
  readonly extendedL2: boolean;
  readonly compressionType: CompressionType;
  /** Effective mode: `metadata` when data_file_raw asked for `off`. */
  readonly preallocation: PreallocationMode;
  readonly backingFile: string | undefined;
  readonly backingFormat: string | undefined;
  readonly dataFile: string | undefined;
  readonly dataFileRaw: boolean;
}

export const DEFAULT_CLUSTER_SIZE = 65536;
export const MIN_CLUSTER_SIZE = 512;
export const MAX_CLUSTER_SIZE = 2 * 1024 * 1024;
/** Smallest cluster size with extended L2 entries (32 subclusters of 512 bytes). */
export const MIN_EXTL2_CLUSTER_SIZE = 16384;

/** QAPI's BlockdevDriver values in QEMU 7.2 (what `backing_fmt` may name). */
export const QEMU_BLOCK_DRIVERS: readonly string[] = [
  'blkdebug', 'blklogwrites', 'blkreplay', 'blkverify', 'bochs', 'cloop', 'compress', 'copy-before-write',
  'copy-on-read', 'dmg', 'file', 'snapshot-access', 'ftp', 'ftps', 'gluster', 'host_cdrom', 'host_device',
  'http', 'https', 'iscsi', 'luks', 'nbd', 'nfs', 'null-aio', 'null-co', 'nvme', 'parallels', 'preallocate',
  'qcow', 'qcow2', 'qed', 'quorum', 'raw', 'rbd', 'replication', 'ssh', 'throttle', 'vdi', 'vhdx', 'vmdk',
  'vpc', 'vvfat',
];

/** Type and default of one qemu-img option, as its option list describes it. */
export interface CreateOptionInfo {
  readonly name: string;
  readonly type: 'string' | 'bool' | 'number' | 'size';
  readonly defaultValue?: string;
  readonly help: string;
}

/** The tail of QEMU's qcow2 option lists that create and amend share (qcow2_create_opts / qcow2_amend_opts). */
export const QCOW2_COMMON_OPTION_INFO: readonly CreateOptionInfo[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'compat', type: 'string', help: 'Compatibility level (v2 [0.10] or v3 [1.1])' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Image format of the base image' },
  { name: 'data_file', type: 'string', help: 'File name of an external data file' },
  { name: 'data_file_raw', type: 'bool', help: 'The external data file must stay valid as a raw image' },
  { name: 'lazy_refcounts', type: 'bool', defaultValue: 'off', help: 'Postpone refcount updates' },
  { name: 'refcount_bits', type: 'number', defaultValue: '16', help: 'Width of a reference count entry in bits' },
];

/**
 * qemu-img 7.2's qcow2 create options in the order of QEMU's option list: the order in which
 * `Formatting '...'` prints them. Encryption options are listed so they parse; creating an
 * encrypted image is refused.
 */
export const QCOW2_CREATE_OPTION_INFO: readonly CreateOptionInfo[] = [
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
  { name: 'encrypt.format', type: 'string', help: "Encrypt the image, format choices: 'aes', 'luks'" },
  { name: 'encrypt.key-secret', type: 'string', help: 'ID of secret providing qcow AES key or LUKS passphrase' },
  { name: 'encrypt.cipher-alg', type: 'string', help: 'Name of encryption cipher algorithm' },
  { name: 'encrypt.cipher-mode', type: 'string', help: 'Name of encryption cipher mode' },
  { name: 'encrypt.ivgen-alg', type: 'string', help: 'Name of IV generator algorithm' },
  { name: 'encrypt.ivgen-hash-alg', type: 'string', help: 'Name of IV generator hash algorithm' },
  { name: 'encrypt.hash-alg', type: 'string', help: 'Name of encryption hash algorithm' },
  { name: 'encrypt.iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
  { name: 'cluster_size', type: 'size', defaultValue: '65536', help: 'qcow2 cluster size' },
  { name: 'extended_l2', type: 'bool', defaultValue: 'off', help: 'Extended L2 tables' },
  { name: 'preallocation', type: 'string', help: 'Preallocation mode (allowed values: off, metadata, falloc, full)' },
  { name: 'compression_type', type: 'string', defaultValue: 'zlib', help: 'Compression method used for image cluster compression' },
  ...QCOW2_COMMON_OPTION_INFO,
];

function invalid(message: string): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', message);
}

function notAccepted(param: string, value: string): Qcow2Error {
  return invalid(`Parameter '${param}' does not accept value '${value}'`);
}

const V3_HINT = 'compatibility level 1.1 and above (use version=v3 or greater)';

/**
 * Validate a create request the way QEMU 7.2 does, in QEMU's order (enum values first, then
 * qcow2_co_create's rules), and fill in defaults. Throws Qcow2Error('INVALID_ARGUMENT') with
 * QEMU's message, or Qcow2Error('UNSUPPORTED') for encryption.
 *
 * @example
 * ```ts
 * resolveQcow2CreateOptions({ size: 1000, compat: '0.10', lazyRefcounts: true });
 * // throws "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)"
 * ```
 */
export function resolveQcow2CreateOptions(req: Qcow2CreateRequest): Qcow2CreateOptions {
  if (req.encrypt === true) throw new Qcow2Error('UNSUPPORTED', 'encryption is not supported yet');
  // QAPI enum checks, in the order of BlockdevCreateOptionsQcow2's members.
  let version: 2 | 3 = 3;
  if (req.compat !== undefined) {
    if (req.compat === '0.10' || req.compat === 'v2') version = 2;
    else if (req.compat === '1.1' || req.compat === 'v3') version = 3;
    else throw notAccepted('version', req.compat);
  }
  if (req.backingFormat !== undefined && !QEMU_BLOCK_DRIVERS.includes(req.backingFormat)) {
    throw notAccepted('backing-fmt', req.backingFormat);
  }
  let preallocation: PreallocationMode = 'off';
  if (req.preallocation !== undefined) {
    if (!['off', 'metadata', 'falloc', 'full'].includes(req.preallocation)) throw notAccepted('preallocation', req.preallocation);
    preallocation = req.preallocation as PreallocationMode;
  }
  let compressionType: CompressionType = 'zlib';
  if (req.compressionType !== undefined) {
    if (req.compressionType !== 'zlib' && req.compressionType !== 'zstd') throw notAccepted('compression-type', req.compressionType);
    compressionType = req.compressionType;
  }
  if (!Number.isFinite(req.size) || req.size < 0) throw new RangeError(`invalid image size ${req.size}`);
  // "Silently round up size" (qcow2_co_create_opts).
  const size = Math.ceil(req.size / 512) * 512;

  // qcow2_co_create, same order.
  const extendedL2 = req.extendedL2 ?? false;
  if (extendedL2 && version < 3) throw invalid(`Extended L2 entries are only supported with ${V3_HINT}`);
  const clusterSize = req.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  const clusterBits = Math.log2(clusterSize);
  if (!Number.isInteger(clusterBits) || clusterSize < MIN_CLUSTER_SIZE || clusterSize > MAX_CLUSTER_SIZE) {
    throw invalid('Cluster size must be a power of two between 512 and 2048k');
  }
  if (extendedL2 && clusterSize < MIN_EXTL2_CLUSTER_SIZE) {
    throw invalid(`Extended L2 entries are only supported with cluster sizes of at least ${MIN_EXTL2_CLUSTER_SIZE} bytes`);
  }
  const backingFile = req.backingFile;
  if (backingFile !== undefined && preallocation !== 'off' && !extendedL2) {
    throw invalid('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  if (req.backingFormat !== undefined && backingFile === undefined) {
    throw invalid('Backing format cannot be used without backing file');
  }
  const lazyRefcounts = req.lazyRefcounts ?? false;
  if (version < 3 && lazyRefcounts) {
    throw invalid(`Lazy refcounts only supported with ${V3_HINT}`);
  }
  const refcountBits = req.refcountBits ?? 16;
  const refcountOrder = Math.log2(refcountBits);
  if (!(refcountBits <= 64) || !Number.isInteger(refcountOrder)) {
    throw invalid('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    throw invalid('Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)');
  }
  const dataFileRaw = req.dataFileRaw ?? false;
  if (dataFileRaw && req.dataFile === undefined) throw invalid('data-file-raw requires data-file');
  if (dataFileRaw && backingFile !== undefined) throw invalid('Backing file and data-file-raw cannot be used at the same time');
  // A raw data file must read the same with and without the metadata: map it all 1:1.
  if (dataFileRaw && preallocation === 'off') preallocation = 'metadata';
  if (req.dataFile !== undefined && version < 3) throw invalid(`External data files are only supported with ${V3_HINT}`);
  if (compressionType !== 'zlib' && version < 3) {
    throw invalid(`Non-zlib compression type is only supported with ${V3_HINT}`);
  }
  return {
    size,
    version,
    clusterSize,
    clusterBits,
    refcountBits,
    refcountOrder,
    lazyRefcounts,
    extendedL2,
    compressionType,
    preallocation,
    backingFile,
    backingFormat: req.backingFormat,
    dataFile: req.dataFile,
    dataFileRaw,
  };
}
