import type { Storage } from '../../storage/storage.js';
import { decodeBitmapDirectory, decodeBitmapsExtension, type BitmapDirectoryEntry } from './bitmap-directory.js';

/**
 * Read the bitmap directory named by the bitmaps extension payload. The directory size is
 * bounded by decodeBitmapsExtension (QEMU's 64 MiB limit) before anything is allocated.
 */
export async function readBitmapDirectory(storage: Storage, payload: Uint8Array, clusterSize: number, diskSize: number): Promise<BitmapDirectoryEntry[]> {
  const ext = decodeBitmapsExtension(payload, clusterSize);
  const bytes = new Uint8Array(ext.directorySize);
  await storage.read(bytes, ext.directoryOffset);
  return decodeBitmapDirectory(bytes, { nbBitmaps: ext.nbBitmaps, clusterSize, diskSize });
}
