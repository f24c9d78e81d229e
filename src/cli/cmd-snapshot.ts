import { snapshotInfoJson, formatSnapshotList } from './format-info.js';
import { parseCommandArgs } from './args.js';
import { CliError } from './cli-error.js';
import type { CliIO } from './main.js';
import { openForCli } from './open-for-cli.js';
import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';

const SPEC = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'list', short: 'l' },
    { name: 'apply', short: 'a', arg: 'required' },
    { name: 'create', short: 'c', arg: 'required' },
    { name: 'delete', short: 'd', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'image-opts', long: 'image-opts' },
  ],
} as const;

/** `snapshot [-l | -a NAME | -c NAME | -d NAME] [-f fmt] [-U] FILE` (listing for now). */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('snapshot', argv, SPEC);
  const actions = ['list', 'apply', 'create', 'delete'].filter((a) => args.has(a));
  if (actions.length > 1) throw new CliError('Cannot mix snapshot actions', { usage: true });
  if (args.positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  const action = actions[0] ?? 'list';
  if (action !== 'list') throw new CliError(`Snapshot ${action} is not supported yet`);
  const file = args.positionals[0]!;
  const image = await openForCli(file, { format: args.get('format') });
  try {
    // qemu-img lists only when -l is given; with no action it opens the image and does nothing.
    if (args.has('list')) {
      // Like qemu-img: nothing at all for an image without snapshots or without snapshot support.
      const driver = image.driver;
      if (driver instanceof Qcow2Driver) io.stdout.write(formatSnapshotList(driver.meta.snapshots.map(snapshotInfoJson)));
    }
  } finally {
    await image.close();
  }
  return 0;
}
