/**
 * `qcow2kit compare`: qemu-img compare with its messages and exit codes
 * (0 identical, 1 different, 2 open error, 3 allocation-check error, 4 read error).
 */
import { Qcow2Error } from '../errors.js';
import type { Image } from '../image/image.js';
import { compareImages } from '../ops/compare.js';
import { QemuProgress } from '../ops/qemu-progress.js';
import { parseCommandArgs, type ArgSpec } from './args.js';
import { CliError } from './cli-error.js';
import { openCliImage, parseCacheMode, printCliError, progressWriter } from './cmd-convert.js';
import type { CliIO } from './main.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'format1', short: 'f', arg: 'required' },
    { name: 'format2', short: 'F', arg: 'required' },
    { name: 'cache', short: 'T', arg: 'required' },
    { name: 'progress', short: 'p' },
    { name: 'quiet', short: 'q' },
    { name: 'strict', short: 's' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
  ],
};

/** `qcow2kit compare [-f fmt] [-F fmt] [-T cache] [-p] [-q] [-s] [-U] A B`. */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('compare', argv, SPEC);
  const quiet = args.has('quiet');
  const progress = args.has('progress') && !quiet;
  const strict = args.has('strict');
  if (args.positionals.length !== 2) throw new CliError('Expecting two image file names', { usage: true });
  if (args.has('object') || args.has('image-opts')) {
    throw new CliError(`compare: option ${args.has('object') ? '--object' : '--image-opts'} is not supported yet`, { exitCode: 2 });
  }
  const [name1, name2] = args.positionals as [string, string];
  const say = (text: string): void => {
    if (!quiet) io.stdout.write(text);
  };

  const bar = progress ? new QemuProgress(2.0, progressWriter(io)) : undefined;
  const images: Image[] = [];
  let code: number;
  try {
    code = await compareFiles();
  } finally {
    await Promise.allSettled(images.map((img) => img.close()));
  }
  await io.stderr.flush(); // error lines come before the progress line's end, as in qemu-img
  bar?.end();
  return code;

  async function compareFiles(): Promise<number> {
    const cache = args.get('cache') ?? 'writeback';
    if (parseCacheMode(cache) === undefined) {
      printCliError(io, new CliError(`Invalid source cache option: ${cache}`));
      return 2;
    }
    for (const [name, fmt] of [
      [name1, args.get('format1')],
      [name2, args.get('format2')],
    ] as const) {
      try {
        images.push(await openCliImage(name, { format: fmt }));
      } catch (e) {
        printCliError(io, e);
        return 2;
      }
    }
    const [a, b] = images as [Image, Image];
    bar?.set(0);
    try {
      const r = await compareImages(a, b, {
        strict,
        ...(bar ? { progress: (p: number) => bar.set(p) } : {}),
        onSizeMismatch: () => say('Warning: Image size mismatch!\n'),
      });
      switch (r.status) {
        case 'identical':
          say('Images are identical.\n');
          break;
        case 'content-mismatch':
          say(`Content mismatch at offset ${r.offset}!\n`);
          break;
        case 'block-status-mismatch':
          say(`Strict mode: Offset ${r.offset} block status mismatch!\n`);
          break;
        case 'size-mismatch':
          say('Strict mode: Image size mismatch!\n');
          break;
      }
      return r.exitCode;
    } catch (e) {
      const ctx = e instanceof Qcow2Error ? e.context : {};
      const name = ctx['image'] === 1 ? name2 : name1;
      if (ctx['stage'] === 'block-status') {
        printCliError(io, new CliError(`Sector allocation test failed for ${name}`));
        return 3;
      }
      if (ctx['stage'] === 'read') {
        const reason = e instanceof Error ? e.message : String(e);
        printCliError(io, new CliError(`Error while reading offset ${String(ctx['offset'])} of ${name}: ${reason}`));
        return 4;
      }
      throw e;
    }
  }
}
