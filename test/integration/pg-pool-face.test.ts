import { sql as dsql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, ShardRouterError } from '../../src/index.js';
import { connectFreshRouter, rejectionOf, shardConfigs, uniqueName } from '../support/cluster.js';

/**
 * router.poolFor / poolOn as the pg.Pool of real Kysely and real drizzle-orm: statements reach
 * the owning shard, each ORM's own transaction API keeps to one connection (commit and
 * rollback), and a write routed by a stale map is refused by the shard's fence.
 */

interface AccountsTable {
  id: string;
  balance: number;
}

let router: ShardRouter;
let catalog: string;
const table = uniqueName('orm_accounts');
const accounts = pgTable(table, { id: text('id').primaryKey(), balance: integer('balance').notNull() });

function kyselyFor(pool: pg.Pool): Kysely<Record<string, AccountsTable>> {
  return new Kysely<Record<string, AccountsTable>>({ dialect: new PostgresDialect({ pool }) });
}

/** The balance of `key` on a named shard, read past every ORM. */
async function balanceOn(shardId: string, key: string): Promise<number | undefined> {
  const { rows } = await router.executeOn<{ balance: number }>(shardId, `SELECT balance FROM ${table} WHERE id = $1`, [key]);
  return rows[0]?.balance;
}

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE TABLE ${table} (id text PRIMARY KEY, balance integer NOT NULL)`);
  }
  await router.registerShardedTable(table, 'id');
});

afterAll(async () => {
  for (const shardId of router.shardIds) await router.executeOn(shardId, `DROP TABLE IF EXISTS ${table}`);
  await router.close();
});

describe('router.poolFor as a pg.Pool', () => {
  it('is a pg.Pool (drizzle-orm checks instanceof) whose end() leaves the router alone', async () => {
    const pool = router.poolFor('pool-face-1');
    expect(pool).toBeInstanceOf(pg.Pool);
    const { rows } = await pool.query('SELECT current_setting($1) AS version', ['pg_shard_router.map_version']);
    expect(rows[0].version).toBe(String(router.bucketMap.version));
    expect(pool.totalCount).toBeGreaterThan(0);
    expect(pool.idleCount).toBeGreaterThanOrEqual(0);
    expect(pool.waitingCount).toBe(0);
    const onError = () => undefined;
    pool.on('error', onError);
    pool.off('error', onError);
    await pool.end();
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await router.execute('pool-face-1', 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('Kysely: rows land on the owning shard; a transaction commits on one connection, a failing one rolls back', async () => {
    const key = 'kysely-user-1';
    const db = kyselyFor(router.poolFor(key));
    await db.insertInto(table).values({ id: key, balance: 10 }).execute();
    expect(await balanceOn(router.shardFor(key), key)).toBe(10);
    const pids = await db.transaction().execute(async (trx) => {
      await trx.updateTable(table).set({ balance: 20 }).where('id', '=', key).execute();
      const first = await trx.selectNoFrom((eb) => eb.fn<number>('pg_backend_pid').as('pid')).executeTakeFirstOrThrow();
      const second = await trx.selectNoFrom((eb) => eb.fn<number>('pg_backend_pid').as('pid')).executeTakeFirstOrThrow();
      return [first.pid, second.pid];
    });
    expect(pids[0]).toBe(pids[1]);
    expect(await balanceOn(router.shardFor(key), key)).toBe(20);
    const failure = new Error('changed my mind');
    const thrown = await rejectionOf(
      db.transaction().execute(async (trx) => {
        await trx.updateTable(table).set({ balance: 999 }).where('id', '=', key).execute();
        throw failure;
      }),
    );
    expect(thrown).toBe(failure);
    expect(await balanceOn(router.shardFor(key), key)).toBe(20);
    const read = await db.selectFrom(table).select(['id', 'balance']).where('id', '=', key).execute();
    expect(read).toEqual([{ id: key, balance: 20 }]);
    await db.destroy();
    expect(router.poolStats()[router.shardFor(key)]!.borrowed).toBe(0);
  });

  it('drizzle-orm: the transaction keeps one connection (instanceof pg.Pool passed), commits, and rolls back', async () => {
    const key = 'drizzle-user-1';
    const db = drizzle(router.poolFor(key));
    await db.insert(accounts).values({ id: key, balance: 5 });
    expect(await balanceOn(router.shardFor(key), key)).toBe(5);
    const seen = await db.transaction(async (tx) => {
      await tx.update(accounts).set({ balance: 6 }).where(dsql`${accounts.id} = ${key}`);
      const a = await tx.execute<{ pid: number; xid: string }>(dsql`SELECT pg_backend_pid() AS pid, txid_current()::text AS xid`);
      const b = await tx.execute<{ pid: number; xid: string }>(dsql`SELECT pg_backend_pid() AS pid, txid_current()::text AS xid`);
      return [a.rows[0]!, b.rows[0]!];
    });
    // One backend and one transaction id: BEGIN, the statements and COMMIT shared a connection.
    expect(seen[0]).toEqual(seen[1]);
    expect(await balanceOn(router.shardFor(key), key)).toBe(6);
    await rejectionOf(
      db.transaction(async (tx) => {
        await tx.update(accounts).set({ balance: 600 }).where(dsql`${accounts.id} = ${key}`);
        tx.rollback();
      }),
    );
    expect(await balanceOn(router.shardFor(key), key)).toBe(6);
    expect(await db.select().from(accounts).where(dsql`${accounts.id} = ${key}`)).toEqual([{ id: key, balance: 6 }]);
    expect(router.poolStats()[router.shardFor(key)]!.borrowed).toBe(0);
  });

  it('PostgreSQL errors pass through as pg raises them (ORMs map SQLSTATEs themselves)', async () => {
    const key = 'dup-user';
    const db = drizzle(router.poolFor(key));
    await db.insert(accounts).values({ id: key, balance: 1 });
    const duplicate = await rejectionOf(db.insert(accounts).values({ id: key, balance: 1 }));
    const cause = (duplicate as { cause?: { code?: string } }).cause ?? duplicate;
    expect((cause as { code?: string }).code).toBe('23505');
  });

  it('poolOn(shardId) runs per-shard statements on that shard; an unknown shard is INVALID_ARGUMENT', async () => {
    const shardId = router.shardIds[2]!;
    const { rows } = await router.poolOn(shardId).query(`SELECT count(*)::int AS n FROM ${table}`);
    expect(rows[0].n).toBe((await router.executeOn(shardId, `SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n);
    const unknown = await rejectionOf(() => router.poolOn('nope'));
    expect((unknown as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    const badKey = await rejectionOf(() => router.poolFor(Number.NaN));
    expect((badKey as ShardRouterError).code).toBe('INVALID_KEY');
  });
});

