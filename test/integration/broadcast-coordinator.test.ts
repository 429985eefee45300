import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/index.js';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, rejectionOf, uniqueName } from '../support/cluster.js';

/**
 * The coordinator step's edges (its answers are checked by the differential corpus): the limits,
 * streaming, partial mode, timeouts, moves guards, and that its temporary data never outlives a
 * broadcast, whatever happened.
 */

const T = uniqueName('bco');
/** A table on every shard but s3: s3 fails any query reading it. */
const P = `${T}_p`;
/** A registered sharded table (its reads carry the moves guard). */
const S = `${T}_s`;
const ROWS = 40;
/** This file's routers' application_name: their sessions, told apart from other files'. */
const APP = `psr-test-${T}`.slice(0, 63);

let router: ShardRouter;
let small: ShardRouter;
let catalog: string;

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, applicationName: APP, broadcast: { coordinatorShard: 's0' } });
  small = await connectFreshRouter({
    catalogSchema: catalog,
    applicationName: APP,
    broadcast: { maxIntermediateRows: 10, maxIntermediateBytes: 1_000_000 },
  });
  await router.broadcast(`CREATE TABLE ${T} (id bigint PRIMARY KEY, g text, k int4)`);
  await router.broadcast(`CREATE TABLE ${S} (id bigint PRIMARY KEY, g text, k int4)`);
  for (const shardId of ['s0', 's1', 's2']) await router.executeOn(shardId, `CREATE TABLE ${P} (id bigint PRIMARY KEY, k int4)`);
  for (let id = 1; id <= ROWS; id++) {
    await router.execute(id, `INSERT INTO ${T} VALUES ($1, $2, $3)`, [id, `g${id % 4}`, id % 7]);
    await router.execute(id, `INSERT INTO ${S} VALUES ($1, $2, $3)`, [id, `g${id % 4}`, id % 7]);
    if (router.shardFor(id) !== 's3') await router.execute(id, `INSERT INTO ${P} VALUES ($1, $2)`, [id, id % 5]);
  }
  await router.registerShardedTable(S, 'id');
});

