/**
 * qemu-img 7.2's check output, byte for byte: the human summary, the fields of the JSON
 * object (QAPI ImageCheck) and the "repaired" block printed before the second pass.
 */
import type { CheckResult } from './check-types.js';

/**
 * C's printf("%0.2f") of a double: like toFixed(2) except on exact ties, which C rounds to even
 * (0.125 prints "0.12"; toFixed gives "0.13").
 */
export function printfFixed2(x: number): string {
  const scaled = x * 100;
  // A tie at the third decimal is exact in binary only for multiples of 1/8.
  if (Number.isInteger(x * 8) && Math.abs(scaled % 1) === 0.5) {
    const down = Math.floor(scaled);
    const n = down % 2 === 0 ? down : down + 1;
    return (n / 100).toFixed(2);
  }
  return x.toFixed(2);
}

/**
 * The human summary qemu-img prints on stdout (dump_human_image_check).
 *
 * @example
 * ```ts
 * process.stdout.write(formatCheckHuman(result)); // "No errors were found on the image.\n..."
 * ```
 */
export function formatCheckHuman(result: CheckResult): string {
  const r = asCInts(result);
  let out = '';
  if (r.corruptions === 0 && r.leaks === 0 && r.checkErrors === 0) {
    out += 'No errors were found on the image.\n';
  } else {
    if (r.corruptions !== 0) {
      out += `\n${r.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (r.leaks !== 0) {
      out += `\n${r.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (r.checkErrors !== 0) out += `\n${r.checkErrors} internal errors have occurred during the check.\n`;
  }
  if (r.totalClusters !== 0 && r.allocatedClusters !== 0) {
    const allocated = printfFixed2((r.allocatedClusters * 100) / r.totalClusters);
    const fragmented = printfFixed2((r.fragmentedClusters * 100) / r.allocatedClusters);
    const compressed = printfFixed2((r.compressedClusters * 100) / r.allocatedClusters);
    out += `${r.allocatedClusters}/${r.totalClusters} = ${allocated}% allocated, ${fragmented}% fragmented, ${compressed}% compressed clusters\n`;
  }
  if (r.imageEndOffset !== 0) out += `Image end offset: ${r.imageEndOffset}\n`;
  return out;
}

/**
 * QEMU counts problems in C ints: past 2^31 - 1 they wrap (a hostile snapshot count can get
 * there), and qemu-img prints the wrapped value.
 */
function asCInts(r: CheckResult): CheckResult {
  return {
    ...r, corruptions: r.corruptions | 0, leaks: r.leaks | 0, checkErrors: r.checkErrors | 0,
    corruptionsFixed: r.corruptionsFixed | 0, leaksFixed: r.leaksFixed | 0,
  };
}

/** What qemu-img prints after a repairing pass, before checking again. */
export function formatRepairSummary(leaksFixed: number, corruptionsFixed: number): string {
  const leaks = leaksFixed | 0;
  const corruptions = corruptionsFixed | 0;
  return `The following inconsistencies were found and repaired:\n\n    ${leaks} leaked clusters\n    ${corruptions} corruptions\n\nDouble checking the fixed image now...\n`;
}

/**
 * The fields of `qemu-img check --output=json` (QAPI ImageCheck): optional counters only when
 * non-zero, inserted in QAPI field order (QEMU's QDict iteration order depends on it; the
 * printer reorders keys by QDict bucket).
 *
 * @example
 * ```ts
 * checkJsonFields(result, 'disk.qcow2', 'qcow2'); // { filename, format, 'check-errors': 0, ... }
 * ```
 */
export function checkJsonFields(result: CheckResult, filename: string, format: string): Record<string, string | number> {
  const r = asCInts(result);
  const obj: Record<string, string | number> = { filename, format, 'check-errors': r.checkErrors };
  const optional: Array<[string, number]> = [
    ['image-end-offset', r.imageEndOffset], ['corruptions', r.corruptions], ['leaks', r.leaks],
    ['corruptions-fixed', r.corruptionsFixed], ['leaks-fixed', r.leaksFixed], ['total-clusters', r.totalClusters],
    ['allocated-clusters', r.allocatedClusters], ['fragmented-clusters', r.fragmentedClusters], ['compressed-clusters', r.compressedClusters],
  ];
  for (const [key, value] of optional) if (value !== 0) obj[key] = value;
  return obj;
}
