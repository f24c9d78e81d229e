/**
 * Worker-thread side of the codec pool (zstd-node.ts): decodes and encodes clusters (zstd
 * with the WebAssembly codec, zlib with node:zlib's synchronous calls) and sends results
 * back as transferred buffers.
 */
import { parentPort } from 'node:worker_threads';
import { Qcow2Error } from '../errors.js';
import { initZstdWasm, zstdCompressSync, zstdDecompressSync } from './zstd-wasm.js';
import { deflateSyncNode, inflateSyncNode } from './deflate-node.js';
import type { ZstdWorkerReply, ZstdWorkerRequest } from './zstd-node-protocol.js';

const port = parentPort;
if (!port) throw new Error('zstd-node-worker must run in a worker thread');

/** The WebAssembly codec, instantiated on the first zstd request (zlib jobs never need it). */
let zstdReady: Promise<void> | undefined;

port.on('message', async (req: ZstdWorkerRequest) => {
  let reply: ZstdWorkerReply;
  const transfer: ArrayBuffer[] = [];
  try {
    if (req.codec === 'zstd') await (zstdReady ??= initZstdWasm());
    if (req.op === 'decompress') {
      const out = new Uint8Array(req.dstLength);
      if (req.codec === 'zlib') inflateSyncNode(req.src, out);
      else zstdDecompressSync(req.src, out);
      reply = { id: req.id, ok: true, out };
      transfer.push(out.buffer);
    } else {
      const out = req.codec === 'zlib' ? deflateSyncNode(req.src) : zstdCompressSync(req.src);
      reply = { id: req.id, ok: true, out };
      if (out) transfer.push(out.buffer as ArrayBuffer);
    }
  } catch (e) {
    reply = e instanceof Qcow2Error
      ? { id: req.id, ok: false, code: e.code, message: e.message, context: { ...e.context } }
      : { id: req.id, ok: false, code: undefined, message: String(e), context: {} };
  }
  port.postMessage(reply, transfer);
});
