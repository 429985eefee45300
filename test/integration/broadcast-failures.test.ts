import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueryError, ShardRouter, ShardRouterError } from '../../src/index.js';
import { dropSchemas, eventually, rejectionOf, shardConfigs, shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { TcpProxy } from '../support/tcp-proxy.js';

/**
 * router.broadcast when things go wrong: a shard that is down (all-or-error and partial mode),
 * SQL that PostgreSQL rejects, a timeout that must cancel the shards' queries for real, and bad
 * arguments. After each, the router must still serve broadcasts.
 */

const T = uniqueName('bf');
/** One row per shard: `SELECT pg_sleep(5) FROM` it sleeps once on every shard. */
const ONE = uniqueName('bf_one');
const catalogSchema = uniqueName('cat');
/** Names this file's connections in pg_stat_activity, apart from other files running alongside. */
const applicationName = uniqueName('bf_app');
const ROWS = 60;
/** The one row whose v is 0: `100 / v` fails on its shard only. */
const ZERO_ID = 7;

interface Row {
  id: number;
  g: string;
  v: number;
}

let proxy: TcpProxy;
let router: ShardRouter;
let inserted: Row[] = [];

beforeAll(async () => {
  const shards = shardConfigs();
  // s1 is reached through a proxy that the tests cut and restore.
  proxy = await TcpProxy.start(shards[1]!.connectionString);
  shards[1] = { id: 's1', connectionString: proxy.urlFor(shards[1]!.connectionString) };
  router = await ShardRouter.connect({
    shards,
    catalogSchema,
    applicationName,
    pool: { max: 4, acquireTimeoutMillis: 3000, connectTimeoutMillis: 2000 },
  });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE TABLE ${T} (id int PRIMARY KEY, g text NOT NULL, v int NOT NULL)`);
    await router.executeOn(shardId, `CREATE TABLE ${ONE} (x int)`);
    await router.executeOn(shardId, `INSERT INTO ${ONE} VALUES (1)`);
  }
  inserted = Array.from({ length: ROWS }, (_, i) => ({ id: i + 1, g: `g${(i + 1) % 4}`, v: i + 1 === ZERO_ID ? 0 : (i + 1) * 3 }));
  for (const row of inserted) await router.execute(row.id, `INSERT INTO ${T} (id, g, v) VALUES ($1, $2, $3)`, [row.id, row.g, row.v]);
  // Every shard holds rows (s1's absence must show in the results).
  for (const shardId of router.shardIds) expect(inserted.some((row) => router.shardFor(row.id) === shardId)).toBe(true);
});

afterAll(async () => {
  if (router) {
    await proxy.open().catch(() => undefined);
    for (const shardId of router.shardIds) {
      await router.executeOn(shardId, `DROP TABLE IF EXISTS ${T}, ${ONE}`).catch(() => undefined);
    }
    await router.close();
  }
  await proxy?.cut();
  await dropSchemas(catalogSchema);
});

const sum = (values: readonly number[]) => values.reduce((total, value) => total + value, 0);

/** The whole table, as one server would return `SELECT id, g, v FROM T ORDER BY id`. */
async function expectUsable(): Promise<void> {
  const { rows, failures } = await router.broadcast<Row>(`SELECT id, g, v FROM ${T} ORDER BY id`);
  expect(rows).toEqual(inserted);
  expect(failures).toEqual([]);
}

/** Every shard's pool eventually lends nothing out: no connection leaked by a failure. */
async function expectNothingBorrowed(): Promise<void> {
  await eventually(
    'every pool has borrowed 0',
    async () => Object.values(router.poolStats()).every((stats) => stats.borrowed === 0 && stats.pending === 0),
    250,
    20,
  ).catch((error: unknown) => {
    throw new Error(`${(error as Error).message}: ${JSON.stringify(router.poolStats())}`);
  });
}

function expectShardDown(error: unknown, shardId: string): void {
  expect(error).toBeInstanceOf(ShardRouterError);
  const failure = error as ShardRouterError;
  expect(failure.shardId).toBe(shardId);
  expect(['SHARD_UNAVAILABLE', 'CONNECTION_LOST']).toContain(failure.code);
  expect(failure.message).toContain(shardId);
  // Both come from a socket-level failure here (connection refused, or the cut connection): pg's error is the cause.
  expect(failure.cause).toBeInstanceOf(Error);
}

describe('broadcast with one shard down', () => {
  it('fails in default mode naming the shard, returns the healthy shards in partial mode, and works again once the shard is back', async () => {
    await expectUsable();
    const healthy = inserted.filter((row) => router.shardFor(row.id) !== 's1');
    expect(healthy.length).toBeLessThan(inserted.length);
    await proxy.cut();

    // All or error: the first failing shard's error, with its shardId.
    const error = await rejectionOf(router.broadcast(`SELECT id, g, v FROM ${T} ORDER BY id`));
    expectShardDown(error, 's1');
    // Still failing on a second try (now surely without any pooled connection left).
    expectShardDown(await rejectionOf(router.broadcast(`SELECT id, g, v FROM ${T} ORDER BY id`)), 's1');

    // Partial: exactly the healthy shards' rows, merged in order, and one failure for s1.
    const partial = await router.broadcast<Row>(`SELECT id, g, v FROM ${T} ORDER BY id`, [], { partial: true });
    expect(partial.rows).toEqual(healthy);
    expect(partial.rowCount).toBe(healthy.length);
    expect(partial.failures).toHaveLength(1);
    expect(partial.failures[0]!.shardId).toBe('s1');
    expectShardDown(partial.failures[0]!.error, 's1');

    // Without ORDER BY: the same rows, in some order.
    const unordered = await router.broadcast<Row>(`SELECT id, g, v FROM ${T}`, [], { partial: true });
    expect([...unordered.rows].sort((a, b) => a.id - b.id)).toEqual(healthy);
    expect(unordered.failures.map((failure) => failure.shardId)).toEqual(['s1']);

    // Aggregates over the healthy shards only.
    const totals = await router.broadcast<{ c: string; total: string; lo: number; hi: number; mean: string }>(
      `SELECT count(*) AS c, sum(v) AS total, min(id) AS lo, max(id) AS hi, avg(v) AS mean FROM ${T}`,
      [],
      { partial: true },
    );
    expect(totals.failures.map((failure) => failure.shardId)).toEqual(['s1']);
    const healthySum = sum(healthy.map((row) => row.v));
    expect(totals.rows).toHaveLength(1);
    expect(totals.rows[0]).toMatchObject({
      c: String(healthy.length),
      total: String(healthySum),
      lo: Math.min(...healthy.map((row) => row.id)),
      hi: Math.max(...healthy.map((row) => row.id)),
    });
    expect(Number(totals.rows[0]!.mean)).toBeCloseTo(healthySum / healthy.length, 10);

    const grouped = await router.broadcast<{ g: string; c: string; total: string }>(
      `SELECT g, count(*) AS c, sum(v) AS total FROM ${T} GROUP BY g ORDER BY g`,
      [],
      { partial: true },
    );
    const groups = [...new Set(healthy.map((row) => row.g))].sort();
    expect(grouped.rows).toEqual(
      groups.map((g) => {
        const members = healthy.filter((row) => row.g === g);
        return { g, c: String(members.length), total: String(sum(members.map((row) => row.v))) };
      }),
    );
    expect(grouped.failures.map((failure) => failure.shardId)).toEqual(['s1']);

    // A shard that is down is not a partial result for a write: writes are all or nothing.
    const write = await rejectionOf(router.broadcast(`UPDATE ${T} SET v = v + 1`, [], { partial: true }));
    expect(write).toBeInstanceOf(ShardRouterError);
    expect((write as ShardRouterError).shardId).toBe('s1');

    await proxy.open();
    // The pool reconnects by itself; the same router serves a full broadcast again.
    await eventually(
      'a default-mode broadcast succeeds after the shard is back',
      async () => {
        try {
          await router.broadcast(`SELECT 1 AS one FROM ${T} LIMIT 1`);
          return true;
        } catch (retry) {
          expect((retry as ShardRouterError).code).toMatch(/^(SHARD_UNAVAILABLE|CONNECTION_LOST)$/);
          return false;
        }
      },
      100,
      50,
    );
    // The failed UPDATE changed nothing anywhere.
    await expectUsable();
    await expectNothingBorrowed();
  });
});

describe('broadcastStream with one shard down', () => {
  // A router of its own (own proxy, own application_name): a connection leaked here must not hold
  // up the other tests, whose checks and clean-up need every connection of theirs back.
  const streamApplicationName = uniqueName('bf_stream');
  const streamCatalog = uniqueName('cat');
  let streamProxy: TcpProxy;
  let streamRouter: ShardRouter;

  beforeAll(async () => {
    const shards = shardConfigs();
    streamProxy = await TcpProxy.start(shards[1]!.connectionString);
    shards[1] = { id: 's1', connectionString: streamProxy.urlFor(shards[1]!.connectionString) };
    streamRouter = await ShardRouter.connect({
      shards,
      catalogSchema: streamCatalog,
      applicationName: streamApplicationName,
      pool: { max: 4, acquireTimeoutMillis: 3000, connectTimeoutMillis: 2000 },
      recovery: { intervalMillis: 0, atConnect: false },
    });
  });

  afterAll(async () => {
    // Should a cursor have been leaked, end its backend (it holds a lock on the table) and do not wait on close() for it.
    await Promise.all(
      shardUrls()
        .slice(0, 4)
        .map((url) =>
          withServer(url, (client) =>
            client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()', [
              streamApplicationName,
            ]),
          ),
        ),
    );
    await Promise.race([streamRouter?.close(), new Promise((resolve) => setTimeout(resolve, 3_000))]);
    await streamProxy?.cut();
    await dropSchemas(streamCatalog);
  });

  /** Ends this router's connections on the healthy servers, so the next stream must open new ones there. */
  async function dropHealthyConnections(): Promise<void> {
    const urls = shardUrls();
    for (const index of [0, 2, 3]) {
      await withServer(urls[index]!, (client) =>
        client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()', [
          streamApplicationName,
        ]),
      );
    }
    await eventually(
      'the healthy pools noticed their connections were terminated',
      async () => ['s0', 's2', 's3'].every((shardId) => streamRouter.poolStats()[shardId]!.size === 0),
      250,
      20,
    );
  }

  /** Connection attempts have settled and no healthy pool lends anything out, for good. */
  async function expectHealthyPoolsIdle(when: string): Promise<void> {
    const healthy = ['s0', 's2', 's3'];
    const idle = () =>
      healthy.every((shardId) => streamRouter.poolStats()[shardId]!.borrowed === 0 && streamRouter.poolStats()[shardId]!.pending === 0);
    await eventually(`no healthy pool lends out a connection (${when})`, async () => idle(), 150, 20).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}: ${JSON.stringify(streamRouter.poolStats())}`);
    });
    // And it stays so (a connection still being opened for the failed stream would show up now).
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(idle(), `healthy pools idle 300 ms later (${when}): ${JSON.stringify(streamRouter.poolStats())}`).toBe(true);
  }

  const drain = async (stream: AsyncIterable<unknown>) => {
    for await (const row of stream) void row;
  };

  it("fails naming the shard, and returns the healthy shards' connections (pooled ones)", async () => {
    await drain(streamRouter.broadcastStream(`SELECT id FROM ${T} ORDER BY id`));
    await streamProxy.cut();
    try {
      const error = await rejectionOf(drain(streamRouter.broadcastStream(`SELECT id, g, v FROM ${T} ORDER BY id`, [], { batchSize: 5 })));
      expectShardDown(error, 's1');
      await expectHealthyPoolsIdle('the healthy shards had idle pooled connections');
    } finally {
      await streamProxy.open();
    }
  });

  it("fails naming the shard, and returns the healthy shards' connections (still being opened when s1 failed)", async () => {
    await streamProxy.cut();
    try {
      await dropHealthyConnections();
      const error = await rejectionOf(drain(streamRouter.broadcastStream(`SELECT id, g, v FROM ${T} ORDER BY id`, [], { batchSize: 5 })));
      expectShardDown(error, 's1');
      await expectHealthyPoolsIdle('the healthy shards had to open new connections');
      // No cursor left open on a healthy server either.
      for (const index of [0, 2, 3]) {
        const busy = await withServer(
          shardUrls()[index]!,
          async (client) =>
            (
              await client.query<{ state: string; query: string }>(
                "SELECT state, query FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle' AND pid <> pg_backend_pid()",
                [streamApplicationName],
              )
            ).rows,
        );
        expect(busy, `busy backends of the stream's router on server ${index}`).toEqual([]);
      }
    } finally {
      await streamProxy.open();
    }
  });
});

