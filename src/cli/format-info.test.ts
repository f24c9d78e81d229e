import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BitmapDirectoryEntry } from '../format/qcow2/bitmap-directory.js';
import type { SnapshotEntry } from '../format/qcow2/snapshot-table.js';
import {
  bitmapInfoJson, formatInfoHuman, formatInfoJson, formatSnapshotList, formatSnapshotRow, fullBackingFilename,
  qcow2FormatSpecific, qdictKeyOrder, snapshotInfoJson, type ImageInfoJson, type SnapshotInfoJson,
} from './format-info.js';

// Snapshot dates print in local time; the expected strings were captured with TZ=UTC.
process.env.TZ = 'UTC';

// Expected output below was captured from qemu-img 7.2.22 (Debian) on images made with
// qemu-img create/snapshot/bitmap/qemu-io; the inputs are written by hand from the same facts.

const A_HUMAN =
  "image: a.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 1 GiB (1073741824 bytes)\n" +
  "disk size: 196 KiB\n" +
  "cluster_size: 65536\n" +
  "Format specific information:\n" +
  "    compat: 1.1\n" +
  "    compression type: zlib\n" +
  "    lazy refcounts: false\n" +
  "    refcount bits: 16\n" +
  "    corrupt: false\n" +
  "    extended l2: false\n";

const A_JSON =
  "{\n" +
  "    \"virtual-size\": 1073741824,\n" +
  "    \"filename\": \"a.qcow2\",\n" +
  "    \"cluster-size\": 65536,\n" +
  "    \"format\": \"qcow2\",\n" +
  "    \"actual-size\": 200704,\n" +
  "    \"format-specific\": {\n" +
  "        \"type\": \"qcow2\",\n" +
  "        \"data\": {\n" +
  "            \"compat\": \"1.1\",\n" +
  "            \"compression-type\": \"zlib\",\n" +
  "            \"lazy-refcounts\": false,\n" +
  "            \"refcount-bits\": 16,\n" +
  "            \"corrupt\": false,\n" +
  "            \"extended-l2\": false\n" +
  "        }\n" +
  "    },\n" +
  "    \"dirty-flag\": false\n" +
  "}\n";

const V2_HUMAN =
  "image: v2.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 1 GiB (1073741824 bytes)\n" +
  "disk size: 196 KiB\n" +
  "cluster_size: 65536\n" +
  "Format specific information:\n" +
  "    compat: 0.10\n" +
  "    compression type: zlib\n" +
  "    refcount bits: 16\n";

const V2_JSON =
  "{\n" +
  "    \"virtual-size\": 1073741824,\n" +
  "    \"filename\": \"v2.qcow2\",\n" +
  "    \"cluster-size\": 65536,\n" +
  "    \"format\": \"qcow2\",\n" +
  "    \"actual-size\": 200704,\n" +
  "    \"format-specific\": {\n" +
  "        \"type\": \"qcow2\",\n" +
  "        \"data\": {\n" +
  "            \"compat\": \"0.10\",\n" +
  "            \"compression-type\": \"zlib\",\n" +
  "            \"refcount-bits\": 16\n" +
  "        }\n" +
  "    },\n" +
  "    \"dirty-flag\": false\n" +
  "}\n";

const RAW_HUMAN =
  "image: r.raw\n" +
  "file format: raw\n" +
  "virtual size: 100 MiB (104857600 bytes)\n" +
  "disk size: 4 KiB\n";

const RAW_JSON =
  "{\n" +
  "    \"virtual-size\": 104857600,\n" +
  "    \"filename\": \"r.raw\",\n" +
  "    \"format\": \"raw\",\n" +
  "    \"actual-size\": 4096,\n" +
  "    \"dirty-flag\": false\n" +
  "}\n";

const OV_HUMAN =
  "image: /tmp/q/ov.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 64 MiB (67108864 bytes)\n" +
  "disk size: 1.3 MiB\n" +
  "cluster_size: 65536\n" +
  "backing file: base.qcow2 (actual path: /tmp/q/base.qcow2)\n" +
  "backing file format: qcow2\n" +
  "Snapshot list:\n" +
  "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
  "1         snap1                 0 B 2026-11-22 00:44:30 00:00:00.000          0\n" +
  "2         second snap           0 B 2026-11-22 00:44:30 00:00:00.000          0\n" +
  "Format specific information:\n" +
  "    compat: 1.1\n" +
  "    compression type: zlib\n" +
  "    lazy refcounts: false\n" +
  "    bitmaps:\n" +
  "        [0]:\n" +
  "            flags:\n" +
  "                [0]: auto\n" +
  "            name: bm0\n" +
  "            granularity: 65536\n" +
  "        [1]:\n" +
  "            flags:\n" +
  "                [0]: auto\n" +
  "            name: bm1\n" +
  "            granularity: 1048576\n" +
  "        [2]:\n" +
  "            flags:\n" +
  "            name: bm2\n" +
  "            granularity: 65536\n" +
  "    refcount bits: 16\n" +
  "    corrupt: false\n" +
  "    extended l2: false\n";

