import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { dropSchemas, eventually, rejectionOf, shardConfigs, uniqueName, withServer } from '../support/cluster.js';

const catalog = uniqueName('cat');
/** Names this file's connections in pg_stat_activity, apart from other files running alongside. */
const applicationName = uniqueName('pool_test');
let router: ShardRouter;

/** A key owned by shard s0, so every statement in a test lands on the same pool. */
let key: string;
let s0Url: string;

beforeAll(async () => {
  router = await ShardRouter.connect({
    shards: shardConfigs(),
    catalogSchema: catalog,
    applicationName,
    pool: { max: 2, acquireTimeoutMillis: 1000 },
  });
  key = Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => router.shardFor(k) === 's0')!;
  s0Url = shardConfigs()[0]!.connectionString;
});

afterAll(async () => {
  await router.close();
  await dropSchemas(catalog);
});

async function backendPid(): Promise<number> {
  const { rows } = await router.execute<{ pid: number }>(key, 'SELECT pg_backend_pid() AS pid');
  return rows[0]!.pid;
}

async function waitUntilGone(pid: number): Promise<void> {
  await withServer(s0Url, (client) =>
    eventually(
      `backend ${pid} gone`,
      async () => (await client.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 0,
    ),
  );
}

describe('shard pools', () => {
  it('never hands out a connection terminated by the server', async () => {
    const pids = new Set<number>();
    // Fill the pool (2 connections) so both are idle in it when we terminate them.
    await Promise.all([router.execute(key, 'SELECT pg_sleep(0.05)'), router.execute(key, 'SELECT pg_sleep(0.05)')]);
    for (let i = 0; i < 4; i++) pids.add(await backendPid());
    await withServer(s0Url, async (client) => {
      for (const pid of pids) await client.query('SELECT pg_terminate_backend($1)', [pid]);
    });
    for (const pid of pids) await waitUntilGone(pid);

    // Every later statement runs on a new backend; a terminated one is never seen again.
    for (let i = 0; i < 10; i++) {
      const pid = await backendPid();
      expect(pids.has(pid)).toBe(false);
    }
  });

  it('destroys a connection that is terminated mid-statement and reports CONNECTION_LOST', async () => {
    const victim = rejectionOf(router.execute(key, 'SELECT pg_sleep(30)'));
    let victimPid = 0;
    await withServer(s0Url, async (client) => {
      await eventually('the statement is running', async () => {
        const { rows } = await client.query<{ pid: number }>(
          "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND application_name = $1",
          [applicationName],
        );
        victimPid = rows[0]?.pid ?? 0;
        return victimPid !== 0;
      });
      await client.query('SELECT pg_terminate_backend($1)', [victimPid]);
    });
    const error = await victim;
    expect(error).toMatchObject({ code: 'CONNECTION_LOST', shardId: 's0' });
    for (let i = 0; i < 5; i++) expect(await backendPid()).not.toBe(victimPid);
  });

  it('completes 200 concurrent executes with pool max 2, never opening more than 2 connections', async () => {
    let maxSize = 0;
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const { rows } = await router.execute<{ n: number }>(key, 'SELECT $1::int AS n', [i]);
        maxSize = Math.max(maxSize, router.poolStats().s0!.size);
        return rows[0]!.n;
      }),
    );
    expect(results).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(maxSize).toBeLessThanOrEqual(2);
    const open = await withServer(s0Url, (client) =>
      client.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [applicationName]),
    );
    expect(open.rows[0]!.n).toBeGreaterThanOrEqual(1);
    expect(open.rows[0]!.n).toBeLessThanOrEqual(2);
  });

  it('yields POOL_TIMEOUT when the pool stays exhausted, then recovers', async () => {
    // Both connections are held by statements that would run for 60 s: no timing race.
    const holders = [router.execute(key, 'SELECT pg_sleep(60)'), router.execute(key, 'SELECT pg_sleep(60)')].map((p) => rejectionOf(p));
    const error = await rejectionOf(router.execute(key, 'SELECT 1'));
    expect(error).toMatchObject({ code: 'POOL_TIMEOUT', shardId: 's0' });
    // Other shards are unaffected while s0's pool is exhausted.
    const otherKey = Array.from({ length: 100 }, (_, i) => `o${i}`).find((k) => router.shardFor(k) !== 's0')!;
    expect((await router.execute(otherKey, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    // Cancel the holders; their connections come back and the shard serves again.
    await withServer(s0Url, (client) =>
      client.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND query = 'SELECT pg_sleep(60)'", [
        applicationName,
      ]),
    );
    for (const holder of await Promise.all(holders)) expect(holder).toMatchObject({ code: 'QUERY_FAILED', sqlState: '57014' });
    expect((await router.execute(key, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('rejects a parameter pg cannot serialize with INVALID_ARGUMENT and keeps the connection usable', async () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(router.execute(key, 'SELECT $1::jsonb', [circular])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', shardId: 's0' });
    expect((await router.execute(key, 'SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('does not return a connection left inside a transaction to the pool', async () => {
    await router.execute(key, 'BEGIN');
    // SAVEPOINT works only inside a transaction block: had the BEGIN connection come back to
    // the pool, one of these would succeed.
    for (let i = 0; i < 4; i++) {
      await expect(router.execute(key, 'SAVEPOINT probe')).rejects.toMatchObject({ code: 'QUERY_FAILED', sqlState: '25P01' });
    }
    // The destroyed connection's server session goes away (its transaction rolled back).
    await withServer(s0Url, (client) =>
      eventually('no session idle in transaction', async () => {
        const { rowCount } = await client.query(
          "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
          [applicationName],
        );
        return rowCount === 0;
      }),
    );
  });

  it('closes idle connections above min after idleTimeoutMillis, keeping min open', async () => {
    const idleCatalog = uniqueName('cat');
    const idleRouter = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: idleCatalog,
      applicationName,
      pool: { max: 3, min: 1, idleTimeoutMillis: 100 },
    });
    try {
      await Promise.all(Array.from({ length: 6 }, () => idleRouter.execute(key, 'SELECT pg_sleep(0.05)')));
      expect(idleRouter.poolStats().s0!.size).toBeGreaterThan(1);
      await eventually('idle connections evicted down to min', async () => idleRouter.poolStats().s0!.size === 1, 200, 50);
      const stats = idleRouter.poolStats().s0!;
      expect(stats).toMatchObject({ size: 1, available: 1, borrowed: 0, pending: 0 });
      expect((await idleRouter.execute(key, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await idleRouter.close();
      await dropSchemas(idleCatalog);
    }
  });
});
