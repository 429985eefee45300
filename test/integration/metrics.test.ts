import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/index.js';
import type { RouterMetrics, ShardRouter, StatementMetrics } from '../../src/index.js';
import { registerMetrics } from '../../src/prometheus.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import { connectFreshRouter, dropSchemas, eventually, rejectionOf, uniqueName } from '../support/cluster.js';
import { keysOn } from '../support/keys.js';

/**
 * router.metrics() and the prom-client exposition, against the real shards: every counter is
 * checked as a difference across the calls that should move it.
 */

const data = uniqueName('met');
let catalog: string;
let router: ShardRouter;

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  await router.broadcast(`CREATE SCHEMA ${data}`);
  await router.broadcast(`CREATE TABLE ${data}.items (id text PRIMARY KEY, n int NOT NULL)`);
});

afterAll(async () => {
  testHooks.fault = undefined;
  await router.close();
  await dropSchemas(data, catalog);
});

function statement(metrics: RouterMetrics, route: StatementMetrics['route'], outcome: StatementMetrics['outcome']): StatementMetrics {
  return metrics.statements.find((s) => s.route === route && s.outcome === outcome)!;
}

function count(metrics: RouterMetrics, route: StatementMetrics['route'], outcome: StatementMetrics['outcome']): number {
  return statement(metrics, route, outcome).count;
}