const OV_JSON =
  "{\n" +
  "    \"backing-filename-format\": \"qcow2\",\n" +
  "    \"snapshots\": [\n" +
  "        {\n" +
  "            \"icount\": 0,\n" +
  "            \"vm-clock-nsec\": 0,\n" +
  "            \"name\": \"snap1\",\n" +
  "            \"date-sec\": 1795308270,\n" +
  "            \"date-nsec\": 364452000,\n" +
  "            \"vm-clock-sec\": 0,\n" +
  "            \"id\": \"1\",\n" +
  "            \"vm-state-size\": 0\n" +
  "        },\n" +
  "        {\n" +
  "            \"icount\": 0,\n" +
  "            \"vm-clock-nsec\": 0,\n" +
  "            \"name\": \"second snap\",\n" +
  "            \"date-sec\": 1795308270,\n" +
  "            \"date-nsec\": 395497000,\n" +
  "            \"vm-clock-sec\": 0,\n" +
  "            \"id\": \"2\",\n" +
  "            \"vm-state-size\": 0\n" +
  "        }\n" +
  "    ],\n" +
  "    \"virtual-size\": 67108864,\n" +
  "    \"filename\": \"/tmp/q/ov.qcow2\",\n" +
  "    \"cluster-size\": 65536,\n" +
  "    \"format\": \"qcow2\",\n" +
  "    \"actual-size\": 1359872,\n" +
  "    \"format-specific\": {\n" +
  "        \"type\": \"qcow2\",\n" +
  "        \"data\": {\n" +
  "            \"compat\": \"1.1\",\n" +
  "            \"compression-type\": \"zlib\",\n" +
  "            \"lazy-refcounts\": false,\n" +
  "            \"bitmaps\": [\n" +
  "                {\n" +
  "                    \"flags\": [\n" +
  "                        \"auto\"\n" +
  "                    ],\n" +
  "                    \"name\": \"bm0\",\n" +
  "                    \"granularity\": 65536\n" +
  "                },\n" +
  "                {\n" +
  "                    \"flags\": [\n" +
  "                        \"auto\"\n" +
  "                    ],\n" +
  "                    \"name\": \"bm1\",\n" +
  "                    \"granularity\": 1048576\n" +
  "                },\n" +
  "                {\n" +
  "                    \"flags\": [\n" +
  "                    ],\n" +
  "                    \"name\": \"bm2\",\n" +
  "                    \"granularity\": 65536\n" +
  "                }\n" +
  "            ],\n" +
  "            \"refcount-bits\": 16,\n" +
  "            \"corrupt\": false,\n" +
  "            \"extended-l2\": false\n" +
  "        }\n" +
  "    },\n" +
  "    \"full-backing-filename\": \"/tmp/q/base.qcow2\",\n" +
  "    \"backing-filename\": \"base.qcow2\",\n" +
  "    \"dirty-flag\": false\n" +
  "}\n";

const CHAIN_HUMAN =
  "image: abs.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 100 MiB (104857600 bytes)\n" +
  "disk size: 196 KiB\n" +
  "cluster_size: 65536\n" +
  "backing file: /tmp/q/r.raw\n" +
  "backing file format: raw\n" +
  "Format specific information:\n" +
  "    compat: 1.1\n" +
  "    compression type: zlib\n" +
  "    lazy refcounts: false\n" +
  "    refcount bits: 16\n" +
  "    corrupt: false\n" +
  "    extended l2: false\n" +
  "\n" +
  "image: /tmp/q/r.raw\n" +
  "file format: raw\n" +
  "virtual size: 100 MiB (104857600 bytes)\n" +
  "disk size: 4 KiB\n";

const CHAIN_JSON =
  "[\n" +
  "    {\n" +
  "        \"backing-filename-format\": \"raw\",\n" +
  "        \"virtual-size\": 104857600,\n" +
  "        \"filename\": \"abs.qcow2\",\n" +
  "        \"cluster-size\": 65536,\n" +
  "        \"format\": \"qcow2\",\n" +
  "        \"actual-size\": 200704,\n" +
  "        \"format-specific\": {\n" +
  "            \"type\": \"qcow2\",\n" +
  "            \"data\": {\n" +
  "                \"compat\": \"1.1\",\n" +
  "                \"compression-type\": \"zlib\",\n" +
  "                \"lazy-refcounts\": false,\n" +
  "                \"refcount-bits\": 16,\n" +
  "                \"corrupt\": false,\n" +
  "                \"extended-l2\": false\n" +
  "            }\n" +
  "        },\n" +
  "        \"full-backing-filename\": \"/tmp/q/r.raw\",\n" +
  "        \"backing-filename\": \"/tmp/q/r.raw\",\n" +
  "        \"dirty-flag\": false\n" +
  "    },\n" +
  "    {\n" +
  "        \"virtual-size\": 104857600,\n" +
  "        \"filename\": \"/tmp/q/r.raw\",\n" +
  "        \"format\": \"raw\",\n" +
  "        \"actual-size\": 4096,\n" +
  "        \"dirty-flag\": false\n" +
  "    }\n" +
  "]\n";

