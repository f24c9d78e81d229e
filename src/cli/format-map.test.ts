import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Qcow2Error } from '../errors.js';
import type { MapEntry } from '../ops/map-entries.js';
import { formatMapEntryJson, hexAlt, mapHumanWriter, mapJsonWriter, writeMap } from './format-map.js';

const MiB = 1024 * 1024;

function e(start: number, length: number, depth: number, present: boolean, zero: boolean, data: boolean, offset?: number, filename?: string, compressed = false): MapEntry {
  const out: MapEntry = { start, length, depth, present, zero, data, compressed };
  if (offset !== undefined) out.offset = offset;
  if (filename !== undefined) out.filename = filename;
  return out;
}

async function* from(entries: MapEntry[]): AsyncGenerator<MapEntry> {
  yield* entries;
}

async function render(entries: MapEntry[], output: 'json' | 'human', start = 0): Promise<string> {
  let s = '';
  await writeMap(from(entries), output, (t) => { s += t; }, { start });
  return s;
}

/** ov.qcow2: 1 MiB in its backing file, 1 MiB of its own, 62 MiB unallocated. */
const OVERLAY = [
  e(0, MiB, 1, true, false, true, 327680, 'base.qcow2'),
  e(MiB, MiB, 0, true, false, true, 458752, 'ov.qcow2'),
  e(2 * MiB, 65011712, 1, false, true, false),
];

/** c.qcow2: compressed, data, zero, zero with a host offset, unallocated. */
const MIXED = [
  e(0, 65536, 0, true, false, true, undefined, undefined, true),
  e(65536, 65536, 0, true, false, true, 393216, 'c.qcow2'),
  e(131072, 65536, 0, true, true, false),
  e(196608, 65536, 0, true, true, false, 458752, 'c.qcow2'),
  e(262144, 786432, 0, false, true, false),
];

test('JSON output is byte-identical to qemu-img 7.2', async () => {
  assert.equal(await render(OVERLAY, 'json'),
    '[{ "start": 0, "length": 1048576, "depth": 1, "present": true, "zero": false, "data": true, "offset": 327680},\n' +
    '{ "start": 1048576, "length": 1048576, "depth": 0, "present": true, "zero": false, "data": true, "offset": 458752},\n' +
    '{ "start": 2097152, "length": 65011712, "depth": 1, "present": false, "zero": true, "data": false}]\n');
  assert.equal(await render(MIXED, 'json'),
    '[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true},\n' +
    '{ "start": 65536, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 393216},\n' +
    '{ "start": 131072, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false},\n' +
    '{ "start": 196608, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false, "offset": 458752},\n' +
    '{ "start": 262144, "length": 786432, "depth": 0, "present": false, "zero": true, "data": false}]\n');
  assert.equal(await render([e(0, 1073741824, 0, false, true, false)], 'json'),
    '[{ "start": 0, "length": 1073741824, "depth": 0, "present": false, "zero": true, "data": false}]\n');
});

test('an empty range prints qemu-img\'s zero-length entry at the start offset', async () => {
  assert.equal(await render([], 'json'), '[{ "start": 0, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n');
  assert.equal(await render([], 'json', 2147483648),
    '[{ "start": 2147483648, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n');
  assert.equal(await render([], 'human'), 'Offset          Length          Mapped to       File\n');
});

test('human output is byte-identical to qemu-img 7.2', async () => {
  assert.equal(await render(OVERLAY, 'human'),
    'Offset          Length          Mapped to       File\n' +
    '0               0x100000        0x50000         base.qcow2\n' +
    '0x100000        0x100000        0x70000         ov.qcow2\n');
  // Raw data file at host offset 0 prints "0" in the third column.
  assert.equal(await render([e(0, 262144, 0, true, false, true, 0, 'd2.raw'), e(262144, 786432, 0, false, true, false)], 'human'),
    'Offset          Length          Mapped to       File\n' +
    '0               0x40000         0               d2.raw\n');
  // qemu-img map --start-offset=64k c.qcow2
  assert.equal(await render(MIXED.slice(1), 'human', 65536),
    'Offset          Length          Mapped to       File\n' +
    '0x10000         0x10000         0x60000         c.qcow2\n');
});

test('human output fails on compressed data after printing what came before', async () => {
  let out = '';
  const w = mapHumanWriter((s) => { out += s; });
  w.entry(OVERLAY[1]!);
  assert.throws(() => w.entry(e(2 * MiB, 65536, 0, true, false, true, undefined, undefined, true)), (err: unknown) =>
    err instanceof Qcow2Error && err.code === 'UNSUPPORTED' && err.message === 'File contains external, encrypted or compressed clusters.');
  assert.equal(out, 'Offset          Length          Mapped to       File\n0x100000        0x100000        0x70000         ov.qcow2\n');
  await assert.rejects(render(MIXED, 'human'), /compressed clusters/);
});

test('human output forgives zero data without offset except as the first entry', () => {
  const zeroData = e(65536, 65536, 0, true, true, true);
  const later = mapHumanWriter(() => {});
  later.entry(e(0, 65536, 0, true, true, false));
  assert.doesNotThrow(() => later.entry(zeroData));
  const firstOne = mapHumanWriter(() => {});
  assert.throws(() => firstOne.entry(zeroData), Qcow2Error);
});

test('JSON writer streams: each entry is written when it arrives', () => {
  const chunks: string[] = [];
  const w = mapJsonWriter((s) => chunks.push(s));
  w.entry(OVERLAY[0]!);
  assert.equal(chunks.join(''), '[' + formatMapEntryJson(OVERLAY[0]!));
  w.entry(OVERLAY[1]!);
  assert.equal(chunks.at(-1), ',\n' + formatMapEntryJson(OVERLAY[1]!));
  w.end();
  assert.equal(chunks.at(-1), ']\n');
});

test('%#x formatting', () => {
  assert.equal(hexAlt(0), '0');
  assert.equal(hexAlt(0x10000), '0x10000');
  assert.equal(hexAlt(2 ** 52 + 0xabc), '0x10000000000abc');
});

test('entries in batches print the same as one by one, whatever the batch boundaries', () => {
  const all = [...MIXED, ...OVERLAY.map((x) => ({ ...x, start: x.start + 2 * MiB }))];
  const cases = [[mapJsonWriter, all], [mapHumanWriter, all.filter((x) => !x.compressed)]] as const;
  for (const [make, entries] of cases) {
    const render = (feed: (w: ReturnType<typeof make>) => void): string => {
      let s = '';
      const w = make((t) => { s += t; });
      feed(w);
      w.end();
      return s;
    };
    const single = render((w) => { for (const x of entries) w.entry(x); });
    assert.ok(single.length > 100);
    assert.equal(render((w) => w.entries(entries)), single);
    assert.equal(render((w) => { for (const b of [[], entries.slice(0, 1), entries.slice(1, 4), [], entries.slice(4)]) w.entries(b); }), single);
  }
  // Human output stops at compressed data (here the first entry) in a batch too.
  let text = '';
  assert.throws(() => mapHumanWriter((t) => { text += t; }).entries(all), Qcow2Error);
  assert.equal(text, 'Offset          Length          Mapped to       File\n');
});
