import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeId } from '../../src/ids/layout.js';
import { ShardRouter } from '../../src/index.js';
import type { ShardRouterError } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, rejectionOf, shardConfigs, uniqueName } from '../support/cluster.js';
import { keyOn, keysOn } from '../support/keys.js';

/**
 * router.query's routes (explainQuery), refusals with nothing written, requireKey, tx.query,
 * INSERTs relying on next_id() as DEFAULT, and writes fenced while a bucket moves.
 */

const ACCOUNTS = uniqueName('qa');
const NOTES = uniqueName('qn');
const catalog = uniqueName('cat');
let router: ShardRouter;

beforeAll(async () => {
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  await router.broadcast(`CREATE TABLE ${ACCOUNTS} (owner text PRIMARY KEY, balance integer NOT NULL DEFAULT 0)`);
  await router.broadcast(`CREATE TABLE ${NOTES} (id bigint PRIMARY KEY DEFAULT "${catalog}".next_id(), owner text NOT NULL, body text)`);
  await router.registerShardedTable(ACCOUNTS, 'owner');
  await router.registerShardedTable(NOTES, 'owner');
});

afterAll(async () => {
  await router.broadcast(`DROP TABLE IF EXISTS ${ACCOUNTS}, ${NOTES}`).catch(() => undefined);
  await router.close();
  await dropSchemas(catalog);
});

/** Every row of both tables, as one comparable snapshot. */
async function snapshot(): Promise<string> {
  const accounts = await router.broadcast(`SELECT owner, balance FROM ${ACCOUNTS} ORDER BY owner`);
  const notes = await router.broadcast(`SELECT id::text, owner, body FROM ${NOTES} ORDER BY id`);
  return JSON.stringify([accounts.rows, notes.rows]);
}