const LUKS_HUMAN =
  "image: enc.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 16 MiB (16777216 bytes)\n" +
  "disk size: 2.19 MiB\n" +
  "encrypted: yes\n" +
  "cluster_size: 65536\n" +
  "Format specific information:\n" +
  "    compat: 1.1\n" +
  "    compression type: zlib\n" +
  "    lazy refcounts: false\n" +
  "    refcount bits: 16\n" +
  "    encrypt:\n" +
  "        ivgen alg: plain64\n" +
  "        hash alg: sha256\n" +
  "        cipher alg: aes-256\n" +
  "        uuid: 49bb7a96-bf70-489e-9097-07162477fbfd\n" +
  "        format: luks\n" +
  "        cipher mode: xts\n" +
  "        slots:\n" +
  "            [0]:\n" +
  "                active: true\n" +
  "                iters: 434013\n" +
  "                key offset: 4096\n" +
  "                stripes: 4000\n" +
  "            [1]:\n" +
  "                active: false\n" +
  "                key offset: 262144\n" +
  "            [2]:\n" +
  "                active: false\n" +
  "                key offset: 520192\n" +
  "            [3]:\n" +
  "                active: false\n" +
  "                key offset: 778240\n" +
  "            [4]:\n" +
  "                active: false\n" +
  "                key offset: 1036288\n" +
  "            [5]:\n" +
  "                active: false\n" +
  "                key offset: 1294336\n" +
  "            [6]:\n" +
  "                active: false\n" +
  "                key offset: 1552384\n" +
  "            [7]:\n" +
  "                active: false\n" +
  "                key offset: 1810432\n" +
  "        payload offset: 2068480\n" +
  "        master key iters: 107857\n" +
  "    corrupt: false\n" +
  "    extended l2: false\n";

const LUKS_JSON =
  "{\n" +
  "    \"virtual-size\": 16777216,\n" +
  "    \"filename\": \"enc.qcow2\",\n" +
  "    \"cluster-size\": 65536,\n" +
  "    \"format\": \"qcow2\",\n" +
  "    \"actual-size\": 2297856,\n" +
  "    \"format-specific\": {\n" +
  "        \"type\": \"qcow2\",\n" +
  "        \"data\": {\n" +
  "            \"compat\": \"1.1\",\n" +
  "            \"compression-type\": \"zlib\",\n" +
  "            \"lazy-refcounts\": false,\n" +
  "            \"refcount-bits\": 16,\n" +
  "            \"encrypt\": {\n" +
  "                \"ivgen-alg\": \"plain64\",\n" +
  "                \"hash-alg\": \"sha256\",\n" +
  "                \"cipher-alg\": \"aes-256\",\n" +
  "                \"uuid\": \"49bb7a96-bf70-489e-9097-07162477fbfd\",\n" +
  "                \"format\": \"luks\",\n" +
  "                \"cipher-mode\": \"xts\",\n" +
  "                \"slots\": [\n" +
  "                    {\n" +
  "                        \"active\": true,\n" +
  "                        \"iters\": 434013,\n" +
  "                        \"key-offset\": 4096,\n" +
  "                        \"stripes\": 4000\n" +
  "                    },\n" +
  "                    {\n" +
  "                        \"active\": false,\n" +
  "                        \"key-offset\": 262144\n" +
  "                    },\n" +
  "                    {\n" +
  "                        \"active\": false,\n" +
  "                        \"key-offset\": 520192\n" +
  "                    },\n" +
  "                    {\n" +
  "                        \"active\": false,\n" +
  "                        \"key-offset\": 778240\n" +
  "                    },\n" +
  "                    {\n" +
  "                        \"active\": false,\n" +
  "                        \"key-offset\": 1036288\n" +
  "                    },\n" +
  "                    {\n" +
  "                        \"active\": false,\n" +
  "                        \"key-offset\": 1294336\n" +
  "                    },\n" +
  "                    {\n" +
  "                        \"active\": false,\n" +
  "                        \"key-offset\": 1552384\n" +
  "                    },\n" +
  "                    {\n" +
  "                        \"active\": false,\n" +
  "                        \"key-offset\": 1810432\n" +
  "                    }\n" +
  "                ],\n" +
  "                \"payload-offset\": 2068480,\n" +
  "                \"master-key-iters\": 107857\n" +
  "            },\n" +
  "            \"corrupt\": false,\n" +
  "            \"extended-l2\": false\n" +
  "        }\n" +
  "    },\n" +
  "    \"encrypted\": true,\n" +
  "    \"dirty-flag\": false\n" +
  "}\n";

const DATA_FILE_HUMAN =
  "image: df.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 10 GiB (10737418240 bytes)\n" +
  "disk size: 1.63 MiB\n" +
  "cluster_size: 131072\n" +
  "Format specific information:\n" +
  "    compat: 1.1\n" +
  "    compression type: zstd\n" +
  "    lazy refcounts: true\n" +
  "    refcount bits: 1\n" +
  "    data file: d.raw\n" +
  "    data file raw: true\n" +
  "    corrupt: false\n" +
  "    extended l2: true\n";

