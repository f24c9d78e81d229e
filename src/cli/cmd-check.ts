/**
 * `check [-f fmt] [-r leaks|all] [--output=human|json] [-q] [-U] FILE`: qemu-img 7.2's check,
 * same messages, JSON and exit codes (0 clean, 1 check not completed, 2 corruptions, 3 leaks
 * only, 63 for formats without a check such as raw).
 */
import { Qcow2Error } from '../errors.js';
import { probeFormat } from '../format/probe.js';
import { checkQcow2, type RepairMode } from '../ops/check/check-qcow2.js';
import { checkJsonFields, formatCheckHuman, formatRepairSummary } from '../ops/check/check-report.js';
import type { CheckReporter } from '../ops/check/check-types.js';
import type { Storage } from '../storage/storage.js';
import { NodeFileStorage } from '../storage/node-file-storage.js';
import { parseCommandArgs } from './args.js';
import { CliError } from './cli-error.js';
import { formatInfoJson, type ImageInfoJson } from './format-info.js';
import { prepareUntrustedCheck, UNTRUSTED_OPTION } from './untrusted.js';
import { PROGRAM, type CliIO } from './main.js';
import { parseOutputFormat } from './open-for-cli.js';

const SPEC = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'repair', short: 'r', arg: 'required' },
    { name: 'output', long: 'output', arg: 'required' },
    { name: 'quiet', short: 'q' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'cache', short: 'T', arg: 'required' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
    UNTRUSTED_OPTION,
  ],
} as const;

/** qemu-img's exit status for formats that have no check. */
export const EXIT_NO_CHECK = 63;

export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('check', argv, SPEC);
  let repair: RepairMode = 'none';
  const r = args.get('repair');
  if (r !== undefined) {
    if (r !== 'leaks' && r !== 'all') throw new CliError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${r}`, { usage: true });
    repair = r;
  }
  if (args.positionals.length !== 1) throw new CliError('Expecting one image file name', { usage: true });
  const output = parseOutputFormat(args.get('output'));
  if (args.has('image-opts')) throw new CliError('--image-opts is not supported');
  const file = args.positionals[0]!;
  const quiet = args.has('quiet');
  const format = args.get('format');
  if (format !== undefined && format !== 'qcow2' && format !== 'raw') {
    throw new CliError(`Could not open '${file}': Unknown driver '${format}'`);
  }

  let storage: Storage;
  try {
    storage = await NodeFileStorage.open(file, { readOnly: repair === 'none' });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(`Could not open '${file}': ${e.message}`, { cause: e });
    throw e;
  }
  try {
    // Untrusted: no probing, and the metadata walk is bounded before it starts.
    const limits = args.has('untrusted') ? await prepareUntrustedCheck(storage, format, repair, file) : undefined;
    const detected = format ?? (await probeFormat(storage));
    if (detected !== 'qcow2') {
      if (format === undefined && repair !== 'none') {
        io.stderr.write(`WARNING: Image format was not specified for '${file}' and probing guessed raw.\n`
          + '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n'
          + "         Specify the 'raw' format explicitly to remove the restrictions.\n");
      }
      io.stderr.write(`${PROGRAM}: This image format does not support checks\n`);
      return EXIT_NO_CHECK;
    }
    // A damaged image can produce a message per cluster: start a flush whenever the writer
    // asks for one, so its drain event is waited for as soon as the pipe is full.
    let flushing: Promise<void> | undefined;
    const say = (text: string): void => {
      if (io.stderr.write(text) || flushing !== undefined) return;
      flushing = io.stderr.flush().finally(() => {
        flushing = undefined;
      });
    };
    const reporter: CheckReporter = { line: (text) => say(`${text}\n`), error: (text) => say(`${PROGRAM}: ${text}\n`) };
    let outcome;
    try {
      outcome = await checkQcow2(storage, { repair, reporter, ...(limits !== undefined ? { maxArrayBytes: limits.maxArrayBytes } : {}) });
    } catch (e) {
      if (e instanceof Qcow2Error) throw new CliError(`Could not open '${file}': ${e.message}`, { cause: e });
      throw e;
    }
    if (outcome.repaired !== undefined && output === 'human' && !quiet) {
      io.stdout.write(formatRepairSummary(outcome.repaired.leaks, outcome.repaired.corruptions));
    }
    if (outcome.result === undefined) {
      io.stderr.write(`${PROGRAM}: Check failed: ${outcome.failure?.errnoText ?? 'Input/output error'}\n`);
      return 1;
    }
    if (!quiet) {
      io.stdout.write(output === 'json'
        ? formatInfoJson(checkJsonFields(outcome.result, file, 'qcow2') as unknown as ImageInfoJson)
        : formatCheckHuman(outcome.result));
    }
    if (outcome.result.checkErrors > 0) io.stderr.write(`${PROGRAM}: Check failed\n`);
    return outcome.exitCode;
  } finally {
    await storage.close();
  }
}
