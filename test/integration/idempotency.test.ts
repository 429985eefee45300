import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, ShardRouterError } from '../../src/index.js';
import type { IdempotentReplay } from '../../src/index.js';
import { collectExpiredRecords } from '../../src/idempotency/collector.js';
import type { QueryResultRow } from '../../src/pool/session.js';
import { dropSchemas, eventually, rejectionOf, shardConfigs, shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { keyOn } from '../support/keys.js';

/**
 * Idempotency keys on real shards (docs/idempotency.md): replays without effect, concurrent
 * duplicates, reuse with another shape, a retry after the record's bucket moved, expiry and GC,
 * and bad input. The crash cases are in test/chaos/idempotency-crash.test.ts.
 */

const data = uniqueName('idem');
const catalog = uniqueName('cat');
let router: ShardRouter;

beforeAll(async () => {
  router = await ShardRouter.connect({
    shards: shardConfigs(),
    catalogSchema: catalog,
    bucketCount: 64,
    recovery: { intervalMillis: 0, atConnect: false },
    idempotency: { gcIntervalMillis: 0 },
    // Concurrent duplicates wait for the first at the claim, up to lockTimeoutMillis: generous on a shared machine.
    transactions: { lockTimeoutMillis: 60_000 },
  });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.accounts (id text PRIMARY KEY, balance bigint NOT NULL)`);
    await router.executeOn(
      shardId,
      `CREATE TABLE ${data}.orders (id bigserial, user_id text NOT NULL, total numeric NOT NULL, placed_at timestamptz NOT NULL DEFAULT now(), tag bytea)`,
    );
  }
  await router.registerShardedTable(`${data}.accounts`, 'id');
  await router.registerShardedTable(`${data}.orders`, 'user_id');
});

afterAll(async () => {
  await router.close();
  await dropSchemas(data, catalog);
});

async function openAccount(id: string, balance = 100): Promise<void> {
  await router.execute(id, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, $2)`, [id, balance]);
}

async function balanceOf(id: string): Promise<number> {
  const { rows } = await router.execute<{ balance: string }>(id, `SELECT balance FROM ${data}.accounts WHERE id = $1`, [id]);
  return Number(rows[0]?.balance);
}

async function ordersOf(user: string): Promise<number> {
  const { rows } = await router.execute<{ n: number }>(user, `SELECT count(*)::int AS n FROM ${data}.orders WHERE user_id = $1`, [user]);
  return rows[0]!.n;
}

/** Records of the cluster on every server, read directly: (server index, anchor, key). */
async function recordsEverywhere(idempotencyKey: string): Promise<{ server: number; anchor: string }[]> {
  const lists = await Promise.all(
    shardUrls()
      .slice(0, 4)
      .map((url, server) =>
        withServer(url, async (client) => {
          const { rows } = await client.query<{ anchor: string }>(
            `SELECT anchor FROM ${catalog}.idempotency_records WHERE idempotency_key = $1`,
            [idempotencyKey],
          );
          return rows.map((row) => ({ server, anchor: row.anchor }));
        }),
      ),
  );
  return lists.flat();
}

/** A transfer of `amount` from the first account to the second, returning a JSON summary. */
function transfer(from: string, to: string, amount: number) {
  return async (tx: Parameters<Parameters<ShardRouter['transaction']>[1]>[0]) => {
    await tx.execute(from, `UPDATE ${data}.accounts SET balance = balance - $2 WHERE id = $1`, [from, amount]);
    await tx.execute(to, `UPDATE ${data}.accounts SET balance = balance + $2 WHERE id = $1`, [to, amount]);
    return { from, to, amount, note: ['moved', null, true, 1.5] };
  };
}

describe('replays', () => {
  it('a 2PC transaction replays its JSON result without running work again; the record sits on the first key shard', async () => {
    const [from, to] = [keyOn(router, 's0', 'r-from'), keyOn(router, 's1', 'r-to')];
    await openAccount(from);
    await openAccount(to);
    let runs = 0;
    const replays: IdempotentReplay[] = [];
    const call = () =>
      router.transaction(
        [from, to],
        async (tx) => {
          runs++;
          return transfer(from, to, 10)(tx);
        },
        { idempotencyKey: 'transfer-1', onReplay: (replay) => replays.push(replay) },
      );
    const first = await call();
    const second = await call();
    expect(first).toEqual({ from, to, amount: 10, note: ['moved', null, true, 1.5] });
    expect(second).toEqual(first);
    expect(runs).toBe(1);
    expect(replays).toEqual([{ idempotencyKey: 'transfer-1', firstRunAt: expect.any(Date), shardId: 's0' }]);
    expect([await balanceOf(from), await balanceOf(to)]).toEqual([90, 110]);
    expect(await recordsEverywhere('transfer-1')).toEqual([{ server: 0, anchor: from }]);
  });

  it('work that returns nothing replays as undefined', async () => {
    const user = keyOn(router, 's2', 'void');
    const call = () =>
      router.transaction(
        [user],
        async (tx) => {
          await tx.execute(user, `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 5)`, [user]);
        },
        { idempotencyKey: 'void-1' },
      );
    expect(await call()).toBeUndefined();
    let replayed = false;
    expect(
      await router.transaction([user], async () => 'ran', { idempotencyKey: 'void-1', onReplay: () => (replayed = true) }),
    ).toBeUndefined();
    expect(replayed).toBe(true);
    expect(await ordersOf(user)).toBe(1);
  });

  it('an execute replays rows, rowCount, command and fields (dates, numerics, bytes) with replayed: true, sending nothing', async () => {
    const user = keyOn(router, 's3', 'exec');
    const sql = `INSERT INTO ${data}.orders (user_id, total, tag) VALUES ($1, $2, $3) RETURNING user_id, total, placed_at, tag, id`;
    const params = [user, '12.50', Buffer.from([1, 2, 255])];
    const first = await router.execute(user, sql, params, { idempotencyKey: 'order-1' });
    const second = await router.execute(user, sql, params, { idempotencyKey: 'order-1' });
    expect(first.replayed).toBe(false);
    expect(second.replayed).toBe(true);
    expect(first.rows[0]!.placed_at).toBeInstanceOf(Date);
    expect(Buffer.isBuffer(first.rows[0]!.tag)).toBe(true);
    const { replayed: _a, ...firstResult } = first;
    const { replayed: _b, ...secondResult } = second;
    expect(secondResult).toEqual(firstResult);
    expect(await ordersOf(user)).toBe(1);
  });

  it('ten concurrent duplicates take effect once: one runs, the others wait for it and replay its result', async () => {
    const [from, to] = [keyOn(router, 's1', 'c-from'), keyOn(router, 's2', 'c-to')];
    await openAccount(from);
    await openAccount(to);
    let runs = 0;
    let replays = 0;
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        router.transaction(
          [from, to],
          async (tx) => {
            runs++;
            const result = await transfer(from, to, 7)(tx);
            // Hold the claim a little, so the others really wait on it.
            await tx.execute(from, 'SELECT pg_sleep(0.2)');
            return result;
          },
          { idempotencyKey: 'concurrent-1', onReplay: () => replays++ },
        ),
      ),
    );
    expect(runs).toBe(1);
    expect(replays).toBe(9);
    for (const result of results) expect(result).toEqual(results[0]);
    expect([await balanceOf(from), await balanceOf(to)]).toEqual([93, 107]);
  });

  it('ten concurrent duplicate executes under REPEATABLE READ-free defaults insert one row', async () => {
    const user = keyOn(router, 's0', 'cexec');
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        router.execute(user, `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 1) RETURNING id`, [user], {
          idempotencyKey: 'concurrent-exec',
        }),
      ),
    );
    expect(results.filter((result) => !result.replayed)).toHaveLength(1);
    expect(new Set(results.map((result) => String(result.rows[0]!.id))).size).toBe(1);
    expect(await ordersOf(user)).toBe(1);
  });

  it('duplicates of a REPEATABLE READ transaction also take effect once', async () => {
    const user = keyOn(router, 's3', 'rr');
    let runs = 0;
    await Promise.all(
      Array.from({ length: 5 }, () =>
        router.transaction(
          [user],
          async (tx) => {
            runs++;
            await tx.execute(user, `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 2)`, [user]);
            await tx.execute(user, 'SELECT pg_sleep(0.1)');
            return 'placed';
          },
          { idempotencyKey: 'rr-1', isolation: 'repeatable read' },
        ),
      ),
    );
    expect(runs).toBe(1);
    expect(await ordersOf(user)).toBe(1);
  });

  it('a transaction whose work threw leaves no record: the retry runs', async () => {
    const user = keyOn(router, 's1', 'thrown');
    const failed = await rejectionOf(
      router.transaction(
        [user],
        async (tx) => {
          await tx.execute(user, `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 3)`, [user]);
          throw new Error('boom');
        },
        { idempotencyKey: 'thrown-1' },
      ),
    );
    expect((failed as Error).message).toBe('boom');
    expect(await ordersOf(user)).toBe(0);
    expect(
      await router.transaction(
        [user],
        async (tx) => {
          await tx.execute(user, `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 3)`, [user]);
          return 'second';
        },
        { idempotencyKey: 'thrown-1' },
      ),
    ).toBe('second');
    expect(await ordersOf(user)).toBe(1);
  });
});