describe('routes', () => {
  it("a point statement goes to the key's shard; the same text with other params goes elsewhere", async () => {
    const [a, b] = keysOn(router, ['s0', 's2'], 'route');
    const sql = `SELECT * FROM ${ACCOUNTS} WHERE owner = $1`;
    expect(await router.explainQuery(sql, [a])).toMatchObject({ kind: 'shard', shardId: 's0' });
    expect(await router.explainQuery(sql, [b])).toMatchObject({ kind: 'shard', shardId: 's2' });
    const many = await router.explainQuery(`SELECT * FROM ${ACCOUNTS} WHERE owner = ANY($1)`, [[a, b]]);
    expect(many).toMatchObject({ kind: 'broadcast', shardIds: ['s0', 's2'] });
    expect(await router.explainQuery(`UPDATE ${ACCOUNTS} SET balance = 0 WHERE owner IN ($1, $2)`, [a, b])).toMatchObject({
      kind: 'write',
      shardIds: ['s0', 's2'],
    });
    expect(await router.explainQuery(`DELETE FROM ${ACCOUNTS} WHERE balance < 0`)).toMatchObject({ kind: 'write', shardIds: 'all' });
    const unpinned = await router.explainQuery(`SELECT count(*) FROM ${ACCOUNTS}`);
    expect(unpinned.kind).toBe('broadcast');
    expect(unpinned.broadcastPlan).toContain('Shard query');
    const split = await router.explainQuery(`INSERT INTO ${ACCOUNTS} (owner) VALUES ($1), ($2), ($1::text)`, [b, a]);
    expect(split).toMatchObject({
      kind: 'insert',
      parts: [
        { shardId: 's0', rows: [1] },
        { shardId: 's2', rows: [0, 2] },
      ],
    });
    const keyless = await router.explainQuery(`SELECT * FROM ${ACCOUNTS} WHERE owner = $1`, [null]);
    expect(keyless.kind).toBe('shard');
  });

  it('a multi-row INSERT split over shards: each row on its shard, RETURNING in input order, params renumbered per shard', async () => {
    const keys = keysOn(router, ['s1', 's3', 's0', 's2'], 'split');
    keys.push(keyOn(router, 's1', 'split2'));
    const values = keys.map((_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ');
    const params = keys.flatMap((key, i) => [key, i * 10]);
    const { rows, rowCount, shardIds } = await router.query<{ owner: string; balance: number }>(
      `INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ${values} RETURNING owner, balance`,
      params,
    );
    expect(rowCount).toBe(keys.length);
    expect(rows).toEqual(keys.map((owner, i) => ({ owner, balance: i * 10 })));
    expect([...shardIds].sort()).toEqual(['s0', 's1', 's2', 's3']);
    for (const key of keys) {
      const onOwner = await router.executeOn(router.shardFor(key), `SELECT 1 FROM ${ACCOUNTS} WHERE owner = $1`, [key]);
      expect(onOwner.rowCount).toBe(1);
    }
  });

  it('INSERTs that rely on next_id() as DEFAULT get ids from the shard they land on', async () => {
    const keys = keysOn(router, ['s0', 's1', 's2', 's3'], 'note');
    const { rows } = await router.query<{ id: string; owner: string }>(
      `INSERT INTO ${NOTES} (owner, body) VALUES ($1, 'a'), ($2, 'b'), ($3, 'c'), ($4, 'd') RETURNING id::text, owner`,
      keys,
    );
    expect(rows.map((row) => row.owner)).toEqual(keys);
    expect(new Set(rows.map((row) => row.id)).size).toBe(4);
    for (const row of rows) {
      const { rows: slot } = await router.executeOn<{ slot: number }>(router.shardFor(row.owner), `SELECT "${catalog}".id_slot() AS slot`);
      expect(decodeId(row.id).slot).toBe(slot[0]!.slot);
    }
  });
});

describe('refusals: typed, nothing written, the router stays usable', () => {
  const a = () => keyOn(router, 's0', 'refuse');
  const b = () => keyOn(router, 's1', 'refuse');

  it('refuses what it cannot route exactly', async () => {
    await router.query(`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 1), ($2, 2)`, [a(), b()]);
    const before = await snapshot();
    const cases: [string, unknown[], string, RegExp][] = [
      [`UPDATE ${ACCOUNTS} SET owner = $2 WHERE owner = $1`, [a(), 'x'], 'UNSUPPORTED', /router\.transaction/],
      [`INSERT INTO ${ACCOUNTS} (owner) SELECT owner || 'x' FROM ${ACCOUNTS}`, [], 'UNSUPPORTED', /INSERT \.\.\. SELECT/],
      [`INSERT INTO ${ACCOUNTS} (balance) VALUES (1)`, [], 'INVALID_ARGUMENT', /no value for the shard key/],
      [`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 1), (DEFAULT, 2)`, ['k'], 'INVALID_ARGUMENT', /row 2/],
      [`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 1), ($2, 2)`, [a(), null], 'INVALID_ARGUMENT', /NULL shard key/],
      [`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES (NULL, 1)`, [], 'INVALID_ARGUMENT', /NULL shard key/],
      [`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES (upper($1), 1)`, ['x'], 'UNSUPPORTED', /shard-key expression/],
      [
        `INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 1) ON CONFLICT (owner) DO UPDATE SET owner = excluded.owner || 'x'`,
        [a()],
        'UNSUPPORTED',
        /ON CONFLICT/,
      ],
      [
        `INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 5), ($2, 5) ON CONFLICT DO NOTHING RETURNING owner`,
        [a(), b()],
        'UNSUPPORTED',
        /RETURNING/,
      ],
      [`INSERT INTO ${ACCOUNTS} VALUES ($1, 1)`, [a()], 'UNSUPPORTED', /column list/],
      [`SELECT * FROM not_registered_${ACCOUNTS} WHERE owner = $1`, [a()], 'UNSUPPORTED', /registerShardedTable/],
      [`UPDATE ${ACCOUNTS} a SET balance = 0 FROM ${NOTES} n WHERE n.owner = a.owner`, [], 'UNSUPPORTED', /without a pinned shard key/],
      [
        `DELETE FROM ${ACCOUNTS} a USING ${NOTES} n WHERE n.owner = a.owner AND a.owner IN ($1, $2)`,
        [a(), b()],
        'UNSUPPORTED',
        /write joining tables whose shard keys fall on several shards/,
      ],
      [`DELETE FROM ${ACCOUNTS} WHERE owner IN (SELECT owner FROM ${NOTES} WHERE owner = $1)`, [a()], 'UNSUPPORTED', /subquery/],
      [`WITH x AS (SELECT 1) DELETE FROM ${ACCOUNTS} WHERE owner = $1`, [a()], 'UNSUPPORTED', /WITH/],
      [`WITH d AS (DELETE FROM ${ACCOUNTS} WHERE owner = $1 RETURNING owner) SELECT * FROM d`, [a()], 'UNSUPPORTED', /data-modifying/],
      [`SELECT owner INTO ${ACCOUNTS}_y FROM ${ACCOUNTS} WHERE owner = $1`, [a()], 'UNSUPPORTED', /INTO/],
      // The broadcast planner's own refusal (an unpinned recursive CTE).
      [
        `WITH RECURSIVE r(n) AS (SELECT count(*) FROM ${ACCOUNTS} UNION ALL SELECT n - 1 FROM r WHERE n > 0) SELECT n FROM r`,
        [],
        'UNSUPPORTED',
        /./,
      ],
      [`CREATE TABLE ${ACCOUNTS}_x (a int)`, [], 'UNSUPPORTED', /broadcast/],
      [`SELECT * FROM ${ACCOUNTS} WHERE owner = $1`, [], 'INVALID_ARGUMENT', /\$1/],
      [`SELECT * FROM ${ACCOUNTS} WHERE owner = ANY($1)`, ['not-an-array'], 'INVALID_ARGUMENT', /array/],
      ['SELEC 1', [], 'INVALID_SQL', /parse/],
    ];
    for (const [sql, params, code, message] of cases) {
      const error = (await rejectionOf(router.query(sql, params))) as ShardRouterError;
      expect({ sql, code: error.code, message: message.test(error.message) ? 'matches' : error.message }).toEqual({
        sql,
        code,
        message: 'matches',
      });
    }
    expect(await snapshot()).toBe(before);
    expect((await router.query(`SELECT balance FROM ${ACCOUNTS} WHERE owner = $1`, [a()])).rows).toEqual([{ balance: 1 }]);
  });

  it('requireKey (per call, or the config default) refuses statements that would run on every shard', async () => {
    const before = await snapshot();
    for (const sql of [
      `UPDATE ${ACCOUNTS} SET balance = balance + 1`,
      `DELETE FROM ${ACCOUNTS}`,
      `SELECT * FROM ${ACCOUNTS} WHERE balance > 0`,
    ]) {
      await expect(router.query(sql, [], { requireKey: true })).rejects.toMatchObject({ code: 'KEY_REQUIRED' });
    }
    const strict = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
      query: { requireKey: true },
    });
    try {
      await expect(strict.query(`UPDATE ${ACCOUNTS} SET balance = balance + 1`)).rejects.toMatchObject({ code: 'KEY_REQUIRED' });
      expect(await snapshot()).toBe(before);
      const pinned = await strict.query(`SELECT balance FROM ${ACCOUNTS} WHERE owner = $1`, [a()]);
      expect(pinned.rows).toEqual([{ balance: 1 }]);
      const allowed = await strict.query<{ n: string }>(`SELECT count(*) AS n FROM ${ACCOUNTS}`, [], { requireKey: false });
      expect(Number(allowed.rows[0]!.n)).toBeGreaterThan(0);
    } finally {
      await strict.close();
    }
  });
});

