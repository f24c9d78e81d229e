import zlib from 'node:zlib';
import { codecContract, zlibDecoderContract } from './codec-contract.test.helper.js';
import { deflateNodeCompressor, deflateNodeDecompressor } from './deflate-node.js';

const deflateRaw = (data: Uint8Array, options: Record<string, number> = { windowBits: 12, memLevel: 9 }): Uint8Array =>
  new Uint8Array(zlib.deflateRawSync(data, options));

codecContract({
  name: 'deflate-node',
  decompressor: deflateNodeDecompressor,
  compressor: deflateNodeCompressor,
  encode: (data) => deflateRaw(data),
  // QEMU inflates with windowBits -12: zlib with a 4 KiB window must accept our output.
  referenceDecode: (stream, size) => new Uint8Array(zlib.inflateRawSync(stream, { windowBits: 12 }).subarray(0, size)),
});

zlibDecoderContract('deflate-node', deflateNodeDecompressor, deflateRaw);
