// Node-only entry point: files on disk and thread-pool codecs.
export * from './index.js';
export { NodeFileStorage, NodeFileResolver } from './storage/node-file-storage.js';
export { nodeCodecs } from './codecs/codecs-node.js';
export { openImageFile, type OpenImageFileOptions } from './open-image-file-node.js';