describe('broadcast of SQL a shard rejects', () => {
  it('fails with QUERY_FAILED, the SQLSTATE and a shard id when the table does not exist, and stays usable', async () => {
    const error = await rejectionOf(router.broadcast(`SELECT id FROM ${T}_missing ORDER BY id`));
    expect(error).toBeInstanceOf(QueryError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '42P01' });
    expect(router.shardIds).toContain((error as ShardRouterError).shardId);
    expect((error as Error).message).toContain((error as ShardRouterError).shardId);
    expect((error as ShardRouterError).retryable).toBe(false);
    // In partial mode every shard fails: there is nothing to return, so it still rejects.
    const partial = await rejectionOf(router.broadcast(`SELECT id FROM ${T}_missing`, [], { partial: true }));
    expect(partial).toMatchObject({ code: 'QUERY_FAILED', sqlState: '42P01' });
    await expectUsable();
    await expectNothingBorrowed();
  });

  it('names the one shard whose data makes the query fail (division by zero), and partial mode returns the others', async () => {
    const failing = router.shardFor(ZERO_ID);
    const error = await rejectionOf(router.broadcast(`SELECT id, 100 / v AS q FROM ${T} ORDER BY id`));
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '22012', shardId: failing });

    const partial = await router.broadcast<{ id: number; q: number }>(`SELECT id, 100 / v AS q FROM ${T} ORDER BY id`, [], {
      partial: true,
    });
    expect(partial.failures).toHaveLength(1);
    expect(partial.failures[0]).toMatchObject({ shardId: failing, error: { code: 'QUERY_FAILED', sqlState: '22012', shardId: failing } });
    expect(partial.rows).toEqual(
      inserted.filter((row) => router.shardFor(row.id) !== failing).map((row) => ({ id: row.id, q: Math.trunc(100 / row.v) })),
    );
    await expectUsable();
    await expectNothingBorrowed();
  });
});

