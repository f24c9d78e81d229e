import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useOnePoolThread } from './pool-threads.js';

test('useOnePoolThread sets one thread unless the user chose a size', () => {
  const env: Record<string, string | undefined> = {};
  useOnePoolThread(env);
  assert.equal(env['UV_THREADPOOL_SIZE'], '1');
  const chosen: Record<string, string | undefined> = { UV_THREADPOOL_SIZE: '8' };
  useOnePoolThread(chosen);
  assert.equal(chosen['UV_THREADPOOL_SIZE'], '8');
});

// Threads of the process once a bench run is over (Linux): Node's own, plus the pool's.
const CHILD = `
const [loadCliPath, argvJson] = process.argv.slice(1);
require(loadCliPath).loadCli().exports.runCli(JSON.parse(argvJson)).then((code) => {
  process.stdout.write(JSON.stringify({ code, threads: require('node:fs').readdirSync('/proc/self/task').length }));
});
`;

test('bench -w runs on one pool thread, except in writethrough mode; reads keep four', { skip: existsSync('/proc/self/task') ? false : 'needs /proc' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'qcow2kit-pool-'));
  try {
    const image = join(dir, 'disk.raw');
    writeFileSync(image, new Uint8Array(1 << 20));
    const threads = (extra: string[]): number => {
      const env = { ...process.env };
      delete env['UV_THREADPOOL_SIZE'];
      delete env['NODE_TEST_CONTEXT'];
      const loadCli = fileURLToPath(new URL('../../bin/load-cli.cjs', import.meta.url));
      const argv = ['bench', '-c', '64', '-s', '4k', '-f', 'raw', ...extra, image];
      const r = spawnSync(process.execPath, ['-e', CHILD, loadCli, JSON.stringify(argv)], { encoding: 'utf8', env });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { code: number; threads: number };
      assert.equal(out.code, 0);
      return out.threads;
    };
    const writes = threads(['-w']);
    assert.equal(threads(['-w', '-t', 'writethrough']) - writes, 3, 'four pool threads against one');
    // Reads keep the four: the disk may make them wait.
    assert.equal(threads([]) - writes, 3, 'reads');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