const DIRTY_HUMAN =
  "image: dirty.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 1 MiB (1048576 bytes)\n" +
  "disk size: 324 KiB\n" +
  "cluster_size: 65536\n" +
  "cleanly shut down: no\n" +
  "Format specific information:\n" +
  "    compat: 1.1\n" +
  "    compression type: zlib\n" +
  "    lazy refcounts: true\n" +
  "    refcount bits: 16\n" +
  "    corrupt: false\n" +
  "    extended l2: false\n";

const ESCAPES_HUMAN =
  "image: s7.qcow2\n" +
  "file format: qcow2\n" +
  "virtual size: 1 GiB (1073741824 bytes)\n" +
  "disk size: 264 KiB\n" +
  "cluster_size: 65536\n" +
  "Snapshot list:\n" +
  "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
  "1         name with \"quotes\" \\ and\ttab/slash  1.5 KiB 2023-11-14 22:13:20 01:02:03.456          0\n" +
  "2         ünïcödé 日本 😀       0 B 2026-11-22 00:53:37 00:00:00.000           \n" +
  "3         ctl\u0001\u001f               4 GiB 2026-11-22 00:53:37 00:00:00.000           \n" +
  "Format specific information:\n" +
  "    compat: 1.1\n" +
  "    compression type: zlib\n" +
  "    lazy refcounts: false\n" +
  "    refcount bits: 16\n" +
  "    corrupt: false\n" +
  "    extended l2: false\n";

const ESCAPES_JSON =
  "{\n" +
  "    \"snapshots\": [\n" +
  "        {\n" +
  "            \"icount\": 0,\n" +
  "            \"vm-clock-nsec\": 456789012,\n" +
  "            \"name\": \"name with \\\"quotes\\\" \\\\ and\\ttab/slash\",\n" +
  "            \"date-sec\": 1700000000,\n" +
  "            \"date-nsec\": 5,\n" +
  "            \"vm-clock-sec\": 3723,\n" +
  "            \"id\": \"1\",\n" +
  "            \"vm-state-size\": 1536\n" +
  "        },\n" +
  "        {\n" +
  "            \"vm-clock-nsec\": 0,\n" +
  "            \"name\": \"\\u00FCn\\u00EFc\\u00F6d\\u00E9 \\u65E5\\u672C \\uD83D\\uDE00 \\u007F\",\n" +
  "            \"date-sec\": 1795308817,\n" +
  "            \"date-nsec\": 29669000,\n" +
  "            \"vm-clock-sec\": 0,\n" +
  "            \"id\": \"2\",\n" +
  "            \"vm-state-size\": 0\n" +
  "        },\n" +
  "        {\n" +
  "            \"vm-clock-nsec\": 0,\n" +
  "            \"name\": \"ctl\\u0001\\u001F\",\n" +
  "            \"date-sec\": 1795308817,\n" +
  "            \"date-nsec\": 29669000,\n" +
  "            \"vm-clock-sec\": 0,\n" +
  "            \"id\": \"3\",\n" +
  "            \"vm-state-size\": 4294967296\n" +
  "        }\n" +
  "    ],\n" +
  "    \"virtual-size\": 1073741824,\n" +
  "    \"filename\": \"s7.qcow2\",\n" +
  "    \"cluster-size\": 65536,\n" +
  "    \"format\": \"qcow2\",\n" +
  "    \"actual-size\": 270336,\n" +
  "    \"format-specific\": {\n" +
  "        \"type\": \"qcow2\",\n" +
  "        \"data\": {\n" +
  "            \"compat\": \"1.1\",\n" +
  "            \"compression-type\": \"zlib\",\n" +
  "            \"lazy-refcounts\": false,\n" +
  "            \"refcount-bits\": 16,\n" +
  "            \"corrupt\": false,\n" +
  "            \"extended-l2\": false\n" +
  "        }\n" +
  "    },\n" +
  "    \"dirty-flag\": false\n" +
  "}\n";


const V3_PLAIN = { compat: '1.1', 'lazy-refcounts': false, corrupt: false, 'extended-l2': false, 'refcount-bits': 16, 'compression-type': 'zlib' } as const;

/** `qemu-img create -f qcow2 a.qcow2 1G` */
const A_INFO: ImageInfoJson = {
  filename: 'a.qcow2', format: 'qcow2', 'dirty-flag': false, 'actual-size': 200704, 'virtual-size': 1073741824,
  'cluster-size': 65536, 'format-specific': { type: 'qcow2', data: { ...V3_PLAIN } },
};

/** `-o compat=0.10` */
const V2_INFO: ImageInfoJson = {
  filename: 'v2.qcow2', format: 'qcow2', 'dirty-flag': false, 'actual-size': 200704, 'virtual-size': 1073741824,
  'cluster-size': 65536, 'format-specific': { type: 'qcow2', data: { compat: '0.10', 'refcount-bits': 16, 'compression-type': 'zlib' } },
};

