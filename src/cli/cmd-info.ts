import { parseCommandArgs } from './args.js';
import { CliError } from './cli-error.js';
import { formatInfoHuman, formatInfoJson, type ImageInfoJson } from './format-info.js';
import { imageInfo } from './image-info.js';
import type { CliIO } from './main.js';
import { openForCli, parseOutputFormat } from './open-for-cli.js';
import { infoUntrusted, UNTRUSTED_OPTION } from './untrusted.js';

const SPEC = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'output', long: 'output', arg: 'required' },
    { name: 'backing-chain', long: 'backing-chain' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'image-opts', long: 'image-opts' },
    UNTRUSTED_OPTION,
  ],
} as const;

/** `info [-f fmt] [--output=human|json] [--backing-chain] [-U] FILE` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('info', argv, SPEC);
  const output = parseOutputFormat(args.get('output'));
  if (args.positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  if (args.has('image-opts')) throw new CliError('--image-opts is not supported');
  const file = args.positionals[0]!;
  const chain = args.has('backing-chain');
  if (args.has('untrusted')) return infoUntrusted(file, { format: args.get('format'), output, backingChain: chain }, io);
  const image = await openForCli(file, { format: args.get('format'), backing: chain });
  try {
    const infos: ImageInfoJson[] = [];
    let name = file;
    for (let layer: typeof image | undefined = image; layer !== undefined; layer = layer.backing) {
      const info = await imageInfo(layer, name);
      infos.push(info);
      name = info['full-backing-filename'] ?? name;
      if (!chain) break;
    }
    io.stdout.write(output === 'json' ? formatInfoJson(chain ? infos : infos[0]!) : formatInfoHuman(chain ? infos : infos[0]!));
  } finally {
    await image.close();
  }
  return 0;
}