describe('router.metrics()', () => {
  it('counts single-shard statements by outcome, with their latency and error codes', async () => {
    const before = router.metrics();
    await router.execute('k1', `INSERT INTO ${data}.items (id, n) VALUES ($1, $2)`, ['k1', 1]);
    await router.execute('k1', `SELECT * FROM ${data}.items WHERE id = $1`, ['k1']);
    await rejectionOf(router.execute('k1', `INSERT INTO ${data}.items (id, n) VALUES ($1, $2)`, ['k1', 2]));
    const after = router.metrics();
    expect(count(after, 'single', 'ok') - count(before, 'single', 'ok')).toBe(2);
    expect(count(after, 'single', 'error') - count(before, 'single', 'error')).toBe(1);
    const ok = statement(after, 'single', 'ok').durationSeconds;
    expect(ok.count).toBe(count(after, 'single', 'ok'));
    expect(ok.sum).toBeGreaterThan(0);
    // Cumulative buckets never decrease and never exceed the count.
    expect(ok.cumulative).toEqual([...ok.cumulative].sort((a, b) => a - b));
    expect(ok.cumulative.at(-1)!).toBeLessThanOrEqual(ok.count);
    expect(after.errors.find((e) => e.route === 'single' && e.code === 'QUERY_FAILED')?.count).toBeGreaterThanOrEqual(1);
  });

  it('tells one-phase from two-phase transactions, and counts broadcasts', async () => {
    const [a, b] = keysOn(router, ['s0', 's1'], 'route');
    const before = router.metrics();
    await router.transaction([a!], (tx) => tx.execute(a!, `INSERT INTO ${data}.items (id, n) VALUES ($1, 1)`, [String(a)]));
    await router.transaction([a!, b!], async (tx) => {
      await tx.execute(a!, `UPDATE ${data}.items SET n = n + 1 WHERE id = $1`, [String(a)]);
      await tx.execute(b!, `INSERT INTO ${data}.items (id, n) VALUES ($1, 1)`, [String(b)]);
    });
    await rejectionOf(
      router.transaction([a!], async () => {
        throw new Error('the callback gives up');
      }),
    );
    await router.broadcast(`SELECT count(*) FROM ${data}.items`);
    const after = router.metrics();
    expect(count(after, 'transaction_1pc', 'ok') - count(before, 'transaction_1pc', 'ok')).toBe(1);
    expect(count(after, 'transaction_2pc', 'ok') - count(before, 'transaction_2pc', 'ok')).toBe(1);
    expect(count(after, 'transaction_1pc', 'error') - count(before, 'transaction_1pc', 'error')).toBe(1);
    expect(count(after, 'broadcast', 'ok') - count(before, 'broadcast', 'ok')).toBe(1);
    expect(after.errors.find((e) => e.route === 'transaction_1pc' && e.code === 'OTHER')?.count).toBe(1);
  });

  it('counts router.query by the route it took: one shard, a merged read, a two-phase write', async () => {
    await router.registerShardedTable(`${data}.items`, 'id');
    const [a, b] = keysOn(router, ['s0', 's1'], 'query');
    const before = router.metrics();
    await router.query(`INSERT INTO ${data}.items (id, n) VALUES ($1, 1)`, [a]);
    await router.query(`SELECT n FROM ${data}.items WHERE id = $1`, [a]);
    await router.query(`SELECT n FROM ${data}.items WHERE id = ANY($1)`, [[a, b]]);
    await router.query(`UPDATE ${data}.items SET n = n + 1 WHERE id = ANY($1)`, [[a, b]]);
    const after = router.metrics();
    expect(count(after, 'single', 'ok') - count(before, 'single', 'ok')).toBe(2);
    expect(count(after, 'broadcast', 'ok') - count(before, 'broadcast', 'ok')).toBe(1);
    expect(count(after, 'transaction_2pc', 'ok') - count(before, 'transaction_2pc', 'ok')).toBe(1);
  });

  it('has every pool with its counters and acquire waits, the map version, and everything up', async () => {
    const metrics = router.metrics();
    expect(Object.keys(metrics.pools).sort()).toEqual([...router.shardIds].sort());
    for (const [shardId, pool] of Object.entries(metrics.pools)) {
      expect(pool).toMatchObject(router.poolStats()[shardId]!);
      expect(pool.up).toBe(true);
      expect(pool.acquireWaitSeconds.count).toBeGreaterThan(0);
    }
    expect(metrics.mapVersion).toBe(router.bucketMap.version);
  });

  it('counts a 2PC left prepared by its coordinator, and recovery committing it', async () => {
    const [a, b] = keysOn(router, ['s0', 's1'], 'left');
    // Every COMMIT PREPARED attempt fails: the coordinator leaves the voter prepared for recovery.
    testHooks.fault = (context) => {
      if (context.point === 'before-commit-prepared') throw new Error('injected: the voter is unreachable');
    };
    const before = router.metrics().twoPhase;
    try {
      await router.transaction([a!, b!], async (tx) => {
        await tx.execute(a!, `INSERT INTO ${data}.items (id, n) VALUES ($1, 7)`, [`left-${String(a)}`]);
        await tx.execute(b!, `INSERT INTO ${data}.items (id, n) VALUES ($1, 7)`, [`left-${String(b)}`]);
      });
    } finally {
      testHooks.fault = undefined;
    }
    expect(router.metrics().twoPhase.leftPrepared - before.leftPrepared).toBe(1);
    const report = await router.recover({ graceMillis: 0 });
    expect(report.committed.length).toBe(1);
    const after = router.metrics().twoPhase;
    expect(after.recoveredCommitted - before.recoveredCommitted).toBe(1);
    expect(after.recoveryPasses - before.recoveryPasses).toBe(1);
    expect(after.inDoubt).toBe(0);
    expect(Object.values(after.preparedByShard).every((n) => n === 0)).toBe(true);
  });
});

