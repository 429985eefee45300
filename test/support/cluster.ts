import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { ShardRouterConfig } from '../../src/index.js';

/** The URLs of the run's shard servers (at least 4). */
export function shardUrls(): string[] {
  return inject('shardUrls');
}

/** How many servers the tests use (the harness may be given more). */
export const TEST_SHARDS = 4;

/** Shard configs s0..s(n-1) over the first `count` servers (or the given server indexes). */
export function shardConfigs(servers: number | readonly number[] = TEST_SHARDS): { id: string; connectionString: string }[] {
  const urls = shardUrls();
  const indexes = typeof servers === 'number' ? Array.from({ length: servers }, (_, i) => i) : servers;
  return indexes.map((server, i) => ({ id: `s${i}`, connectionString: urls[server]! }));
}

/** A fresh lower-case identifier, so test files sharing the servers never collide. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

/**
 * A router over a brand-new cluster: its catalog lives in a schema of its own, so every test
 * file (or test) gets an independent cluster on the shared servers.
 */
export function connectFreshRouter(overrides: Partial<ShardRouterConfig> = {}): Promise<ShardRouter> {
  return ShardRouter.connect({ shards: shardConfigs(), catalogSchema: uniqueName('cat'), ...overrides });
}

/** Runs `work` with a plain pg.Client on one server, bypassing the router (to verify its effects). */
export async function withServer<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Drops the given schemas on every server (test clean-up). */
export async function dropSchemas(...schemas: string[]): Promise<void> {
  await Promise.all(
    shardUrls().map((url) =>
      withServer(url, async (client) => {
        for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      }),
    ),
  );
}

/** Polls `check` until it returns true; fails after `attempts` tries `intervalMs` apart. */
export async function eventually(what: string, check: () => Promise<boolean>, attempts = 250, intervalMs = 20): Promise<void> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`never happened: ${what}`);
}

/** Awaits a promise that must reject, and returns what it rejected with. */
export async function rejectionOf(promise: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection, but it resolved');
}

/**
 * A fresh database on every server, for code that uses fixed names (README examples, the demo):
 * it touches nothing outside its own databases. Returns their URLs and a clean-up.
 */
export async function createScratchDatabases(): Promise<{ urls: string[]; drop(): Promise<void> }> {
  const database = uniqueName('scratch');
  const servers = shardUrls().slice(0, TEST_SHARDS);
  await Promise.all(servers.map((url) => withServer(url, (client) => client.query(`CREATE DATABASE ${database}`))));
  return {
    urls: servers.map((url) => {
      const scratch = new URL(url);
      scratch.pathname = `/${database}`;
      return scratch.toString();
    }),
    drop: async () => {
      await Promise.all(
        servers.map((url) => withServer(url, (client) => client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`))),
      );
    },
  };
}

/** Runs a TypeScript file of this repository (bundled: see compiledProgram) and returns its output. */
export async function runTypeScript(file: string, env: Record<string, string>): Promise<{ stdout: string; stderr: string }> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { compiledProgram } = await import('./programs.js');
  const root = new URL('../..', import.meta.url).pathname;
  return promisify(execFile)(process.execPath, [compiledProgram(file)], { cwd: root, env: { ...process.env, ...env } });
}
