/**
 * `qcow2kit dd`: qemu-img dd, copying part of an image into a newly created raw or qcow2
 * image, with qemu-img 7.2's operands, sizes and messages.
 */
import { Qcow2Error } from '../errors.js';
import { planQcow2Image, writeQcow2Image } from '../format/qcow2/create-layout.js';
import { resolveQcow2CreateOptions } from '../format/qcow2/create-options.js';
import type { Image } from '../image/image.js';
import { openImageFile } from '../open-image-file-node.js';
import { ddCopy, planDd, type DdOperands } from '../ops/dd.js';
import { NodeFileStorage } from '../storage/node-file-storage.js';
import { parseSizeArg, strtosz } from '../util/size.js';
import { parseCommandArgs, type ArgSpec } from './args.js';
import { CliError } from './cli-error.js';
import type { CliIO } from './main.js';
import { PROGRAM } from './main.js';
import { QEMU_CREATABLE_FORMATS, QEMU_FORMATS } from './cmd-measure.js';
import { openForCli } from './open-for-cli.js';

const SPEC: ArgSpec = {
  options: [
    { name: 'format', short: 'f', arg: 'required' },
    { name: 'output-format', short: 'O', arg: 'required' },
    { name: 'force-share', short: 'U', long: 'force-share' },
    { name: 'object', long: 'object', arg: 'required' },
    { name: 'image-opts', long: 'image-opts' },
  ],
};

const INT_MAX = 0x7fffffff;

/** A size operand, checked by qemu-img's cvtnum() and kept exact. */
function sizeOperand(name: string, text: string, min = 0): bigint {
  parseSizeArg(name, text, { min, ...(name === 'bs' ? { max: INT_MAX } : {}) });
  const r = strtosz(text);
  if (!r.ok) throw new Qcow2Error('INVALID_ARGUMENT', `Invalid ${name} specified`, { name });
  return r.value;
}

/** `dd [-f fmt] [-O fmt] [bs=N] [count=N] [skip=N] if=IN of=OUT` */
export async function run(argv: string[], io: CliIO): Promise<number> {
  const args = parseCommandArgs('dd', argv, SPEC);
  if (args.has('object')) throw new CliError('--object is not supported');
  const format = args.get('format');
  const outFormat = args.get('output-format') ?? 'raw';
  const op: DdOperands = { blockSize: 512n };
  let input: string | undefined;
  let output: string | undefined;
  for (const arg of args.positionals) {
    const eq = arg.indexOf('=');
    if (eq < 0) throw new CliError(`unrecognized operand ${arg}`);
    const key = arg.slice(0, eq);
    const value = arg.slice(eq + 1);
    switch (key) {
      case 'bs':
        op.blockSize = sizeOperand('bs', value, 1);
        break;
      case 'count':
        op.count = sizeOperand('count', value);
        break;
      case 'if':
        input = value;
        break;
      case 'of':
        output = value;
        break;
      case 'skip':
        op.skip = sizeOperand('skip', value);
        break;
      default:
        throw new CliError(`unrecognized operand ${key}`);
    }
  }
  if (input === undefined || output === undefined) throw new CliError('Must specify both input and output files');
  if (args.has('image-opts')) throw new CliError('--image-opts is not supported');

  const source = await openForCli(input, { format });
  let target: Image | undefined;
  try {
    if (!QEMU_FORMATS.includes(outFormat)) throw new CliError('Unknown file format');
    if (!QEMU_CREATABLE_FORMATS.includes(outFormat)) throw new CliError(`Format driver '${outFormat}' does not support image creation`);
    const plan = planDd(BigInt(source.size), op);
    await createOutput(output, outFormat, plan.outputSize);
    target = await openOutput(output, outFormat);
    if (plan.skipPastEnd) io.stderr.write(`${PROGRAM}: ${input}: cannot skip to specified offset\n`);
    try {
      await ddCopy(source, target, plan);
    } catch (e) {
      if (e instanceof Qcow2Error) throw new CliError(`error while copying: ${e.message}`, { cause: e });
      throw e;
    }
  } finally {
    await target?.close();
    await source.close();
  }
  return 0;
}

/** bdrv_create() for the output: a raw file of the size rounded up to sectors, or a fresh qcow2 image. */
async function createOutput(name: string, fmt: string, size: number): Promise<void> {
  const fail = (why: string): CliError => new CliError(`${name}: error while creating output image: ${why}`);
  if (fmt !== 'raw' && fmt !== 'qcow2') throw fail(`Creating '${fmt}' images is not supported yet`);
  let file: NodeFileStorage;
  try {
    file = await NodeFileStorage.open(name, { create: true, truncate: true });
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    const prefix = `Could not open '${name}': `;
    throw fail(`Could not create '${name}': ${message.startsWith(prefix) ? message.slice(prefix.length) : message}`);
  }
  try {
    if (fmt === 'raw') {
      await file.resize(Math.ceil(size / 512) * 512);
    } else {
      let plan;
      try {
        plan = planQcow2Image(resolveQcow2CreateOptions({ size }));
      } catch (e) {
        if (e instanceof Qcow2Error) throw fail(e.message);
        throw e;
      }
      await writeQcow2Image(plan, file);
    }
    await file.flush();
  } finally {
    await file.close();
  }
}

async function openOutput(name: string, fmt: string): Promise<Image> {
  try {
    return await openImageFile(name, { readOnly: false, format: fmt, dependencies: 'deny' });
  } catch (e) {
    if (e instanceof Qcow2Error) throw new CliError(`Could not open '${name}': ${e.message}`, { cause: e });
    throw e;
  }
}