describe('registerMetrics (prom-client)', () => {
  it('exposes the snapshot in the Prometheus text format, with the names and labels docs/operations.md lists', async () => {
    const registry = new Registry();
    const registered = registerMetrics(router, { registry });
    try {
      await router.execute('k2', 'SELECT $1::int', [2]);
      const text = await registry.metrics();
      const snapshot = router.metrics();
      const ok = statement(snapshot, 'single', 'ok');
      expect(text).toContain('# TYPE pg_shard_router_statements_total counter');
      expect(text).toContain(`pg_shard_router_statements_total{route="single",outcome="ok"} ${ok.count}`);
      expect(text).toContain('# TYPE pg_shard_router_statement_duration_seconds histogram');
      expect(text).toContain(`pg_shard_router_statement_duration_seconds_count{route="single",outcome="ok"} ${ok.count}`);
      expect(text).toContain(`pg_shard_router_statement_duration_seconds_bucket{route="single",outcome="ok",le="+Inf"} ${ok.count}`);
      expect(text).toMatch(/pg_shard_router_statement_duration_seconds_bucket\{route="single",outcome="ok",le="0\.001"\} \d+/);
      expect(text).toContain(`pg_shard_router_map_version ${snapshot.mapVersion}`);
      for (const shardId of router.shardIds) {
        expect(text).toContain(`pg_shard_router_shard_up{shard="${shardId}"} 1`);
        expect(text).toContain(`pg_shard_router_pool_max_connections{shard="${shardId}"} 10`);
        expect(text).toMatch(new RegExp(`pg_shard_router_pool_acquire_wait_seconds_count\\{shard="${shardId}"\\} [1-9]`));
      }
      expect(text).toContain('pg_shard_router_twopc_recovered_total{outcome="commit"} 1');
      expect(text).toContain('pg_shard_router_stale_map_retries_total 0');
      // No key or bucket ever becomes a label.
      expect(text).not.toMatch(/\b(key|bucket)="/);
      // Every sample line is `name{labels} number`, every name carries the prefix.
      for (const line of text.split('\n').filter((l) => l !== '' && !l.startsWith('#')))
        expect(line).toMatch(/^pg_shard_router_[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+$/);
      // The JSON form (what prom-client's cluster aggregation reads) works too.
      const json = await registry.getMetricsAsJSON();
      expect(json.find((m) => m.name === 'pg_shard_router_statement_duration_seconds')?.type).toBe('histogram');
    } finally {
      registered.unregister();
    }
    expect(await registry.metrics()).not.toContain('pg_shard_router_');
  });

  it('outbox: true adds pending events, lag and parked events per shard and group, read at scrape time', async () => {
    const group = uniqueName('grp');
    const topic = uniqueName('topic');
    const [parkedKey, pendingKey] = keysOn(router, ['s1', 's2'], 'obx');
    await router.transaction([parkedKey!], (tx) => tx.publish(parkedKey!, topic, { poison: true }));
    const consumer = router.consume({
      group,
      topics: [topic],
      maxAttempts: 1,
      pollIntervalMillis: 100,
      handler: () => {
        throw new Error('cannot handle this one');
      },
    });
    try {
      await eventually('parked', async () => (await router.outbox.parked({ group })).length === 1, 1_000);
    } finally {
      await consumer.stop();
    }
    // Published after the consumer stopped: pending on its shard, not delivered.
    await router.transaction([pendingKey!], (tx) => tx.publish(pendingKey!, topic, { n: 1 }));
    const registry = new Registry();
    const registered = registerMetrics(router, { registry, outbox: true });
    try {
      expect(registered.names).toEqual(expect.arrayContaining(['pg_shard_router_outbox_lag_seconds']));
      const text = await registry.metrics();
      expect(text).toContain('# TYPE pg_shard_router_outbox_parked_events gauge');
      expect(text).toContain(`pg_shard_router_outbox_parked_events{shard="s1",group="${group}"} 1`);
      expect(text).toContain(`pg_shard_router_outbox_parked_events{shard="s2",group="${group}"} 0`);
      expect(text).toContain(`pg_shard_router_outbox_pending_events{shard="s2",group="${group}"} 1`);
      const lag = new RegExp(`pg_shard_router_outbox_lag_seconds\\{shard="s2",group="${group}"\\} ([0-9.e+-]+)`).exec(text);
      expect(Number(lag![1])).toBeGreaterThan(0);
      expect(text).not.toMatch(/\b(key|bucket)="/);
    } finally {
      registered.unregister();
    }
    // Without the option there is no outbox gauge (no query per scrape).
    const plain = registerMetrics(router, { registry });
    expect(await registry.metrics()).not.toContain('outbox_');
    plain.unregister();
    const notARouter = { metrics: () => router.metrics() };
    expect(() => registerMetrics(notARouter, { registry, outbox: true })).toThrow(/outbox/);
  });

  it('sagas: true adds sagas running, compensating and parked per shard, counted in the saga log at scrape time', async () => {
    const [runningKey, compensatingKey, parkedKey] = keysOn(router, ['s1', 's2', 's2'], 'sga');
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const fail = () => Promise.reject(new Error('this step fails'));
    const steps = (run: () => Promise<unknown>, compensate: () => Promise<void>) => [
      { name: 'first', run: async () => 1, compensate },
      { name: 'second', run },
    ];
    const running = router.defineSaga(
      uniqueName('sg_run'),
      steps(
        () => held,
        async () => undefined,
      ),
    );
    const compensating = router.defineSaga(
      uniqueName('sg_comp'),
      steps(fail, () => held),
    );
    const parking = router.defineSaga(uniqueName('sg_park'), steps(fail, fail), {
      maxCompensationAttempts: 1,
      compensationBackoffMillis: 0,
    });
    const parked = await rejectionOf(parking.run(parkedKey!, {}));
    expect((parked as ShardRouterError).code).toBe('SAGA_PARKED');
    const inFlight = [running.run(runningKey!, {}), rejectionOf(compensating.run(compensatingKey!, {}))];
    const registry = new Registry();
    const registered = registerMetrics(router, { registry, sagas: true });
    try {
      expect(registered.names).toContain('pg_shard_router_sagas');
      const sample = (shard: string, state: string) => `pg_shard_router_sagas{shard="${shard}",state="${state}"}`;
      await eventually('both sagas waiting in their step', async () => {
        const text = await registry.metrics();
        return text.includes(`${sample('s1', 'running')} 1`) && text.includes(`${sample('s2', 'compensating')} 1`);
      });
      const text = await registry.metrics();
      expect(text).toContain('# TYPE pg_shard_router_sagas gauge');
      expect(text).toContain(`${sample('s2', 'parked')} 1`);
      for (const [shard, state] of [
        ['s1', 'compensating'],
        ['s1', 'parked'],
        ['s2', 'running'],
        ['s3', 'running'],
      ])
        expect(text).toContain(`${sample(shard!, state!)} 0`);
      expect(text).not.toMatch(/state="(completed|compensated|resolved)"/);
      // The same numbers without prom-client.
      const counts = await router.sagas.counts();
      expect(counts).toHaveLength(router.shardIds.length * 3);
      expect(counts).toContainEqual({ shardId: 's2', state: 'parked', count: 1 });
      release();
      await Promise.all(inFlight);
      await eventually(
        'nothing running or compensating',
        async () => !/state="(running|compensating)"} [1-9]/.test(await registry.metrics()),
      );
    } finally {
      release();
      registered.unregister();
    }
    // Without the option there is no saga gauge (no query per scrape).
    const plain = registerMetrics(router, { registry });
    expect(await registry.metrics()).not.toContain('_sagas');
    plain.unregister();
    expect(() => registerMetrics({ metrics: () => router.metrics() }, { registry, sagas: true })).toThrow(/sagas/);
  });

  it('takes a prefix, refuses a bad one and a second registration under the same names', () => {
    const registry = new Registry();
    const registered = registerMetrics(router, { registry, prefix: 'app_db_' });
    expect(registered.names).toContain('app_db_statements_total');
    const twice = (() => {
      try {
        registerMetrics(router, { registry, prefix: 'app_db_' });
      } catch (error) {
        return error;
      }
    })();
    expect(twice).toBeInstanceOf(ShardRouterError);
    expect((twice as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    expect(() => registerMetrics(router, { registry, prefix: 'bad prefix' })).toThrow(/prefix/);
    registered.unregister();
  });
});