describe('a write through poolFor routed by a stale map', () => {
  it('is refused by the old owner (STALE_BUCKET_MAP) in Kysely and drizzle transactions and single statements; nothing lands there', async () => {
    const stale = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      mapRefresh: { intervalMillis: 0, listen: false },
      recovery: { intervalMillis: 0, atConnect: false },
    });
    // Blocks its map refresh: it keeps routing by the map it has now.
    stale.refreshMap = async () => stale.bucketMap;
    const key = 'stale-orm-user';
    const from = stale.shardFor(key);
    const to = stale.shardIds.find((id) => id !== from)!;
    await router.rebalancer().moveBucket(router.bucketFor(key), to);
    expect(router.shardFor(key)).toBe(to);

    const kysely = kyselyFor(stale.poolFor(key));
    const inKysely = await rejectionOf(
      kysely.transaction().execute((trx) => trx.insertInto(table).values({ id: key, balance: 1 }).execute()),
    );
    expect((inKysely as ShardRouterError).code).toBe('STALE_BUCKET_MAP');
    expect((inKysely as ShardRouterError).retryable).toBe(true);
    const db = drizzle(stale.poolFor(key));
    const inDrizzle = await rejectionOf(db.transaction((tx) => tx.insert(accounts).values({ id: key, balance: 2 })));
    const drizzleError = inDrizzle instanceof ShardRouterError ? inDrizzle : (inDrizzle as Error).cause;
    expect((drizzleError as ShardRouterError).code).toBe('STALE_BUCKET_MAP');
    const single = await rejectionOf(stale.poolFor(key).query(`INSERT INTO ${table} (id, balance) VALUES ($1, 3)`, [key]));
    expect((single as ShardRouterError).code).toBe('STALE_BUCKET_MAP');
    expect(await balanceOn(from, key)).toBeUndefined();
    expect(await balanceOn(to, key)).toBeUndefined();
    expect(stale.poolStats()[from]!.borrowed).toBe(0);

    // Once the router may refresh: the refusal comes after the refresh, so running the
    // transaction again (what the caller does on a retryable error) reaches the new owner.
    delete (stale as { refreshMap?: unknown }).refreshMap;
    const insert = () => kysely.transaction().execute((trx) => trx.insertInto(table).values({ id: key, balance: 4 }).execute());
    expect(((await rejectionOf(insert())) as ShardRouterError).code).toBe('STALE_BUCKET_MAP');
    await insert();
    expect(stale.shardFor(key)).toBe(to);
    expect(await balanceOn(to, key)).toBe(4);
    expect(await balanceOn(from, key)).toBeUndefined();
    await stale.close();
  });
});
