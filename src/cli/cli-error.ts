/**
 * Errors the command line turns into qemu-img style messages.
 *
 * A command throws {@link CliError} for expected failures that are not about the image
 * (bad arguments, conflicting options). `main` prints each line of the message as
 * `qcow2kit: <line>` on stderr and exits with `exitCode`. Image failures stay
 * `Qcow2Error` and are printed the same way with exit code 1.
 *
 * @example
 * ```ts
 * throw new CliError('Expecting one image file name', { usage: true });
 * // stderr: qcow2kit: Expecting one image file name
 * //         Try 'qcow2kit --help' for more information
 * ```
 */
export class CliError extends Error {
  /** Process exit code (qemu-img uses 1 for almost everything). */
  readonly exitCode: number;
  /** Append qemu-img's "Try '... --help' for more information" line (its error_exit()). */
  readonly usage: boolean;

  constructor(message: string, options: { exitCode?: number; usage?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CliError';
    this.exitCode = options.exitCode ?? 1;
    this.usage = options.usage ?? false;
  }
}

/**
 * Thrown when `-h`/`--help` is seen: qemu-img prints its global help and exits 0 at that
 * point of option parsing, whatever follows. `main` catches it and prints the help.
 *
 * @example
 * ```ts
 * if (args.stoppedAt === 'help') throw new HelpRequest('info');
 * ```
 */
export class HelpRequest extends Error {
  /** The command whose options contained the request, if any. */
  readonly command: string | undefined;

  constructor(command?: string) {
    super('help requested');
    this.name = 'HelpRequest';
    this.command = command;
  }
}
