import { Qcow2Error } from '../errors.js';
import { Qcow2Driver } from '../format/qcow2/qcow2-driver.js';
import { parseCommandArgs } from './args.js';
import { CliError } from './cli-error.js';
import { formatSnapshotList, snapshotInfoJson } from './format-info.js';
import type { CliIO } from './main.js';
import { openForCli } from './open-for-cli.js';

const SPEC = {
  options: [
    { name: 'list', short: 'l' },
    { name: 'apply', short: 'a', arg: 'required' },
    { name: 'create', short: 'c', arg: 'required' },
    { name: 'delete', short: 'd', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'image-opts', long: 'image-opts' },
    { name: 'object', long: 'object', arg: 'required' },
  ],
} as const;

/** `snapshot [-l | -a NAME | -c NAME | -d NAME] [-U] [-q] FILE` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('snapshot', argv, SPEC);
  const actions = ['list', 'apply', 'create', 'delete'].filter((a) => args.has(a));
  if (actions.length > 1) throw new CliError("Cannot mix '-l', '-a', '-c', '-d'", { usage: true });
  if (args.positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  const action = actions[0];
  const file = args.positionals[0]!;
  const image = await openForCli(file, { readOnly: action === undefined || action === 'list' });
  try {
    const driver = image.driver;
    if (action === 'list') {
      // Like qemu-img: nothing at all for an image without snapshots or without snapshot support.
      if (driver instanceof Qcow2Driver) io.stdout.write(formatSnapshotList(driver.meta.snapshots.map(snapshotInfoJson)));
      return 0;
    }
    if (action === undefined) return 0;
    const name = args.get(action)!;
    const verb = action === 'create' ? 'create' : action === 'apply' ? 'apply' : 'delete';
    const ops = driver instanceof Qcow2Driver ? driver.snapshots : undefined;
    try {
      if (ops === undefined) throw new Qcow2Error('UNSUPPORTED', '-95 (Operation not supported)');
      if (action === 'create') await ops.create({ name });
      else if (action === 'apply') await ops.apply(name);
      else await ops.delete(name);
    } catch (e) {
      if (!(e instanceof Qcow2Error)) throw e;
      const reason = /Can't find snapshot/.test(e.message)
        ? (action === 'apply' ? 'Failed to load snapshot: No such file or directory' : 'snapshot not found')
        : e.message;
      throw new CliError(`Could not ${verb} snapshot '${name}': ${reason}`, { cause: e });
    }
  } finally {
    await image.close();
  }
  return 0;
}