describe('broadcast timeout', () => {
  /** Backends of this router still running the 5-second sleep, over all servers. */
  async function sleepersLeft(): Promise<number> {
    const counts = await Promise.all(
      shardUrls()
        .slice(0, 4)
        .map((url) =>
          withServer(url, async (client) => {
            const { rows } = await client.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM pg_stat_activity
                WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep(5)%' AND pid <> pg_backend_pid()`,
              [applicationName],
            );
            return rows[0]!.n;
          }),
        ),
    );
    return sum(counts);
  }

  it('rejects with BROADCAST_TIMEOUT long before the statement would end, cancels every shard query, and the pools recover', async () => {
    await expectUsable();
    const started = Date.now();
    const error = await rejectionOf(router.broadcast(`SELECT pg_sleep(5) FROM ${ONE}`, [], { timeoutMillis: 300 }));
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(ShardRouterError);
    expect(error).toMatchObject({ code: 'BROADCAST_TIMEOUT' });
    expect((error as ShardRouterError).retryable).toBe(true);
    expect(elapsed).toBeLessThan(4_000);

    // The shards' statements were cancelled, not left sleeping: gone well before their 5 s.
    await eventually('no shard backend still runs pg_sleep(5)', async () => (await sleepersLeft()) === 0, 60, 50);
    expect(Date.now() - started).toBeLessThan(4_500);

    // A normal broadcast works right away, and every connection comes back (or is retired).
    await expectUsable();
    await expectNothingBorrowed();
  });

  it('is a timeout in partial mode too (not a partial result), and cancels there as well', async () => {
    const started = Date.now();
    const pending = rejectionOf(router.broadcast(`SELECT pg_sleep(5) FROM ${ONE}`, [], { timeoutMillis: 1_500, partial: true }));
    // The probe does see the sleeping statements while they run (one per shard), so "none left" below means something.
    await eventually('every shard runs pg_sleep(5)', async () => (await sleepersLeft()) === router.shardIds.length, 50, 20);
    const error = await pending;
    expect(error).toMatchObject({ code: 'BROADCAST_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(4_000);
    await eventually('no shard backend still runs pg_sleep(5)', async () => (await sleepersLeft()) === 0, 60, 50);
    await expectUsable();
    await expectNothingBorrowed();
  });

  it('bounds a broadcastStream too: BROADCAST_TIMEOUT, shard queries cancelled, connections back', async () => {
    const started = Date.now();
    const error = await rejectionOf(
      (async () => {
        for await (const row of router.broadcastStream(`SELECT pg_sleep(5) AS slept FROM ${ONE} ORDER BY x`, [], { timeoutMillis: 300 }))
          void row;
      })(),
    );
    expect(error).toMatchObject({ code: 'BROADCAST_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(4_000);
    await eventually('no shard backend still runs pg_sleep(5)', async () => (await sleepersLeft()) === 0, 60, 50);
    await expectUsable();
    await expectNothingBorrowed();
  });

  it('does not fire for a broadcast that finishes in time', async () => {
    const { rows } = await router.broadcast<{ c: string }>(`SELECT count(*) AS c FROM ${T}`, [], { timeoutMillis: 2_000 });
    expect(rows).toEqual([{ c: String(ROWS) }]);
  });
});

describe('broadcast timeout while a shard has no free connection', () => {
  // A router of its own with one connection per shard, so one busy statement exhausts s0's pool.
  const busyCatalog = uniqueName('cat');
  let busyRouter: ShardRouter;

  beforeAll(async () => {
    busyRouter = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: busyCatalog,
      pool: { max: 1, acquireTimeoutMillis: 10_000 },
      recovery: { intervalMillis: 0, atConnect: false },
    });
  });

  afterAll(async () => {
    await busyRouter?.close();
    await dropSchemas(busyCatalog);
  });

  it.each(['broadcast', 'broadcastStream'] as const)('%s: the timeout also bounds the wait for a connection', async (method) => {
    // s0's only connection is busy for 3 s.
    const busy = busyRouter.executeOn('s0', 'SELECT pg_sleep(3)');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    const run =
      method === 'broadcast'
        ? busyRouter.broadcast(`SELECT id FROM ${T} ORDER BY id`, [], { timeoutMillis: 300 })
        : (async () => {
            for await (const row of busyRouter.broadcastStream(`SELECT id FROM ${T} ORDER BY id`, [], { timeoutMillis: 300 })) void row;
          })();
    const error = await rejectionOf(run);
    const elapsed = Date.now() - started;
    await busy;
    expect(error).toMatchObject({ code: 'BROADCAST_TIMEOUT' });
    // Generous for a noisy machine, yet well below the 3 s until s0's connection is free.
    expect(elapsed, `settled after ${elapsed} ms, with timeoutMillis 300`).toBeLessThan(2_000);
  });
});

describe('broadcast arguments', () => {
  const sql = `SELECT count(*) AS c FROM ${T}`;

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 3_600_001, '300' as unknown as number])(
    'rejects timeoutMillis %s with INVALID_ARGUMENT',
    async (timeoutMillis) => {
      const error = await rejectionOf(router.broadcast(sql, [], { timeoutMillis }));
      expect(error).toBeInstanceOf(ShardRouterError);
      expect((error as ShardRouterError).code).toBe('INVALID_ARGUMENT');
      expect((error as Error).message).toMatch(/timeoutMillis/);
    },
  );

  it.each(['1', { 0: 1 }, 42, null])('rejects params %j (not an array) with INVALID_ARGUMENT', async (params) => {
    const error = await rejectionOf(router.broadcast(sql, params as unknown as unknown[]));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    expect((error as Error).message).toMatch(/params/);
  });

  it.each([null, 'partial', 7])('rejects options %j (not an object) with INVALID_ARGUMENT', async (options) => {
    const error = await rejectionOf(router.broadcast(sql, [], options as never));
    expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/options/) });
  });

  it.each(['', '   ', '\n\t', undefined, 42])('rejects sql %j with INVALID_ARGUMENT', async (badSql) => {
    const error = await rejectionOf(router.broadcast(badSql as unknown as string));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('INVALID_ARGUMENT');
  });

  it('rejects the same bad arguments in broadcastStream (and a bad batchSize), at the first read', async () => {
    const drain = async (stream: AsyncIterable<unknown>) => {
      for await (const row of stream) void row;
    };
    for (const stream of [
      router.broadcastStream(''),
      router.broadcastStream(sql, 'x' as unknown as unknown[]),
      router.broadcastStream(`SELECT id FROM ${T}`, [], { timeoutMillis: 0 }),
      router.broadcastStream(`SELECT id FROM ${T}`, [], { batchSize: 0 }),
      router.broadcastStream(`SELECT id FROM ${T}`, [], { batchSize: 2.5 }),
      router.broadcastStream(`SELECT id FROM ${T}`, [], null as never),
    ]) {
      const error = await rejectionOf(drain(stream));
      expect(error).toBeInstanceOf(ShardRouterError);
      expect((error as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    }
  });

  it('leaves the router usable after all of them', async () => {
    for (let i = 0; i < 3; i++) {
      await rejectionOf(router.broadcast('', []));
      await rejectionOf(router.broadcast(sql, [], { timeoutMillis: 0 }));
    }
    await expectUsable();
    await expectNothingBorrowed();
  });
});
