// Browser-safe entry point: no Node imports below this file.
export { Qcow2Error, type Qcow2ErrorCode } from './errors.js';
export type { Storage, StorageResolver, StorageOpenOptions } from './storage/storage.js';
export { MemoryStorage } from './storage/memory-storage.js';
export type { FormatDriver, Mapping, DependencyRequest } from './format/driver.js';
export { Qcow2Driver, type Qcow2OpenOptions } from './format/qcow2/qcow2-driver.js';
export type { Qcow2Metadata } from './format/qcow2/qcow2-metadata.js';
export { RawDriver } from './format/raw/raw-driver.js';
export { probeFormat, type ImageFormat } from './format/probe.js';
export { Image } from './image/image.js';
export type { BlockStatus, ImageReader } from './image/types.js';
export { openImage, type OpenImageOptions } from './image/open-image.js';
export type { OpenPolicy, OpenedDependency } from './image/open-policy.js';
export type { CodecSet, ClusterCompressor, ClusterDecompressor, CompressionType } from './codecs/codec.js';
export { jsCodecs } from './codecs/codecs-js.js';