/** `qemu-img create -f raw r.raw 100M` */
const RAW_INFO: ImageInfoJson = { filename: 'r.raw', format: 'raw', 'dirty-flag': false, 'actual-size': 4096, 'virtual-size': 104857600 };

/** Overlay with two snapshots and three bitmaps, opened as /tmp/q/ov.qcow2 from another directory. */
const OV_INFO: ImageInfoJson = {
  filename: '/tmp/q/ov.qcow2', format: 'qcow2', 'dirty-flag': false, 'actual-size': 1359872, 'virtual-size': 67108864,
  'cluster-size': 65536, 'backing-filename': 'base.qcow2', 'full-backing-filename': '/tmp/q/base.qcow2',
  'backing-filename-format': 'qcow2',
  snapshots: [
    { id: '1', name: 'snap1', 'vm-state-size': 0, 'date-sec': 1795308270, 'date-nsec': 364452000, 'vm-clock-sec': 0, 'vm-clock-nsec': 0, icount: 0 },
    { id: '2', name: 'second snap', 'vm-state-size': 0, 'date-sec': 1795308270, 'date-nsec': 395497000, 'vm-clock-sec': 0, 'vm-clock-nsec': 0, icount: 0 },
  ],
  'format-specific': {
    type: 'qcow2',
    data: {
      ...V3_PLAIN,
      bitmaps: [
        { name: 'bm0', granularity: 65536, flags: ['auto'] },
        { name: 'bm1', granularity: 1048576, flags: ['auto'] },
        { name: 'bm2', granularity: 65536, flags: [] },
      ],
    },
  },
};

/** `qemu-img info --backing-chain abs.qcow2`: qcow2 overlay with an absolute raw backing file. */
const CHAIN_INFO: ImageInfoJson[] = [
  {
    filename: 'abs.qcow2', format: 'qcow2', 'dirty-flag': false, 'actual-size': 200704, 'virtual-size': 104857600,
    'cluster-size': 65536, 'backing-filename': '/tmp/q/r.raw', 'full-backing-filename': '/tmp/q/r.raw',
    'backing-filename-format': 'raw', 'format-specific': { type: 'qcow2', data: { ...V3_PLAIN } },
  },
  { filename: '/tmp/q/r.raw', format: 'raw', 'dirty-flag': false, 'actual-size': 4096, 'virtual-size': 104857600 },
];

const INACTIVE = [262144, 520192, 778240, 1036288, 1294336, 1552384, 1810432].map((o) => ({ active: false, 'key-offset': o }));

/** LUKS-encrypted qcow2 (`-o encrypt.format=luks`). */
const LUKS_INFO: ImageInfoJson = {
  filename: 'enc.qcow2', format: 'qcow2', 'dirty-flag': false, 'actual-size': 2297856, 'virtual-size': 16777216,
  'cluster-size': 65536, encrypted: true,
  'format-specific': {
    type: 'qcow2',
    data: {
      ...V3_PLAIN,
      encrypt: {
        format: 'luks', 'cipher-alg': 'aes-256', 'cipher-mode': 'xts', 'ivgen-alg': 'plain64', 'hash-alg': 'sha256',
        'payload-offset': 2068480, 'master-key-iters': 107857, uuid: '49bb7a96-bf70-489e-9097-07162477fbfd',
        slots: [{ active: true, iters: 434013, stripes: 4000, 'key-offset': 4096 }, ...INACTIVE],
      },
    },
  },
};

/** data_file + data_file_raw, extended_l2, 128k clusters, zstd, lazy refcounts, refcount_bits=1. */
const DATA_FILE_INFO: ImageInfoJson = {
  filename: 'df.qcow2', format: 'qcow2', 'dirty-flag': false, 'actual-size': 1708032, 'virtual-size': 10737418240,
  'cluster-size': 131072,
  'format-specific': {
    type: 'qcow2',
    data: {
      compat: '1.1', 'data-file': 'd.raw', 'data-file-raw': true, 'extended-l2': true, 'lazy-refcounts': true, corrupt: false,
      'refcount-bits': 1, 'compression-type': 'zstd',
    },
  },
};

/** Lazy refcounts, writer killed: dirty bit set. */
const DIRTY_INFO: ImageInfoJson = {
  filename: 'dirty.qcow2', format: 'qcow2', 'dirty-flag': true, 'actual-size': 331776, 'virtual-size': 1048576,
  'cluster-size': 65536, 'format-specific': { type: 'qcow2', data: { ...V3_PLAIN, 'lazy-refcounts': true } },
};