describe('tx.query', () => {
  it('routes within the declared shards, refuses others, and rolls back with the transaction', async () => {
    const [x, y] = keysOn(router, ['s1', 's2'], 'txq');
    const z = keyOn(router, 's3', 'txq');
    await router.transaction([x!, y!], async (tx) => {
      const inserted = await tx.query(`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 100), ($2, 0) RETURNING owner`, [x, y]);
      expect(inserted.rows).toEqual([{ owner: x }, { owner: y }]);
      await tx.query(`UPDATE ${ACCOUNTS} SET balance = balance - 30 WHERE owner = $1`, [x]);
      await tx.query(`UPDATE ${ACCOUNTS} SET balance = balance + 30 WHERE owner = $1`, [y]);
      const refused = await rejectionOf(tx.query(`UPDATE ${ACCOUNTS} SET balance = 1 WHERE owner = $1`, [z]));
      expect(refused).toMatchObject({ code: 'KEY_NOT_IN_TRANSACTION' });
      const everywhere = await rejectionOf(tx.query(`UPDATE ${ACCOUNTS} SET balance = 1`));
      expect(everywhere).toMatchObject({ code: 'KEY_NOT_IN_TRANSACTION' });
    });
    const after = await router.query<{ owner: string; balance: number }>(
      `SELECT owner, balance FROM ${ACCOUNTS} WHERE owner IN ($1, $2) ORDER BY balance`,
      [x, y],
    );
    expect(after.rows).toEqual([
      { owner: y, balance: 30 },
      { owner: x, balance: 70 },
    ]);
    const failed = await rejectionOf(
      router.transaction([x!, y!], async (tx) => {
        await tx.query(`UPDATE ${ACCOUNTS} SET balance = 0 WHERE owner = ANY($1)`, [[x, y]]);
        throw new Error('changed my mind');
      }),
    );
    expect((failed as Error).message).toBe('changed my mind');
    expect((await router.query(`SELECT sum(balance) AS s FROM ${ACCOUNTS} WHERE owner = ANY($1)`, [[x, y]])).rows[0]!.s).toBe('100');
  });
});

