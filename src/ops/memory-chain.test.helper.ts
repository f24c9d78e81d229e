// Test helper: qcow2/raw images and backing chains in memory, created the way qemu-img
// creates them, opened through the real Image engine.
import { jsCodecs } from '../codecs/codecs-js.js';
import { planQcow2Image, writeQcow2Image } from '../format/qcow2/create-layout.js';
import { resolveQcow2CreateOptions, type Qcow2CreateRequest } from '../format/qcow2/create-options.js';
import type { Image } from '../image/image.js';
import { openImage } from '../image/open-image.js';
import { MemoryStorage } from '../storage/memory-storage.js';

/**
 * Named in-memory files. Each open gets a fresh MemoryStorage over the latest bytes of the
 * name; the latest storage opened for a name is the one later opens (and `bytes`) see.
 */
export class MemoryFiles {
  readonly #latest = new Map<string, MemoryStorage>();
  readonly #formats = new Map<string, string>();

  /** Create a qcow2 image `name` (options as `qemu-img create -o`). */
  async createQcow2(name: string, request: Qcow2CreateRequest): Promise<void> {
    const storage = new MemoryStorage(new Uint8Array(0), name);
    await writeQcow2Image(planQcow2Image(resolveQcow2CreateOptions(request)), storage);
    this.#latest.set(name, storage);
    this.#formats.set(name, 'qcow2');
  }

  /** Create a raw image `name` holding `bytes`. */
  createRaw(name: string, bytes: Uint8Array): void {
    this.#latest.set(name, new MemoryStorage(bytes.slice(), name));
    this.#formats.set(name, 'raw');
  }

  /** The current bytes of `name`. */
  bytes(name: string): Uint8Array {
    const s = this.#latest.get(name);
    if (s === undefined) throw new Error(`no file ${name}`);
    return s.bytes();
  }

  #storage(name: string, readOnly: boolean): MemoryStorage {
    const s = new MemoryStorage(this.bytes(name).slice(), name, readOnly);
    if (!readOnly) this.#latest.set(name, s);
    return s;
  }

  /** Open `name` and its chain; backing files are looked up in this set by name. */
  open(name: string, options: { readOnly?: boolean; backing?: boolean } = {}): Promise<Image> {
    const readOnly = options.readOnly ?? true;
    return openImage(this.#storage(name, readOnly), {
      format: this.#formats.get(name) ?? 'qcow2',
      readOnly,
      codecs: jsCodecs,
      ...(options.backing === false ? { openBacking: false } : {}),
      policy: {
        mode: 'custom',
        open: async (req) => ({ storage: this.#storage(req.name, true), format: req.format ?? this.#formats.get(req.name) ?? 'raw' }),
      },
    });
  }

  /** Everything `name` reads, through its chain unless `backing` is false. */
  async content(name: string, options: { backing?: boolean } = {}): Promise<Uint8Array> {
    const img = await this.open(name, options);
    try {
      const buf = new Uint8Array(img.size);
      await img.read(buf, 0);
      return buf;
    } finally {
      await img.close();
    }
  }

  /** Apply writes to `name`: `[offset, byte, length]` data, or `[offset, 'zero', length]`. */
  async write(name: string, writes: readonly (readonly [number, number | 'zero', number])[]): Promise<void> {
    const img = await this.open(name, { readOnly: false });
    try {
      for (const [offset, what, length] of writes) {
        if (what === 'zero') await img.writeZeroes(offset, length);
        else await img.write(new Uint8Array(length).fill(what), offset);
      }
    } finally {
      await img.close();
    }
  }
}

/** Run-length summary of bytes, for readable assertion failures: "0+4096:1, 4096+512:0". */
export function runsOf(bytes: Uint8Array): string {
  const out: string[] = [];
  let start = 0;
  for (let i = 1; i <= bytes.length; i++) {
    if (i === bytes.length || bytes[i] !== bytes[start]) {
      out.push(`${start}+${i - start}:${bytes[start]}`);
      start = i;
    }
  }
  return out.join(', ');
}
