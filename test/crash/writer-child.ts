/**
 * Crash-test writer: opens an image writable through the built library (dist/node.js) and
 * writes, zeroes, discards and flushes at random with many requests in flight until it is
 * killed. Run by crash.test.ts, which SIGKILLs it at a random moment.
 *
 *   node dist-test/crash/writer-child.js IMAGE SEED [DEPTH]
 *
 * The image is cut into chunks of `CHUNK` bytes. Every fourth chunk is "stable": it is written
 * once (an unaligned range, a known pattern), then flushed, and never touched again; after the
 * flush the child prints `stable OFFSET LENGTH PATTERN`, so the parent can check that flushed data
 * survives the crash while the random traffic in the other chunks keeps changing the metadata
 * (L2 tables, refcount blocks, the refcount table) it shares with them.
 *
 * Protocol on stdout: `ready SIZE` once the image is open and the first requests are in flight,
 * then `stable ...` lines, `ops N` every 256 completed operations.
 */
import { openImageFile } from '../../dist/node.js';

const CHUNK = 128 * 1024;

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

async function main(): Promise<void> {
  const [path, seedText, depthText] = process.argv.slice(2);
  if (path === undefined || seedText === undefined) throw new Error('usage: writer-child IMAGE SEED [DEPTH]');
  const next = prng(Number(seedText));
  const rand = (n: number): number => next() % n;
  const depth = Number(depthText ?? 32);

  const image = await openImageFile(path, { readOnly: false });
  const size = image.size;
  const chunks = Math.floor(size / CHUNK);
  const out = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };

  /** A random range inside a run of non-stable chunks (chunk index % 4 !== 0). */
  const randomRange = (): [number, number] => {
    const group = rand(Math.floor(chunks / 4));
    const start = (group * 4 + 1) * CHUNK;
    const span = 3 * CHUNK;
    const off = start + (rand(2) === 0 ? rand(span) : 512 * rand(span / 512));
    const max = start + span - off;
    const len = 1 + rand(Math.min(max, rand(4) === 0 ? span : 40 * 1024));
    return [off, len];
  };

  let ops = 0;
  // A few hundred KiB per pattern byte; random ops use 32 patterns to bound memory.
  const buffers = new Map<number, Uint8Array>();
  const patternBuffer = (len: number, pattern: number): Uint8Array => {
    let b = buffers.get(pattern);
    if (b === undefined || b.length < len) {
      b = new Uint8Array(Math.max(len, 3 * CHUNK)).fill(pattern);
      buffers.set(pattern, b);
    }
    return b.subarray(0, len);
  };

  const oneOp = async (): Promise<void> => {
    const [off, len] = randomRange();
    const r = rand(100);
    if (r < 60) await image.write(patternBuffer(len, 1 + rand(32) * 7), off);
    else if (r < 77) await image.writeZeroes(off, len, { unmap: rand(2) === 0 });
    else if (r < 97) await image.discard(off, len);
    else await image.flush();
    ops++;
    if ((ops & 255) === 0) out(`ops ${ops}`);
  };

  const worker = async (): Promise<void> => {
    for (;;) await oneOp();
  };

  /** Writes the stable chunks one by one, flushing after each and reporting it. */
  const stableWriter = async (): Promise<void> => {
    for (let group = 0; group * 4 < chunks; group++) {
      const chunkStart = group * 4 * CHUNK;
      const off = chunkStart + rand(CHUNK / 2);
      const len = 1 + rand(chunkStart + CHUNK - off);
      const pattern = 1 + rand(255);
      await image.write(patternBuffer(len, pattern), off);
      await image.flush();
      out(`stable ${off} ${len} ${pattern}`);
    }
  };

  const running = [stableWriter()];
  for (let i = 0; i < depth; i++) running.push(worker());
  out(`ready ${size}`);
  await Promise.all(running);
}

main().catch((e: unknown) => {
  process.stderr.write(`writer-child: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