describe('misuse', () => {
  it('the same key with other keys, SQL or params is IDEMPOTENCY_KEY_REUSED (not retryable) and runs nothing', async () => {
    const [a, b, c] = [keyOn(router, 's0', 'm-a'), keyOn(router, 's1', 'm-b'), keyOn(router, 's2', 'm-c')];
    for (const id of [a, b, c]) await openAccount(id);
    await router.transaction([a, b], transfer(a, b, 1), { idempotencyKey: 'misuse-1' });
    let ran = false;
    const otherKeys = await rejectionOf(
      router.transaction(
        [a, c],
        async () => {
          ran = true;
        },
        { idempotencyKey: 'misuse-1' },
      ),
    );
    expect(otherKeys).toBeInstanceOf(ShardRouterError);
    expect(otherKeys).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', retryable: false });
    expect(ran).toBe(false);

    const sql = `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, $2)`;
    await router.execute(a, sql, [a, 1], { idempotencyKey: 'misuse-2' });
    const otherParams = await rejectionOf(router.execute(a, sql, [a, 2], { idempotencyKey: 'misuse-2' }));
    const otherSql = await rejectionOf(router.execute(a, `${sql} RETURNING id`, [a, 1], { idempotencyKey: 'misuse-2' }));
    const asTransaction = await rejectionOf(router.transaction([a], async () => 1, { idempotencyKey: 'misuse-2' }));
    for (const error of [otherParams, otherSql, asTransaction]) expect(error).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' });
    expect(await ordersOf(a)).toBe(1);
    expect([await balanceOf(a), await balanceOf(b), await balanceOf(c)]).toEqual([99, 101, 100]);
  });
});

