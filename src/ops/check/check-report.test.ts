import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkJsonFields, formatCheckHuman, formatRepairSummary, printfFixed2 } from './check-report.js';
import { emptyCheckResult } from './check-types.js';

describe('printfFixed2', () => {
  it('rounds exact ties to even like C printf, everything else like toFixed', () => {
    assert.equal(printfFixed2(0.125), '0.12'); // toFixed(2) says 0.13
    assert.equal(printfFixed2(0.375), '0.38');
    assert.equal(printfFixed2(12.625), '12.62');
    assert.equal(printfFixed2((1 * 100) / 1024), '0.10');
    assert.equal(printfFixed2((3 * 100) / 1024), '0.29');
    assert.equal(printfFixed2(100), '100.00');
    assert.equal(printfFixed2(0), '0.00');
  });
});

describe('human summary', () => {
  it('says the image is clean and prints statistics only when there are any', () => {
    assert.equal(formatCheckHuman(emptyCheckResult()), 'No errors were found on the image.\n');
    const r = { ...emptyCheckResult(), totalClusters: 800, allocatedClusters: 1, imageEndOffset: 393216 };
    assert.equal(formatCheckHuman(r), 'No errors were found on the image.\n1/800 = 0.12% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 393216\n');
  });

  it('lists corruptions, leaks and internal errors in qemu-img order', () => {
    const r = { ...emptyCheckResult(), corruptions: 2, leaks: 1, checkErrors: 6 };
    assert.equal(formatCheckHuman(r), '\n2 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n'
      + '\n1 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n'
      + '\n6 internal errors have occurred during the check.\n');
  });

  it('prints the repair summary', () => {
    assert.equal(formatRepairSummary(1, 4), 'The following inconsistencies were found and repaired:\n\n    1 leaked clusters\n    4 corruptions\n\nDouble checking the fixed image now...\n');
  });
});

describe('JSON fields', () => {
  it('always has filename, format and check-errors, the rest only when non-zero', () => {
    assert.deepEqual(checkJsonFields(emptyCheckResult(), 'a.qcow2', 'qcow2'), { filename: 'a.qcow2', format: 'qcow2', 'check-errors': 0 });
    const r = { ...emptyCheckResult(), leaks: 2, leaksFixed: 1, compressedClusters: 3 };
    assert.deepEqual(Object.keys(checkJsonFields(r, 'a', 'qcow2')), ['filename', 'format', 'check-errors', 'leaks', 'leaks-fixed', 'compressed-clusters']);
  });
});

describe('C int counters', () => {
  it('wraps counts past 2^31 - 1 the way qemu-img prints them', () => {
    const r = { ...emptyCheckResult(), corruptions: 2 ** 31 + 1 };
    assert.match(formatCheckHuman(r), /^\n-2147483647 errors were found/);
    assert.match(formatRepairSummary(0, 2 ** 31 + 1), / {4}-2147483647 corruptions\n/);
    assert.equal(checkJsonFields(r, 'f', 'qcow2')['corruptions'], -2147483647);
  });
});