describe('tx.query over several participants', () => {
  it("merges a SELECT over the declared shards on the transaction's own sessions, uncommitted writes included", async () => {
    const [x, y, w] = keysOn(router, ['s0', 's1', 's2'], 'txmerge');
    const z = keyOn(router, 's3', 'txmerge');
    await router.query(`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 5)`, [w]);
    await router.transaction([x!, y!, w!], async (tx) => {
      await tx.query(`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 10), ($2, 20)`, [x, y]);
      await tx.query(`UPDATE ${ACCOUNTS} SET balance = balance + 1 WHERE owner = $1`, [w]);
      // Read on the transaction's sessions: its own uncommitted rows, merged in order.
      const ordered = await tx.query<{ owner: string; balance: number }>(
        `SELECT owner, balance FROM ${ACCOUNTS} WHERE owner = ANY($1) ORDER BY balance DESC LIMIT 2`,
        [[x, y, w]],
      );
      expect(ordered.rows).toEqual([
        { owner: y, balance: 20 },
        { owner: x, balance: 10 },
      ]);
      expect([...ordered.shardIds].sort()).toEqual(['s0', 's1', 's2']);
      const totals = await tx.query(
        `SELECT count(*) AS n, sum(balance) AS s, min(balance) AS low FROM ${ACCOUNTS} WHERE owner IN ($1, $2, $3)`,
        [x, y, w],
      );
      expect(totals.rows).toEqual([{ n: '3', s: '36', low: 6 }]);
      // Outside the transaction nothing of it is visible yet.
      const outside = await router.query(`SELECT count(*)::int AS n FROM ${ACCOUNTS} WHERE owner = ANY($1)`, [[x, y]]);
      expect(outside.rows).toEqual([{ n: 0 }]);
      // Refused before anything is sent, so the transaction goes on.
      const undeclared = await rejectionOf(tx.query(`SELECT owner FROM ${ACCOUNTS} WHERE owner = ANY($1)`, [[x, z]]));
      expect(undeclared).toMatchObject({ code: 'KEY_NOT_IN_TRANSACTION' });
      const unpinned = await rejectionOf(tx.query(`SELECT count(*) FROM ${ACCOUNTS}`));
      expect(unpinned).toMatchObject({ code: 'KEY_NOT_IN_TRANSACTION' });
      const coordinated = await rejectionOf(
        tx.query(`SELECT owner, rank() OVER (ORDER BY balance) FROM ${ACCOUNTS} WHERE owner = ANY($1)`, [[x, y]]),
      );
      expect(coordinated).toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/coordinator step/) });
    });
    const committed = await router.query<{ owner: string; balance: number }>(
      `SELECT owner, balance FROM ${ACCOUNTS} WHERE owner = ANY($1)`,
      [[x, y, w]],
    );
    expect(new Map(committed.rows.map((row) => [row.owner, row.balance]))).toEqual(
      new Map([
        [x, 10],
        [y, 20],
        [w, 6],
      ]),
    );
  });
});

describe('reads while a bucket moves', () => {
  it('a SELECT pinned to keys on several shards neither misses nor double counts rows while their buckets move', async () => {
    const keys = Array.from({ length: 12 }, (_, i) => `pinned-read-${i}`);
    await router.query(`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ${keys.map((_, i) => `($${i + 1}, ${i + 1})`).join(', ')}`, keys);
    const expected = { n: keys.length, s: (keys.length * (keys.length + 1)) / 2 };
    let stop = false;
    const seen: unknown[] = [];
    const readers = Array.from({ length: 2 }, async () => {
      while (!stop) {
        const { rows } = await router.query<{ n: number; s: number }>(
          `SELECT count(*)::int AS n, sum(balance)::int AS s FROM ${ACCOUNTS} WHERE owner = ANY($1)`,
          [keys],
        );
        seen.push(rows[0]);
        const listed = await router.query<{ owner: string }>(`SELECT owner FROM ${ACCOUNTS} WHERE owner IN ($1, $2, $3) ORDER BY owner`, [
          keys[0],
          keys[5],
          keys[9],
        ]);
        seen.push(listed.rows.length);
      }
    });
    const rebalancer = router.rebalancer();
    // Each move leaves the source's copy until its clean-up: a read must count the bucket once.
    for (const key of keys.slice(0, 3)) {
      const from = router.shardFor(key);
      await rebalancer.moveBucket(router.bucketFor(key), router.shardIds.find((id) => id !== from)!);
    }
    stop = true;
    await Promise.all(readers);
    expect(seen.length).toBeGreaterThan(4);
    expect(seen.filter((row) => typeof row === 'object')).toEqual(seen.filter((row) => typeof row === 'object').map(() => expected));
    expect(seen.filter((row) => typeof row === 'number')).toEqual(seen.filter((row) => typeof row === 'number').map(() => 3));
  }, 120_000);
});

