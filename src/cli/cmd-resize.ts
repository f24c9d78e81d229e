import { Qcow2Error } from '../errors.js';
import { strtosz } from '../util/size.js';
import { parseCommandArgs } from './args.js';
import { CliError } from './cli-error.js';
import type { CliIO } from './main.js';
import { openForCli } from './open-for-cli.js';

const SPEC = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'preallocation', long: 'preallocation', arg: 'required' },
    { name: 'shrink', long: 'shrink' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'image-opts', long: 'image-opts' },
    { name: 'object', long: 'object', arg: 'required' },
  ],
} as const;

const PREALLOCATION = ['off', 'metadata', 'falloc', 'full'];

/** `resize [-f fmt] [--preallocation=MODE] [--shrink] [-q] FILE [+|-]SIZE` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  // A leading '-' on the size is an operand, not an option, as in qemu-img (e.g. `resize f -1G`).
  const sizeIndex = argv.findIndex((a, i) => i > 0 && /^-\d/.test(a));
  const sizeArg = sizeIndex >= 0 ? argv[sizeIndex] : undefined;
  const rest = sizeIndex >= 0 ? argv.filter((_, i) => i !== sizeIndex) : argv;
  const args = parseCommandArgs('resize', rest, SPEC);
  const positionals = sizeArg === undefined ? args.positionals : [...args.positionals, sizeArg];
  if (positionals.length !== 2) throw new CliError('Not enough arguments', { usage: true });
  const [file, text] = positionals as [string, string];
  const prealloc = args.get('preallocation') ?? 'off';
  if (!PREALLOCATION.includes(prealloc)) throw new CliError(`Invalid preallocation mode '${prealloc}'`);
  const relative = text.startsWith('+') ? 1 : text.startsWith('-') ? -1 : 0;
  const parsed = strtosz(relative === 0 ? text : text.slice(1));
  if (!parsed.ok || parsed.value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CliError("Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.");
  }
  const amount = Number(parsed.value);
  const image = await openForCli(file, { format: args.get('format'), readOnly: false });
  try {
    const old = image.size;
    const size = relative === 0 ? amount : old + relative * amount;
    if (size <= 0) throw new CliError('New image size must be positive');
    if (image.driver.format === 'qcow2' && size % 512 !== 0) throw new CliError('The new size must be a multiple of 512');
    if (size < old) {
      if (prealloc !== 'off') throw new CliError('Preallocation can only be used for growing images');
      if (!args.has('shrink')) {
        io.stderr.write("qcow2kit: Use the --shrink option to perform a shrink operation.\n");
        io.stderr.write("qcow2kit: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.\n");
        return 1;
      }
    }
    try {
      await image.resize(size);
      // Preallocation: the new area is allocated and zero-filled on disk.
      if (prealloc !== 'off' && size > old) {
        for (let p = old; p < size; p += 4 << 20) await image.write(new Uint8Array(Math.min(4 << 20, size - p)), p);
      }
      await image.flush();
    } catch (e) {
      if (e instanceof Qcow2Error) throw new CliError(e.message, { cause: e });
      throw e;
    }
  } finally {
    await image.close();
  }
  if (!args.has('quiet')) io.stdout.write('Image resized.\n');
  return 0;
}
