/**
 * bin/qcow2kit starts as a shell script that sets up Node's environment and execs `node` on
 * itself. A fake `node` on PATH prints what it was given instead of running the CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = fileURLToPath(new URL('../../bin/qcow2kit', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-launcher-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'node'), '#!/bin/sh\nprintf "%s\\n" "tunables=${GLIBC_TUNABLES-unset}" "ca=${NODE_EXTRA_CA_CERTS-unset}" "$@"\n');
chmodSync(join(dir, 'node'), 0o755);

function launch(env: Record<string, string>): string[] {
  const r = spawnSync(bin, ['convert', '-O', 'raw', 'a b'], { encoding: 'utf8', env: { PATH: `${dir}:${process.env['PATH'] ?? ''}`, ...env } });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trimEnd().split('\n');
}

test('the launcher asks glibc for huge pages, drops NODE_EXTRA_CA_CERTS and passes the arguments on', () => {
  assert.deepEqual(launch({ NODE_EXTRA_CA_CERTS: '/x.pem' }), ['tunables=glibc.malloc.hugetlb=1', 'ca=unset', bin, 'convert', '-O', 'raw', 'a b']);
});

test('the launcher keeps tunables the caller set', () => {
  assert.equal(launch({ GLIBC_TUNABLES: 'glibc.malloc.check=0' })[0], 'tunables=glibc.malloc.check=0:glibc.malloc.hugetlb=1');
});
