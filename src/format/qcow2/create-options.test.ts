import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Qcow2Error } from '../../errors.js';
import { QCOW2_CREATE_OPTION_INFO, QEMU_BLOCK_DRIVERS, resolveQcow2CreateOptions, type Qcow2CreateRequest } from './create-options.js';

function rejects(req: Omit<Qcow2CreateRequest, 'size'>, message: string, code = 'INVALID_ARGUMENT'): void {
  assert.throws(
    () => resolveQcow2CreateOptions({ size: 1 << 20, ...req }),
    (e: unknown) => e instanceof Qcow2Error && e.code === code && e.message === message,
    `${JSON.stringify(req)} should fail with "${message}"`,
  );
}

const V3 = 'compatibility level 1.1 and above (use version=v3 or greater)';

describe('create-options', () => {
  test('defaults are those of qemu-img 7.2', () => {
    assert.deepEqual(resolveQcow2CreateOptions({ size: 1000 }), {
      size: 1024,
      version: 3,
      clusterSize: 65536,
      clusterBits: 16,
      refcountBits: 16,
      refcountOrder: 4,
      lazyRefcounts: false,
      extendedL2: false,
      compressionType: 'zlib',
      preallocation: 'off',
      backingFile: undefined,
      backingFormat: undefined,
      dataFile: undefined,
      dataFileRaw: false,
    });
  });

  test('compat spellings, cluster sizes and refcount widths', () => {
    for (const [compat, version] of [['0.10', 2], ['v2', 2], ['1.1', 3], ['v3', 3]] as const) {
      assert.equal(resolveQcow2CreateOptions({ size: 0, compat }).version, version);
    }
    for (let bits = 9; bits <= 21; bits++) {
      const o = resolveQcow2CreateOptions({ size: 0, clusterSize: 2 ** bits });
      assert.equal(o.clusterBits, bits);
    }
    for (let order = 0; order <= 6; order++) {
      assert.equal(resolveQcow2CreateOptions({ size: 0, refcountBits: 2 ** order }).refcountOrder, order);
    }
  });

  test('data_file_raw turns preallocation=off into metadata, keeps other modes', () => {
    assert.equal(resolveQcow2CreateOptions({ size: 0, dataFile: 'd', dataFileRaw: true }).preallocation, 'metadata');
    assert.equal(resolveQcow2CreateOptions({ size: 0, dataFile: 'd', dataFileRaw: true, preallocation: 'full' }).preallocation, 'full');
    assert.equal(resolveQcow2CreateOptions({ size: 0, dataFile: 'd' }).preallocation, 'off');
  });

  test('enum values are checked with QAPI messages', () => {
    rejects({ compat: 'foo' }, "Parameter 'version' does not accept value 'foo'");
    rejects({ preallocation: 'bad' }, "Parameter 'preallocation' does not accept value 'bad'");
    rejects({ compressionType: 'lz4' }, "Parameter 'compression-type' does not accept value 'lz4'");
    rejects({ backingFile: 'b', backingFormat: 'foo' }, "Parameter 'backing-fmt' does not accept value 'foo'");
    rejects({ backingFile: 'b', backingFormat: 'io_uring' }, "Parameter 'backing-fmt' does not accept value 'io_uring'");
    for (const f of QEMU_BLOCK_DRIVERS) resolveQcow2CreateOptions({ size: 0, backingFile: 'b', backingFormat: f });
  });

  test('qcow2_co_create rules and messages (checked against qemu-img 7.2)', () => {
    rejects({ compat: '0.10', lazyRefcounts: true }, `Lazy refcounts only supported with ${V3}`);
    rejects({ compat: '0.10', extendedL2: true }, `Extended L2 entries are only supported with ${V3}`);
    rejects(
      { compat: '0.10', refcountBits: 8 },
      'Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)',
    );
    rejects({ compat: '0.10', dataFile: 'd' }, `External data files are only supported with ${V3}`);
    rejects({ compat: 'v2', compressionType: 'zstd' }, `Non-zlib compression type is only supported with ${V3}`);
    rejects({ dataFileRaw: true }, 'data-file-raw requires data-file');
    rejects({ dataFile: 'd', dataFileRaw: true, backingFile: 'b', backingFormat: 'qcow2' }, 'Backing file and data-file-raw cannot be used at the same time');
    rejects(
      { preallocation: 'metadata', backingFile: 'b', backingFormat: 'qcow2' },
      'Backing file and preallocation can only be used at the same time if extended_l2 is on',
    );
    resolveQcow2CreateOptions({ size: 0, preallocation: 'full', backingFile: 'b', backingFormat: 'qcow2', extendedL2: true });
    for (const cs of [1000, 256, 4 << 20, 0, 3 << 10]) rejects({ clusterSize: cs }, 'Cluster size must be a power of two between 512 and 2048k');
    rejects({ extendedL2: true, clusterSize: 8192 }, 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
    for (const bits of [0, 3, 128, 2 ** 64 - 1]) rejects({ refcountBits: bits }, 'Refcount width must be a power of two and may not exceed 64 bits');
    rejects({ backingFormat: 'qcow2' }, 'Backing format cannot be used without backing file');
    rejects({ encrypt: true }, 'encryption is not supported yet', 'UNSUPPORTED');
  });

  test('checks run in QEMU order when several options are wrong', () => {
    // Enums before rules; within the rules, extended_l2/v2 before the cluster size.
    rejects({ compat: 'x', preallocation: 'y' }, "Parameter 'version' does not accept value 'x'");
    rejects({ preallocation: 'y', compressionType: 'z' }, "Parameter 'preallocation' does not accept value 'y'");
    rejects({ compat: '0.10', extendedL2: true, clusterSize: 1000 }, `Extended L2 entries are only supported with ${V3}`);
    rejects({ clusterSize: 1000, refcountBits: 3 }, 'Cluster size must be a power of two between 512 and 2048k');
    rejects({ compat: '0.10', lazyRefcounts: true, refcountBits: 3 }, `Lazy refcounts only supported with ${V3}`);
    rejects({ refcountBits: 3, dataFileRaw: true }, 'Refcount width must be a power of two and may not exceed 64 bits');
    rejects({ compat: '0.10', dataFileRaw: true }, 'data-file-raw requires data-file');
  });

  test('sizes round up to 512 bytes', () => {
    assert.equal(resolveQcow2CreateOptions({ size: 1 }).size, 512);
    assert.equal(resolveQcow2CreateOptions({ size: 2 ** 60 + 1 }).size, 2 ** 60);
    assert.throws(() => resolveQcow2CreateOptions({ size: -1 }), RangeError);
  });

  test('the option list is in the order qemu-img prints it, with its defaults', () => {
    const printed = QCOW2_CREATE_OPTION_INFO.filter((o) => o.defaultValue !== undefined).map((o) => `${o.name}=${o.defaultValue}`);
    assert.deepEqual(printed, ['cluster_size=65536', 'extended_l2=off', 'compression_type=zlib', 'lazy_refcounts=off', 'refcount_bits=16']);
    assert.equal(new Set(QCOW2_CREATE_OPTION_INFO.map((o) => o.name)).size, QCOW2_CREATE_OPTION_INFO.length);
  });
});
