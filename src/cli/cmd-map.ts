import { mapEntryBatches } from '../ops/map-entries.js';
import { parseSizeArg } from '../util/size.js';
import { parseCommandArgs } from './args.js';
import { CliError } from './cli-error.js';
import { mapHumanWriter, mapJsonWriter } from './format-map.js';
import type { CliIO } from './main.js';
import { openForCli, parseOutputFormat } from './open-for-cli.js';
import { openUntrustedForCli, UNTRUSTED_OPTION } from './untrusted.js';

const SPEC = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'output', long: 'output', arg: 'required' },
    { name: 'start-offset', long: 'start-offset', arg: 'required' },
    { name: 'max-length', long: 'max-length', arg: 'required' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'image-opts', long: 'image-opts' },
    UNTRUSTED_OPTION,
  ],
} as const;

/** `map [-f fmt] [--output=human|json] [--start-offset N] [--max-length N] [-U] FILE` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('map', argv, SPEC);
  const output = parseOutputFormat(args.get('output'));
  const startText = args.get('start-offset');
  const lengthText = args.get('max-length');
  const start = startText === undefined ? 0 : parseSizeArg('start offset', startText);
  const maxLength = lengthText === undefined ? undefined : parseSizeArg('max length', lengthText);
  if (args.positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  if (args.has('image-opts')) throw new CliError('--image-opts is not supported');
  const file = args.positionals[0]!;
  const image = args.has('untrusted')
    ? await openUntrustedForCli(file, { format: args.get('format') })
    : await openForCli(file, { format: args.get('format'), sequential: true });
  try {
    let pressure = false;
    const sink = (text: string): void => {
      if (!io.stdout.write(text)) pressure = true;
    };
    const writer = output === 'json' ? mapJsonWriter(sink, { start }) : mapHumanWriter(sink);
    const range = maxLength === undefined ? { start } : { start, length: maxLength };
    for await (const batch of mapEntryBatches(image, range)) {
      writer.entries(batch);
      if (pressure) {
        pressure = false;
        await io.stdout.flush();
      }
    }
    writer.end();
  } finally {
    await image.close();
  }
  return 0;
}