describe('bad input', () => {
  it('bad keys, bad options and results that do not survive JSON are INVALID_ARGUMENT, nothing written, router usable', async () => {
    const user = keyOn(router, 's2', 'bad');
    const insert = `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 1)`;
    const badKeys: unknown[] = ['', 'x'.repeat(201), 42, null, 'nul\u0000', '\uD800lone'];
    for (const idempotencyKey of badKeys) {
      const error = await rejectionOf(router.execute(user, insert, [user], { idempotencyKey } as { idempotencyKey: string }));
      expect(error, String(idempotencyKey)).toMatchObject({ code: 'INVALID_ARGUMENT' });
      const inTx = await rejectionOf(router.transaction([user], async () => 1, { idempotencyKey } as { idempotencyKey: string }));
      expect(inTx).toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    expect((await router.execute(user, 'SELECT 1 AS one', [], { idempotencyKey: 'k'.repeat(200) })).rows).toEqual([{ one: 1 }]);
    const unknownOption = await rejectionOf(router.execute(user, insert, [user], { idempotencyKey: 'o', ttl: 5 } as never));
    expect(unknownOption).toMatchObject({ code: 'INVALID_ARGUMENT' });
    const readOnly = await rejectionOf(router.transaction([user], async () => 1, { idempotencyKey: 'ro', readOnly: true }));
    expect(readOnly).toMatchObject({ code: 'INVALID_ARGUMENT' });
    const badCallback = await rejectionOf(router.transaction([user], async () => 1, { idempotencyKey: 'cb', onReplay: 5 as never }));
    expect(badCallback).toMatchObject({ code: 'INVALID_ARGUMENT' });
    const badKey = await rejectionOf(router.transaction([{} as never], async () => 1, { idempotencyKey: 'bk' }));
    expect(badKey).toMatchObject({ code: 'INVALID_KEY' });

    const notJson: unknown[] = [new Date(), { at: new Date() }, 10n, Number.NaN, { f: () => 1 }, [undefined], new Map(), { u: undefined }];
    for (const [n, value] of notJson.entries()) {
      const error = await rejectionOf(
        router.transaction(
          [user],
          async (tx) => {
            await tx.execute(user, insert, [user]);
            return value;
          },
          { idempotencyKey: `not-json-${n}` },
        ),
      );
      expect(error, `value ${n}`).toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    const interval = await rejectionOf(
      router.execute(user, `${insert} RETURNING interval '1 day' AS i`, [user], { idempotencyKey: 'interval' }),
    );
    expect(interval).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((interval as Error).message).toMatch(/cast it to text/);
    // Nothing of the refused calls was written: no orders, no records.
    expect(await ordersOf(user)).toBe(0);
    for (const key of ['interval', 'not-json-0', 'ro', '']) expect(await recordsEverywhere(key)).toEqual([]);
    // And the router is fine.
    expect(await router.transaction([user], async () => ({ ok: true }), { idempotencyKey: 'after-bad' })).toEqual({ ok: true });
  });

  it('a bad idempotency config is INVALID_CONFIG', async () => {
    for (const idempotency of [{ ttlMillis: 0 }, { ttlMillis: 1.5 }, { ttlMillis: -1 }, { gcBatchSize: 0 }, { nope: 1 }]) {
      const error = await rejectionOf(ShardRouter.connect({ shards: shardConfigs(), catalogSchema: catalog, idempotency } as never));
      expect(error, JSON.stringify(idempotency)).toMatchObject({ code: 'INVALID_CONFIG' });
      expect((error as Error).message).toMatch(/idempotency/);
    }
  });
});

describe('moves, expiry and collection', () => {
  it('after the record bucket moved to another shard, a retry finds the record there and replays', async () => {
    const user = keyOn(router, 's0', 'moved');
    const sql = `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 9) RETURNING total`;
    const first = await router.execute(user, sql, [user], { idempotencyKey: 'move-1' });
    expect(first.replayed).toBe(false);
    await router.rebalancer().moveBucket(router.bucketFor(user), 's3');
    expect(router.shardFor(user)).toBe('s3');
    expect(await recordsEverywhere('move-1')).toEqual([{ server: 3, anchor: user }]);
    const retry = await router.execute(user, sql, [user], { idempotencyKey: 'move-1' });
    expect(retry).toMatchObject({ replayed: true, shardId: 's3', rows: first.rows });
    expect(await ordersOf(user)).toBe(1);
    expect((await router.rebalancer().verify()).misplaced).toEqual([]);
  });

  it('a stale router (it has not seen the move) still replays: its claim on the old owner is fenced, it refreshes and finds the record', async () => {
    const other = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
      mapRefresh: { intervalMillis: 0, listen: false },
    });
    try {
      const user = keyOn(router, 's1', 'stale');
      const sql = `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 4)`;
      await router.execute(user, sql, [user], { idempotencyKey: 'stale-1' });
      await router.rebalancer().moveBucket(router.bucketFor(user), 's2');
      expect(other.shardFor(user)).toBe('s1');
      const retry = await other.execute(user, sql, [user], { idempotencyKey: 'stale-1' });
      expect(retry).toMatchObject({ replayed: true, shardId: 's2' });
      expect(await ordersOf(user)).toBe(1);
    } finally {
      await other.close();
    }
  });

  it('records expire after ttlMillis (the key then runs anew) and are collected in bounded batches', async () => {
    // Records written with a 1 s TTL; everything checked afterwards goes through the 24 h router,
    // so no assertion depends on how fast the machine is.
    const short = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
      idempotency: { ttlMillis: 1_000, gcIntervalMillis: 0 },
    });
    const user = keyOn(router, 's2', 'ttl');
    const sql = `INSERT INTO ${data}.orders (user_id, total) VALUES ($1, 1)`;
    try {
      for (let n = 0; n < 5; n++) expect((await short.execute(user, sql, [user], { idempotencyKey: `ttl-${n}` })).replayed).toBe(false);
    } finally {
      await short.close();
    }
    const expired = async () =>
      withServer(shardUrls()[2]!, async (client) => {
        const { rows } = await client.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${catalog}.idempotency_records WHERE anchor = $1 AND expires_at <= now()`,
          [user],
        );
        return rows[0]!.n;
      });
    await eventually('the records expired', async () => (await expired()) === 5, 100, 50);
    // Expired means absent: the same key runs again (and takes the record over, now for 24 h).
    expect((await router.execute(user, sql, [user], { idempotencyKey: 'ttl-0' })).replayed).toBe(false);
    expect(await ordersOf(user)).toBe(6);
    // Collection: batches of 2 delete the 4 expired records, and not the live one.
    const shards = router.shardIds.map((shardId) => ({
      shardId,
      queryable: {
        query: <R extends QueryResultRow>(text: string, params?: readonly unknown[]) => router.executeOn<R>(shardId, text, params),
      },
    }));
    const report = await collectExpiredRecords({ catalogSchema: catalog, shards: () => shards }, 2);
    expect(report.errors).toEqual({});
    expect(report.deleted.s2).toBeGreaterThanOrEqual(4);
    expect(await expired()).toBe(0);
    for (let n = 1; n < 5; n++) expect(await recordsEverywhere(`ttl-${n}`)).toEqual([]);
    expect(await recordsEverywhere('ttl-0')).toEqual([{ server: 2, anchor: user }]);
    expect((await router.execute(user, sql, [user], { idempotencyKey: 'ttl-0' })).replayed).toBe(true);
    expect(await ordersOf(user)).toBe(6);
  });

  it('the background collector deletes expired records by itself', async () => {
    const collecting = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
      idempotency: { ttlMillis: 1_000, gcIntervalMillis: 200, gcBatchSize: 1 },
    });
    try {
      const user = keyOn(collecting, 's1', 'bg');
      for (let n = 0; n < 3; n++) await collecting.execute(user, 'SELECT 1', [], { idempotencyKey: `bg-${n}` });
      await eventually('the collector deleted them', async () => (await recordsEverywhere('bg-2')).length === 0, 100, 100);
      for (let n = 0; n < 3; n++) expect(await recordsEverywhere(`bg-${n}`)).toEqual([]);
    } finally {
      await collecting.close();
    }
  });
});