describe('writes while a bucket moves', () => {
  it("a stale router's query writes are refused by the fence (nothing written), then go to the new owner", async () => {
    const stale = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
      mapRefresh: { intervalMillis: 0, listen: false },
    });
    try {
      stale.refreshMap = async () => stale.bucketMap;
      const key = keyOn(stale, 's0', 'moving');
      const other = keyOn(stale, 's2', 'moving');
      await stale.query(`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ($1, 5)`, [key]);
      await router.refreshMap();
      await router.rebalancer().moveBucket(stale.bucketFor(key), 's1');
      const before = await snapshot();
      const writes: [string, unknown[]][] = [
        [`UPDATE ${ACCOUNTS} SET balance = 99 WHERE owner = $1`, [key]],
        [`UPDATE ${ACCOUNTS} SET balance = 99 WHERE owner = ANY($1)`, [[key, other]]],
        [`INSERT INTO ${NOTES} (owner, body) VALUES ($1, 'x'), ($2, 'y')`, [other, key]],
        [`DELETE FROM ${ACCOUNTS} WHERE owner = $1`, [key]],
      ];
      for (const [sql, params] of writes) {
        const retriesBefore = stale.metrics().staleMapRetries;
        const refused = (await rejectionOf(stale.query(sql, params))) as ShardRouterError;
        expect({ sql, code: refused.code, retryable: refused.retryable }).toEqual({ sql, code: 'STALE_BUCKET_MAP', retryable: true });
        // One retry budget (6 attempts: the refused one and at most 5 retries), not a budget per retry of an outer one.
        expect(stale.metrics().staleMapRetries - retriesBefore, sql).toBeLessThanOrEqual(5);
      }
      expect(await snapshot()).toBe(before);
      delete (stale as { refreshMap?: unknown }).refreshMap;
      await stale.query(`UPDATE ${ACCOUNTS} SET balance = 99 WHERE owner = $1`, [key]);
      expect((await router.executeOn('s1', `SELECT balance FROM ${ACCOUNTS} WHERE owner = $1`, [key])).rows).toEqual([{ balance: 99 }]);
      expect((await router.executeOn('s0', `SELECT count(*)::int AS n FROM ${ACCOUNTS} WHERE owner = $1`, [key])).rows).toEqual([{ n: 0 }]);
    } finally {
      await stale.close();
    }
  });

  it('query writes running during moves lose and duplicate nothing', async () => {
    const keys = Array.from({ length: 24 }, (_, i) => `mover-${i}`);
    await router.query(`INSERT INTO ${ACCOUNTS} (owner, balance) VALUES ${keys.map((_, i) => `($${i + 1}, 0)`).join(', ')}`, keys);
    const acknowledged = new Map(keys.map((key) => [key, 0]));
    let stop = false;
    const writers = Array.from({ length: 3 }, async (_, w) => {
      for (let round = 0; !stop; round++) {
        const key = keys[(round * 3 + w) % keys.length]!;
        const pair = keys[(round * 5 + w + 1) % keys.length]!;
        const batch = key === pair ? [key] : [key, pair];
        await router.query(`UPDATE ${ACCOUNTS} SET balance = balance + 1 WHERE owner = ANY($1)`, [batch]);
        for (const k of batch) acknowledged.set(k, acknowledged.get(k)! + 1);
      }
    });
    const rebalancer = router.rebalancer();
    for (const key of keys.slice(0, 4)) {
      const from = router.shardFor(key);
      await rebalancer.moveBucket(router.bucketFor(key), router.shardIds.find((id) => id !== from)!);
    }
    stop = true;
    await Promise.all(writers);
    const { rows } = await router.query<{ owner: string; balance: number }>(
      `SELECT owner, balance FROM ${ACCOUNTS} WHERE owner = ANY($1)`,
      [keys],
    );
    expect(new Map(rows.map((row) => [row.owner, row.balance]))).toEqual(acknowledged);
  }, 120_000);
});
