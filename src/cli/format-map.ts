import { Qcow2Error } from '../errors.js';
import type { MapEntry } from '../ops/map-entries.js';

/** Receives output text as it is produced (e.g. `(s) => process.stdout.write(s)`). */
export type Sink = (text: string) => void;

/** Streams a map: call `entry` (or `entries`) for the merged entries in order, then `end`. */
export interface MapWriter {
  entry(e: MapEntry): void;
  /** The next entries at once (one write for the lot). */
  entries(batch: readonly MapEntry[]): void;
  end(): void;
}

/** One entry as `qemu-img map --output=json` 7.2 prints it (no `compressed`, no `filename`). */
export function formatMapEntryJson(e: MapEntry): string {
  const offset = e.offset !== undefined ? `, "offset": ${e.offset}` : '';
  return `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}${offset}}`;
}

/**
 * JSON map output, byte-identical to qemu-img 7.2: `[` + entries joined by `,\n` + `]\n`.
 * An empty range prints qemu-img's single zero-length entry at `start`.
 *
 * @example
 * ```ts
 * const w = mapJsonWriter((s) => process.stdout.write(s), { start: 0 });
 * for await (const e of mapEntries(image)) w.entry(e);
 * w.end();
 * ```
 */
export function mapJsonWriter(write: Sink, opts: { start?: number } = {}): MapWriter {
  let count = 0;
  write('[');
  const entries = (batch: readonly MapEntry[]): void => {
    if (batch.length === 0) return;
    const parts = batch.map(formatMapEntryJson);
    write(count === 0 ? parts.join(',\n') : `,\n${parts.join(',\n')}`);
    count += batch.length;
  };
  return {
    entry: (e: MapEntry): void => entries([e]),
    entries,
    end(): void {
      if (count === 0) {
        write(formatMapEntryJson({ start: opts.start ?? 0, length: 0, depth: 0, present: false, zero: false, data: false, compressed: false }));
      }
      write(']\n');
    },
  };
}

/** C's `%#x`: "0" for zero, "0x..." otherwise. */
export function hexAlt(n: number): string {
  return n === 0 ? '0' : `0x${n.toString(16)}`;
}

/** The human map header line. */
export const MAP_HUMAN_HEADER = `${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`;

/** Message qemu-img prints (and exits 1) when a data range has no host offset. */
export const MAP_HUMAN_UNMAPPABLE = 'File contains external, encrypted or compressed clusters.';

/**
 * Human map output, byte-identical to qemu-img 7.2: a header, then one line per range holding
 * data that does not read as zeros (`%#-16x` columns). A data range without a host offset
 * (compressed or encrypted) throws `UNSUPPORTED` with qemu-img's message after the lines before
 * it were written; qemu-img forgives this for zero ranges except the first one.
 *
 * @example
 * ```ts
 * const w = mapHumanWriter((s) => process.stdout.write(s));
 * for await (const e of mapEntries(image)) w.entry(e); // may throw for compressed data
 * w.end();
 * ```
 */
export function mapHumanWriter(write: Sink): MapWriter {
  let first = true;
  write(MAP_HUMAN_HEADER);
  return {
    entries(batch: readonly MapEntry[]): void {
      for (const e of batch) this.entry(e);
    },
    entry(e: MapEntry): void {
      // qemu-img turns every entry after a printed one into "zero, no data" when it reads as
      // zero or has no data, so only the first entry can fail for zero data.
      const wasFirst = first;
      first = false;
      if (e.data && e.offset === undefined && (wasFirst || !e.zero)) {
        throw new Qcow2Error('UNSUPPORTED', MAP_HUMAN_UNMAPPABLE, { start: e.start });
      }
      if (e.data && !e.zero) {
        write(`${hexAlt(e.start).padEnd(16)}${hexAlt(e.length).padEnd(16)}${hexAlt(e.offset ?? 0).padEnd(16)}${e.filename ?? ''}\n`);
      }
    },
    end(): void {},
  };
}

/**
 * Write a whole map in qemu-img's `json` or `human` form as entries arrive.
 *
 * @example
 * ```ts
 * await writeMap(mapEntries(image, { start }), 'json', (s) => process.stdout.write(s), { start });
 * ```
 */
export async function writeMap(entries: AsyncIterable<MapEntry>, output: 'json' | 'human', write: Sink, opts: { start?: number } = {}): Promise<void> {
  const w = output === 'json' ? mapJsonWriter(write, opts) : mapHumanWriter(write);
  for await (const e of entries) w.entry(e);
  w.end();
}