/** Snapshot names needing JSON escapes and byte-wise padding. */
const ESCAPES_INFO: ImageInfoJson = {
  filename: 's7.qcow2', format: 'qcow2', 'dirty-flag': false, 'actual-size': 270336, 'virtual-size': 1073741824,
  'cluster-size': 65536,
  snapshots: [
    { id: '1', name: 'name with "quotes" \\ and\ttab/slash', 'vm-state-size': 1536, 'date-sec': 1700000000, 'date-nsec': 5, 'vm-clock-sec': 3723, 'vm-clock-nsec': 456789012, icount: 0 },
    { id: '2', name: 'ünïcödé 日本 😀 \u007f', 'vm-state-size': 0, 'date-sec': 1795308817, 'date-nsec': 29669000, 'vm-clock-sec': 0, 'vm-clock-nsec': 0 },
    { id: '3', name: 'ctl\u0001\u001f', 'vm-state-size': 4294967296, 'date-sec': 1795308817, 'date-nsec': 29669000, 'vm-clock-sec': 0, 'vm-clock-nsec': 0 },
  ],
  'format-specific': { type: 'qcow2', data: { ...V3_PLAIN } },
};

/** Rows of `qemu-img snapshot -l` / info: [input, line with TZ=UTC, line with TZ=America/New_York]. */
const ROWS: Array<[SnapshotInfoJson, string, string]> = [
  [{"id":"5","name":"s1000","vm-state-size":1000,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "5         s1000            0.977 KiB 2026-11-22 00:44:30 00:00:00.000          0",
    "5         s1000            0.977 KiB 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"15","name":"s1023488","vm-state-size":1023488,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "15        s1023488         1e+03 KiB 2026-11-22 00:44:30 00:00:00.000          0",
    "15        s1023488         1e+03 KiB 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"27","name":"s1099199120913203","vm-state-size":1099199120913203,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "27        s1099199120913203 1e+03 TiB 2026-11-22 00:44:30 00:00:00.000          0",
    "27        s1099199120913203 1e+03 TiB 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"33","name":"s9007199254740991","vm-state-size":9007199254740991,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "33        s9007199254740991    8 PiB 2026-11-22 00:44:30 00:00:00.000          0",
    "33        s9007199254740991    8 PiB 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"104","name":"c3723456789012","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":3723,"vm-clock-nsec":456789012,"icount":0},
    "104       c3723456789012        0 B 2026-11-22 00:44:30 01:02:03.456          0",
    "104       c3723456789012        0 B 2026-11-21 19:44:30 01:02:03.456          0"],
  [{"id":"106","name":"c360000000000000","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":360000,"vm-clock-nsec":0,"icount":0},
    "106       c360000000000000      0 B 2026-11-22 00:44:30100:00:00.000          0",
    "106       c360000000000000      0 B 2026-11-21 19:44:30100:00:00.000          0"],
  [{"id":"107","name":"c8640001234567890","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":8640001,"vm-clock-nsec":234567890,"icount":0},
    "107       c8640001234567890      0 B 2026-11-22 00:44:302400:00:01.234          0",
    "107       c8640001234567890      0 B 2026-11-21 19:44:302400:00:01.234          0"],
  [{"id":"200","name":"icount-absent","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0},
    "200       icount-absent         0 B 2026-11-22 00:44:30 00:00:00.000           ",
    "200       icount-absent         0 B 2026-11-21 19:44:30 00:00:00.000           "],
  [{"id":"201","name":"icount-minus1","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0},
    "201       icount-minus1         0 B 2026-11-22 00:44:30 00:00:00.000           ",
    "201       icount-minus1         0 B 2026-11-21 19:44:30 00:00:00.000           "],
  [{"id":"202","name":"icount-big","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":123456789012345},
    "202       icount-big            0 B 2026-11-22 00:44:30 00:00:00.000123456789012345",
    "202       icount-big            0 B 2026-11-21 19:44:30 00:00:00.000123456789012345"],
  [{"id":"204","name":"extra8","vm-state-size":5,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0},
    "204       extra8                5 B 2026-11-22 00:44:30 00:00:00.000           ",
    "204       extra8                5 B 2026-11-21 19:44:30 00:00:00.000           "],
  [{"id":"206","name":"name with \"quotes\" \\ and\ttab/slash","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "206       name with \"quotes\" \\ and\ttab/slash      0 B 2026-11-22 00:44:30 00:00:00.000          0",
    "206       name with \"quotes\" \\ and\ttab/slash      0 B 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"207","name":"ünïcödé 日本 😀 ","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "207       ünïcödé 日本 😀       0 B 2026-11-22 00:44:30 00:00:00.000          0",
    "207       ünïcödé 日本 😀       0 B 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"208","name":"a-very-long-snapshot-name-exceeding-sixteen","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "208       a-very-long-snapshot-name-exceeding-sixteen      0 B 2026-11-22 00:44:30 00:00:00.000          0",
    "208       a-very-long-snapshot-name-exceeding-sixteen      0 B 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"1234567890123","name":"longid","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "1234567890123 longid                0 B 2026-11-22 00:44:30 00:00:00.000          0",
    "1234567890123 longid                0 B 2026-11-21 19:44:30 00:00:00.000          0"],
  [{"id":"209","name":"","vm-state-size":0,"date-sec":0,"date-nsec":0,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "209                             0 B 1970-01-01 00:00:00 00:00:00.000          0",
    "209                             0 B 1969-12-31 19:00:00 00:00:00.000          0"],
  [{"id":"210","name":"date","vm-state-size":0,"date-sec":4294967295,"date-nsec":999999999,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "210       date                  0 B 2106-02-07 06:28:15 00:00:00.000          0",
    "210       date                  0 B 2106-02-07 01:28:15 00:00:00.000          0"],
  [{"id":"211","name":"ctl\u0001\u001f","vm-state-size":0,"date-sec":1795308270,"date-nsec":364452000,"vm-clock-sec":0,"vm-clock-nsec":0,"icount":0},
    "211       ctl\u0001\u001f                 0 B 2026-11-22 00:44:30 00:00:00.000          0",
    "211       ctl\u0001\u001f                 0 B 2026-11-21 19:44:30 00:00:00.000          0"],
];

test('plain v3, v2 and raw images', () => {
  assert.equal(formatInfoHuman(A_INFO), A_HUMAN);
  assert.equal(formatInfoJson(A_INFO), A_JSON);
  assert.equal(formatInfoHuman(V2_INFO), V2_HUMAN);
  assert.equal(formatInfoJson(V2_INFO), V2_JSON);
  assert.equal(formatInfoHuman(RAW_INFO), RAW_HUMAN);
  assert.equal(formatInfoJson(RAW_INFO), RAW_JSON);
});

test('backing file with actual path, snapshots and bitmaps', () => {
  assert.equal(formatInfoHuman(OV_INFO), OV_HUMAN);
  assert.equal(formatInfoJson(OV_INFO), OV_JSON);
});

test('--backing-chain: blank line between images, JSON array', () => {
  assert.equal(formatInfoHuman(CHAIN_INFO), CHAIN_HUMAN);
  assert.equal(formatInfoJson(CHAIN_INFO), CHAIN_JSON);
});

test('LUKS encryption details, data file, dirty flag', () => {
  assert.equal(formatInfoHuman(LUKS_INFO), LUKS_HUMAN);
  assert.equal(formatInfoJson(LUKS_INFO), LUKS_JSON);
  assert.equal(formatInfoHuman(DATA_FILE_INFO), DATA_FILE_HUMAN);
  assert.equal(formatInfoHuman(DIRTY_INFO), DIRTY_HUMAN);
});

test('snapshot names: JSON escapes and byte-wise column padding', () => {
  assert.equal(formatInfoHuman(ESCAPES_INFO), ESCAPES_HUMAN);
  assert.equal(formatInfoJson(ESCAPES_INFO), ESCAPES_JSON);
});

test('snapshot rows: sizes, VM clock, icount, long names, dates in the local time zone', () => {
  for (const [row, utc] of ROWS) assert.equal(formatSnapshotRow(row), utc, row.name);
  const saved = process.env.TZ;
  process.env.TZ = 'America/New_York';
  try {
    for (const [row, , newYork] of ROWS) assert.equal(formatSnapshotRow(row), newYork, row.name);
  } finally {
    process.env.TZ = saved;
  }
});

test('snapshot list block as snapshot -l prints it', () => {
  assert.equal(formatSnapshotList([]), '');
  assert.equal(formatSnapshotList(OV_INFO.snapshots!),
    'Snapshot list:\n' +
    'ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n' +
    '1         snap1                 0 B 2026-11-22 00:44:30 00:00:00.000          0\n' +
    '2         second snap           0 B 2026-11-22 00:44:30 00:00:00.000          0\n');
});

test('lines qemu-img prints for facts the captured images did not have', () => {
  const { 'actual-size': _, ...noSize } = RAW_INFO;
  assert.match(formatInfoHuman(noSize), /^disk size: unavailable$/m);
  const { 'full-backing-filename': __, ...unresolved } = CHAIN_INFO[0]!;
  assert.match(formatInfoHuman(unresolved), /^backing file: \/tmp\/q\/r\.raw \(cannot determine actual path\)$/m);
  assert.doesNotMatch(formatInfoHuman(CHAIN_INFO[0]!), /actual path/);
});

test('key order follows QEMU\'s QDict hash order whatever the insertion order', () => {
  const schemaOrder = ['filename', 'format', 'dirty-flag', 'actual-size', 'virtual-size', 'cluster-size', 'encrypted',
    'backing-filename', 'full-backing-filename', 'backing-filename-format', 'snapshots', 'format-specific'];
  const expected = ['backing-filename-format', 'snapshots', 'virtual-size', 'filename', 'cluster-size', 'format', 'actual-size',
    'format-specific', 'full-backing-filename', 'encrypted', 'backing-filename', 'dirty-flag'];
  assert.deepEqual(qdictKeyOrder(schemaOrder), expected);
  assert.deepEqual(qdictKeyOrder([...schemaOrder].reverse()), expected);
  assert.deepEqual(qdictKeyOrder(['id', 'name', 'vm-state-size', 'date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec', 'icount']),
    ['icount', 'vm-clock-nsec', 'name', 'date-sec', 'date-nsec', 'vm-clock-sec', 'id', 'vm-state-size']);
});

const ENTRY: SnapshotEntry = {
  l1TableOffset: 0x40000, l1Size: 1, id: '1', name: 'snap1', dateSec: 1795308270, dateNsec: 364452000,
  vmClockNsec: 3723456789012, vmStateSize: 1536, diskSize: 1 << 30, icount: 0, extraData: new Uint8Array(24),
};

test('snapshotInfoJson: clock split, icount rule, QEMU\'s id and name limits', () => {
  assert.deepEqual(snapshotInfoJson(ENTRY), {
    id: '1', name: 'snap1', 'vm-state-size': 1536, 'date-sec': 1795308270, 'date-nsec': 364452000,
    'vm-clock-sec': 3723, 'vm-clock-nsec': 456789012, icount: 0,
  });
  assert.equal('icount' in snapshotInfoJson({ ...ENTRY, icount: -1 }), false);
  const { icount: _, ...noIcount } = ENTRY;
  assert.equal('icount' in snapshotInfoJson(noIcount), false);
  // qemu-img 7.2 shows at most 127 bytes of id and 255 of name; a split character shows as U+FFFD.
  const long = snapshotInfoJson({ ...ENTRY, id: 'i'.repeat(130), name: 'é'.repeat(130) });
  assert.equal(long.id, 'i'.repeat(127));
  assert.equal(long.name, `${'é'.repeat(127)}\uFFFD`);
  assert.equal(snapshotInfoJson({ ...ENTRY, name: 'n'.repeat(300) }).name.length, 255);
});

test('bitmapInfoJson: granularity in bytes, in-use before auto', () => {
  const bm: BitmapDirectoryEntry = {
    name: 'bm2', granularityBits: 16, flags: { inUse: true, auto: true }, type: 1, tableOffset: 0x1d0000, tableSize: 1, extraData: new Uint8Array(0),
  };
  assert.deepEqual(bitmapInfoJson(bm), { name: 'bm2', granularity: 65536, flags: ['in-use', 'auto'] });
  assert.deepEqual(bitmapInfoJson({ ...bm, granularityBits: 20, flags: { inUse: false, auto: false } }).flags, []);
});

test('qcow2FormatSpecific builds what qemu-img printed for each image', () => {
  const base = { compressionType: 'zlib', lazyRefcounts: false, refcountBits: 16, corrupt: false, extendedL2: false, hasDataFile: false, dataFileRaw: false } as const;
  assert.deepEqual(qcow2FormatSpecific({ ...base, version: 3 }), A_INFO['format-specific']);
  assert.deepEqual(qcow2FormatSpecific({ ...base, version: 2 }), V2_INFO['format-specific']);
  assert.deepEqual(qcow2FormatSpecific({
    ...base, version: 3, compressionType: 'zstd', lazyRefcounts: true, refcountBits: 1, extendedL2: true,
    dataFileName: 'd.raw', hasDataFile: true, dataFileRaw: true,
  }), DATA_FILE_INFO['format-specific']);
  const bitmaps: BitmapDirectoryEntry[] = [['bm0', 16, true], ['bm1', 20, true], ['bm2', 16, false]].map(([name, bits, auto]) => ({
    name: name as string, granularityBits: bits as number, flags: { inUse: false, auto: auto as boolean }, type: 1, tableOffset: 0x50000, tableSize: 1, extraData: new Uint8Array(0),
  }));
  assert.deepEqual(qcow2FormatSpecific({ ...base, version: 3, bitmaps }), OV_INFO['format-specific']);
  assert.equal('bitmaps' in qcow2FormatSpecific({ ...base, version: 3, bitmaps: [] }).data, false);
  assert.equal('bitmaps' in qcow2FormatSpecific({ ...base, version: 2, bitmaps }).data, false);
  // A data file without a name in the header still reports data-file-raw.
  const nameless = qcow2FormatSpecific({ ...base, version: 3, hasDataFile: true }).data;
  assert.equal(nameless['data-file-raw'], false);
  assert.equal('data-file' in nameless, false);
});

test('fullBackingFilename resolves like QEMU', () => {
  assert.equal(fullBackingFilename('ov.qcow2', 'base.qcow2'), 'base.qcow2');
  assert.equal(fullBackingFilename('/tmp/q/ov.qcow2', 'base.qcow2'), '/tmp/q/base.qcow2');
  assert.equal(fullBackingFilename('sub/o2.qcow2', 'base.qcow2'), 'sub/base.qcow2');
  assert.equal(fullBackingFilename('sub/o2.qcow2', '/tmp/q/r.raw'), '/tmp/q/r.raw');
  assert.equal(fullBackingFilename('sub/o2.qcow2', 'nbd://host/x'), 'nbd://host/x');
  assert.equal(fullBackingFilename('sub/o2.qcow2', 'dir/b:c'), 'sub/dir/b:c');
});