afterAll(async () => {
  await small?.close();
  if (router) {
    for (const table of [S, T, P]) await router.broadcast(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
    await router.close();
  }
  if (catalog) await dropSchemas(catalog);
});

/**
 * No transaction of this file's routers left open on any shard (their connections carry APP as
 * application_name; coordinator temp tables are ON COMMIT DROP, so a leftover one means an open
 * transaction), and no coordinator temp table at all. Other files' coordinator steps (and this
 * router's own background passes) may be running at the moment of a look, so it looks again for
 * up to 15 s until both counts are 0: theirs end within moments, a leak never does.
 */
async function expectNothingLeft(): Promise<void> {
  for (const shardId of router.shardIds) {
    let rows: { temps: string; open: string }[] = [];
    for (let attempt = 0; attempt < 30; attempt++) {
      ({ rows } = await router.executeOn<{ temps: string; open: string }>(
        shardId,
        `SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE '\\_\\_psr\\_in%' AND relpersistence = 't') AS temps,
                (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1
                   AND pid <> pg_backend_pid() AND xact_start IS NOT NULL) AS open`,
        [APP],
      ));
      if (rows[0]?.open === '0' && rows[0]?.temps === '0') break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(rows).toEqual([{ temps: '0', open: '0' }]);
  }
}

describe('coordinator step', () => {
  it('answers a DISTINCT aggregate with an expression over an aggregate, like one server would', async () => {
    const { rows, fields } = await router.broadcast(
      `SELECT g, count(DISTINCT k) AS dk, round(avg(k), 2) AS ak FROM ${T} GROUP BY g ORDER BY g`,
    );
    const expected = ['g0', 'g1', 'g2', 'g3'].map((g, i) => {
      const ks = Array.from({ length: ROWS }, (_, n) => n + 1)
        .filter((id) => id % 4 === i)
        .map((id) => id % 7);
      return { g, dk: String(new Set(ks).size), ak: (ks.reduce((a, b) => a + b, 0) / ks.length).toFixed(2) };
    });
    expect(rows).toEqual(expected);
    expect(fields.map((field) => field.name)).toEqual(['g', 'dk', 'ak']);
    await expectNothingLeft();
  });

  it('passes parameters to the shards (renumbered) and to the outer query, and guards a registered table against moves', async () => {
    const sql = `SELECT count(DISTINCT k) AS dk FROM ${S} WHERE g = $2 AND id > $1`;
    expect(router.explain(sql)).toContain('Moves guard');
    const { rows } = await router.broadcast(sql, [10, 'g1']);
    const ks = new Set(
      Array.from({ length: ROWS }, (_, n) => n + 1)
        .filter((id) => id > 10 && id % 4 === 1)
        .map((id) => id % 7),
    );
    expect(rows).toEqual([{ dk: String(ks.size) }]);
  });

  it('fails with RESULT_TOO_LARGE naming the limit and how to raise it, and leaves nothing behind', async () => {
    const error = await rejectionOf(small.broadcast(`SELECT count(DISTINCT k) FROM ${T}`));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('RESULT_TOO_LARGE');
    expect((error as ShardRouterError).message).toContain('broadcast.maxIntermediateRows');
    expect((error as ShardRouterError).retryable).toBe(false);
    await expectNothingLeft();
    // Under the limit it answers; merge-only queries never pull rows.
    expect((await small.broadcast(`SELECT count(DISTINCT k) AS dk FROM ${T} WHERE id <= 8`)).rows).toEqual([{ dk: '7' }]);
    expect((await small.broadcast(`SELECT count(*) AS n FROM ${T}`)).rows).toEqual([{ n: String(ROWS) }]);
  });

  it('streams the outer query through a cursor, and an early break leaves nothing behind', async () => {
    const sql = `SELECT id, row_number() OVER (ORDER BY id DESC) AS rn FROM ${T} ORDER BY id`;
    const streamed: unknown[] = [];
    for await (const row of router.broadcastStream(sql, [], { batchSize: 3 })) streamed.push(row);
    expect(streamed).toEqual((await router.broadcast(sql)).rows);
    expect(streamed).toHaveLength(ROWS);
    for await (const row of router.broadcastStream(sql, [], { batchSize: 2 })) {
      expect(row).toEqual({ id: '1', rn: String(ROWS) });
      break;
    }
    await expectNothingLeft();
  });

  it('partial mode answers from the shards that could, and says which failed; otherwise the whole broadcast fails', async () => {
    const sql = `SELECT count(DISTINCT k) AS dk, count(*) AS n FROM ${P}`;
    const partial = await router.broadcast(sql, [], { partial: true });
    const present = Array.from({ length: ROWS }, (_, n) => n + 1).filter((id) => router.shardFor(id) !== 's3');
    expect(partial.rows).toEqual([{ dk: String(new Set(present.map((id) => id % 5)).size), n: String(present.length) }]);
    expect(partial.failures.map((failure) => failure.shardId)).toEqual(['s3']);
    await expect(router.broadcast(sql)).rejects.toMatchObject({ code: 'QUERY_FAILED', sqlState: '42P01' });
    await expectNothingLeft();
  });

  it('a timeout cancels the outer query on the coordinator and drops its temporary data', async () => {
    const error = await rejectionOf(router.broadcast(`SELECT count(DISTINCT k), pg_sleep(3) FROM ${T}`, [], { timeoutMillis: 500 }));
    expect((error as ShardRouterError).code).toBe('BROADCAST_TIMEOUT');
    await expectNothingLeft();
    expect((await router.broadcast(`SELECT count(DISTINCT g) AS dg FROM ${T}`)).rows).toEqual([{ dg: '4' }]);
  });

  it('a shard error in the outer query passes through and leaves nothing behind', async () => {
    await expect(router.broadcast(`SELECT count(DISTINCT k) / 0 FROM ${T}`)).rejects.toMatchObject({ sqlState: '22012' });
    await expectNothingLeft();
  });
});

describe('still refused, with UNSUPPORTED naming the construct, and nothing sent', () => {
  it.each([
    ['recursive CTE', `WITH RECURSIVE r(n) AS (SELECT min(id) FROM ${T} UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT n FROM r`],
    ['random()', `SELECT id FROM ${T} WHERE random() < 0.5`],
    ['random()', `SELECT count(*) FROM ${T} a JOIN ${T} b ON a.id = b.id AND random() < 0.5`],
    ['coordinator step', `UPDATE ${T} SET k = (SELECT max(k) FROM ${T})`],
    ['coordinator step', `INSERT INTO ${T} (id, g, k) SELECT max(id) + 1, 'x', 0 FROM ${T}`],
    ['FOR UPDATE', `SELECT id FROM ${T} WHERE id IN (SELECT id FROM ${T}) FOR UPDATE`],
  ])('%s: %s', async (construct, sql) => {
    const error = await rejectionOf(router.broadcast(sql));
    expect((error as ShardRouterError).code).toBe('UNSUPPORTED');
    expect((error as ShardRouterError).message.toLowerCase()).toContain(construct.toLowerCase());
    expect((await router.broadcast<{ n: string; s: string }>(`SELECT count(*) AS n, sum(k) AS s FROM ${T}`)).rows).toEqual([
      { n: String(ROWS), s: String(Array.from({ length: ROWS }, (_, n) => (n + 1) % 7).reduce((a, b) => a + b, 0)) },
    ]);
  });
});
