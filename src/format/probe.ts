import type { Storage } from '../storage/storage.js';
import { getU32BE } from '../util/bytes.js';
import { QCOW2_MAGIC } from './qcow2/header.js';

/** Formats this library reads. */
export type ImageFormat = 'qcow2' | 'raw';

/**
 * Guess a format from the first bytes. Only for files the caller chose to trust: a guest can
 * write a qcow2 header into a raw disk, so backing files are probed only when the open
 * policy allows it.
 */
export async function probeFormat(storage: Storage): Promise<ImageFormat> {
  const head = new Uint8Array(8);
  await storage.read(head, 0);
  return getU32BE(head, 0) === QCOW2_MAGIC && getU32BE(head, 4) >= 2 ? 'qcow2' : 'raw';
}
