import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { RecoveryReport, ShardRouter } from '../../src/index.js';
import { withServer } from '../support/cluster.js';
import { compiledProgram } from '../support/programs.js';

/** Helpers shared by the chaos tests (parent side only: child programs must not import vitest). */

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Starts a TypeScript program of this repository, stdout and stderr piped. Node itself on the
 * program's bundle (see compiledProgram), not the tsx command: that one runs the program in a
 * grandchild, so a SIGKILL would reach only the wrapper and the program's own SIGKILL would look
 * like exit code 137.
 */
export function spawnTypeScript(file: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [compiledProgram(file)], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program to its end, however it ends (runTypeScript rejects on a kill, which is the expected end here). */
export function runToEnd(file: string, env: Record<string, string>): Promise<ChildExit> {
  const child = spawnTypeScript(file, env);
  child.stdin?.end();
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    // 'close' rather than 'exit': every byte the child wrote before dying has been read.
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The lines of a child's stdout split into words, e.g. ['ack', 'w0-123-7']. */
export function wordsOf(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => line.trim().split(' '));
}

/**
 * Every prepared transaction whose name starts with `prefix`, per server index, read directly from
 * each server: `name` as PREPAREd (`<gid>:<participant shard>`), `gid` the transaction's id.
 */
export async function preparedOn(urls: readonly string[], prefix: string): Promise<{ server: number; gid: string; name: string }[]> {
  const lists = await Promise.all(
    urls.map((url, server) =>
      withServer(url, async (client) => {
        const { rows } = await client.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [prefix]);
        return rows.map((row) => ({ server, gid: gidOfPreparedName(row.gid), name: row.gid }));
      }),
    ),
  );
  return lists.flat();
}

/** `psr:<cluster>:<D>:<unique>:<participant>` -> `psr:<cluster>:<D>:<unique>` (a bare gid stays as it is). */
export function gidOfPreparedName(name: string): string {
  const parts = name.split(':');
  return parts.length === 5 ? parts.slice(0, 4).join(':') : name;
}

/**
 * Waits until the servers have no backend left for connections named `applicationPattern`
 * (LIKE). A killed client's backends finish whatever statement they had received (a PREPARE
 * can complete after its client died); only once they are gone is the state the crash left final.
 * A bounded wait for a condition, not a timing assertion.
 */
export async function waitForBackendsGone(urls: readonly string[], applicationPattern: string): Promise<void> {
  for (let attempt = 0; attempt < 1_000; attempt++) {
    const counts = await Promise.all(
      urls.map((url) =>
        withServer(url, async (client) => {
          const { rows } = await client.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1',
            [applicationPattern],
          );
          return rows[0]?.n ?? 0;
        }),
      ),
    );
    if (counts.every((count) => count === 0)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`backends of ${applicationPattern} never went away`);
}

/**
 * Recovery passes (grace 0) until no prepared transaction of the router's cluster is left on
 * any server; capped, so a recovery that cannot settle something fails the caller's assertion
 * instead of looping forever. Returns every pass's report.
 */
export async function recoverUntilSettled(router: ShardRouter, urls: readonly string[], maxPasses = 10): Promise<RecoveryReport[]> {
  const reports: RecoveryReport[] = [];
  const prefix = `psr:${router.clusterId}:`;
  for (let pass = 0; pass < maxPasses; pass++) {
    reports.push(await router.recover({ graceMillis: 0 }));
    if ((await preparedOn(urls, prefix)).length === 0) break;
  }
  return reports;
}

/** Rolls back every prepared transaction whose gid starts with one of `prefixes` (clean-up after a failed test, so DROP SCHEMA does not wait on their locks). */
export async function rollBackPrepared(urls: readonly string[], prefixes: readonly string[]): Promise<void> {
  for (const { server, name } of (await Promise.all(prefixes.map((prefix) => preparedOn(urls, prefix)))).flat()) {
    await withServer(urls[server]!, (client) => client.query(`ROLLBACK PREPARED '${name}'`)).catch(() => undefined);
  }
}

/** Runs at most `limit` of the given tasks at a time (children on a 2-core machine). */
export function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    while (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await task();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

/** The transfer tables the 2PC crash tests write (accounts and one leg row per account touched), on every URL. */
export async function createTransferTables(urls: readonly string[], schema: string): Promise<void> {
  for (const url of urls) {
    await withServer(url, async (client) => {
      await client.query(`CREATE SCHEMA ${schema}`);
      await client.query(`CREATE TABLE ${schema}.accounts (id text PRIMARY KEY, balance bigint NOT NULL)`);
      await client.query(`CREATE TABLE ${schema}.legs (transfer_id text NOT NULL, account text NOT NULL, delta bigint NOT NULL)`);
    });
  }
}
