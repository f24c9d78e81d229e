/** Messages between the codec worker pool (zstd-node.ts) and its workers. */
import type { Qcow2ErrorCode } from '../errors.js';
import type { CompressionType } from './codec.js';

export type ZstdWorkerRequest =
  | { readonly id: number; readonly codec: CompressionType; readonly op: 'decompress'; readonly src: Uint8Array; readonly dstLength: number }
  | { readonly id: number; readonly codec: CompressionType; readonly op: 'compress'; readonly src: Uint8Array };

export type ZstdWorkerReply =
  | { readonly id: number; readonly ok: true; readonly out: Uint8Array | undefined }
  | {
    readonly id: number;
    readonly ok: false;
    /** Qcow2Error code, or undefined for an unexpected error. */
    readonly code: Qcow2ErrorCode | undefined;
    readonly message: string;
    readonly context: Record<string, unknown>;
  };
