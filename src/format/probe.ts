import type { Storage } from '../storage/storage.js';
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
  const magic = ((head[0] ?? 0) << 24 | (head[1] ?? 0) << 16 | (head[2] ?? 0) << 8 | (head[3] ?? 0)) >>> 0;
  const version = ((head[4] ?? 0) << 24 | (head[5] ?? 0) << 16 | (head[6] ?? 0) << 8 | (head[7] ?? 0)) >>> 0;
  return magic === QCOW2_MAGIC && version >= 2 ? 'qcow2' : 'raw';
}
