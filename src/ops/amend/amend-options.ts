/**
 * What `qemu-img amend` accepts for qcow2 and how QEMU 7.2's qcow2_amend_options reads it: the
 * amend option list (in QEMU's order, which is also the order options are validated in), and
 * the first-stage checks that fail before anything is written.
 */
import { Qcow2Error } from '../../errors.js';
import { QCOW2_COMMON_OPTION_INFO, type CreateOptionInfo } from '../../format/qcow2/create-options.js';

/** qemu-img 7.2's qcow2 amend options (qcow2_amend_opts): LUKS keyslot options, then the common ones. */
export const QCOW2_AMEND_OPTION_INFO: readonly CreateOptionInfo[] = [
  { name: 'encrypt.state', type: 'string', help: 'Select new state of affected keyslots (active/inactive)' },
  { name: 'encrypt.keyslot', type: 'number', help: 'Select a single keyslot to modify explicitly' },
  { name: 'encrypt.old-secret', type: 'string', help: 'Select all keyslots that match this password' },
  { name: 'encrypt.new-secret', type: 'string', help: 'New secret to set in the matching keyslots. Empty string to erase' },
  { name: 'encrypt.iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
  ...QCOW2_COMMON_OPTION_INFO,
];

/** The options given to amend (absent = not given, so left as it is). */
export interface AmendRequest {
  /** Any `encrypt.*` option was given. */
  encrypt?: boolean;
  /** New virtual size in bytes; 0 means "no change", as in QEMU. */
  size?: bigint;
  compat?: string;
  backingFile?: string;
  backingFormat?: string;
  /** New external data file name; '' removes the name. */
  dataFile?: string;
  dataFileRaw?: boolean;
  lazyRefcounts?: boolean;
  /** As given (QEMU stores it in a C int, so it is truncated to 32 bits). */
  refcountBits?: bigint;
}

/** What the image is now, as far as planning needs it. */
export interface AmendCurrent {
  version: 2 | 3;
  refcountBits: number;
  lazyRefcounts: boolean;
  hasDataFile: boolean;
  dataFileRaw: boolean;
  encrypted: boolean;
}

/** The validated target state. */
export interface AmendPlan {
  oldVersion: 2 | 3;
  newVersion: 2 | 3;
  refcountBits: number;
  lazyRefcounts: boolean;
  dataFileRaw: boolean;
  /** undefined: keep the name; '' clears it. */
  dataFile: string | undefined;
  /** 0: keep the size. */
  size: number;
  /** Given backing options, which must equal the image's (amend cannot change them). */
  backing: { file: string | undefined; format: string | undefined } | undefined;
  /** Amend operations reported by progress (version change, refcount width change). */
  totalOperations: number;
}

function invalid(message: string): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', message);
}

/**
 * QEMU's first loop over the amend options: parse each given option in option-list order and
 * refuse what can be refused before touching the image.
 *
 * @example
 * ```ts
 * planAmend({ compat: '0.10' }, { version: 3, refcountBits: 16, lazyRefcounts: false, hasDataFile: false, dataFileRaw: false, encrypted: false });
 * // { newVersion: 2, ... }
 * planAmend({ refcountBits: 3n }, current); // throws "Refcount width must be a power of two and may not exceed 64 bits"
 * ```
 */
export function planAmend(req: AmendRequest, cur: AmendCurrent): AmendPlan {
  if (req.encrypt === true) {
    // Without encryption support no image we open is encrypted.
    if (!cur.encrypted) throw invalid("Can't amend encryption options - encryption not present");
    throw new Qcow2Error('UNSUPPORTED', 'Amending encryption options is not supported');
  }
  let size = 0;
  if (req.size !== undefined) {
    if (req.size > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`Invalid image size ${req.size}`);
    size = Number(req.size);
  }
  let newVersion = cur.version;
  if (req.compat !== undefined) {
    if (req.compat === '0.10' || req.compat === 'v2') newVersion = 2;
    else if (req.compat === '1.1' || req.compat === 'v3') newVersion = 3;
    else throw invalid(`Unknown compatibility level ${req.compat}`);
  }
  let backing: AmendPlan['backing'];
  if (req.backingFile !== undefined || req.backingFormat !== undefined) {
    backing = { file: req.backingFile, format: req.backingFormat };
  }
  if (req.dataFile !== undefined && !cur.hasDataFile) {
    throw invalid('data-file can only be set for images that use an external data file');
  }
  let dataFileRaw = cur.dataFileRaw;
  if (req.dataFileRaw !== undefined) {
    dataFileRaw = req.dataFileRaw;
    if (dataFileRaw && !cur.dataFileRaw) throw invalid('data-file-raw cannot be set on existing images');
  }
  const lazyRefcounts = req.lazyRefcounts ?? cur.lazyRefcounts;
  let refcountBits = cur.refcountBits;
  if (req.refcountBits !== undefined) {
    refcountBits = Number(BigInt.asIntN(32, req.refcountBits));
    if (refcountBits <= 0 || refcountBits > 64 || (refcountBits & (refcountBits - 1)) !== 0) {
      throw invalid('Refcount width must be a power of two and may not exceed 64 bits');
    }
  }
  return {
    oldVersion: cur.version,
    newVersion,
    refcountBits,
    lazyRefcounts,
    dataFileRaw,
    dataFile: req.dataFile,
    size,
    backing,
    totalOperations: (newVersion !== cur.version ? 1 : 0) + (refcountBits !== cur.refcountBits ? 1 : 0),
  };
}
