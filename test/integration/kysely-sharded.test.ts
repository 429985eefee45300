import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShardRouter, ShardRouterError } from '../../src/index.js';
import { shardedKysely } from '../../src/kysely.js';
import type { ShardedKysely } from '../../src/kysely.js';
import { connectFreshRouter, rejectionOf, uniqueName } from '../support/cluster.js';
import { keyOn, keysOn } from '../support/keys.js';

/** pg-shard-router/kysely with real Kysely: one shard per key, and transactions across shards. */

interface Database {
  [table: string]: { id: string; balance: number };
}

let router: ShardRouter;
let db: ShardedKysely<Database>;
const table = uniqueName('kysely_accounts');

async function balanceOn(shardId: string, key: string): Promise<number | undefined> {
  const { rows } = await router.executeOn<{ balance: number }>(shardId, `SELECT balance FROM ${table} WHERE id = $1`, [key]);
  return rows[0]?.balance;
}

beforeAll(async () => {
  router = await connectFreshRouter({ recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE TABLE ${table} (id text PRIMARY KEY, balance integer NOT NULL)`);
  }
  await router.registerShardedTable(table, 'id');
  db = shardedKysely<Database>(router);
});

afterAll(async () => {
  for (const shardId of router.shardIds) await router.executeOn(shardId, `DROP TABLE IF EXISTS ${table}`);
  await router.close();
});

describe('shardedKysely(router).forKey', () => {
  it('is one instance per shard, and its rows land on the shard that owns the key', async () => {
    const [a, b] = keysOn(router, router.shardIds.slice(0, 2), 'fk') as [string, string];
    const sibling = keyOn(router, router.shardFor(a), 'fk-sibling');
    expect(db.forKey(a)).toBe(db.forKey(sibling));
    expect(db.forKey(a)).not.toBe(db.forKey(b));
    await db.forKey(a).insertInto(table).values({ id: a, balance: 1 }).execute();
    await db.forKey(b).insertInto(table).values({ id: b, balance: 2 }).execute();
    expect(await balanceOn(router.shardFor(a), a)).toBe(1);
    expect(await balanceOn(router.shardFor(b), b)).toBe(2);
    // Kysely's own transaction on one shard.
    await db
      .forKey(a)
      .transaction()
      .execute((trx) => trx.updateTable(table).set({ balance: 11 }).where('id', '=', a).execute());
    const row = await db.forKey(a).selectFrom(table).select('balance').where('id', '=', a).executeTakeFirstOrThrow();
    expect(row.balance).toBe(11);
  });

  it('after a bucket move the older instance is refused by the old owner (STALE_BUCKET_MAP) and forKey gives the new owner', async () => {
    const key = 'fk-moving';
    const before = db.forKey(key);
    const from = router.shardFor(key);
    const to = router.shardIds.find((id) => id !== from)!;
    await router.rebalancer().moveBucket(router.bucketFor(key), to);
    const refused = await rejectionOf(before.insertInto(table).values({ id: key, balance: 7 }).execute());
    expect((refused as ShardRouterError).code).toBe('STALE_BUCKET_MAP');
    expect(await balanceOn(from, key)).toBeUndefined();
    const after = db.forKey(key);
    expect(after).not.toBe(before);
    await after.insertInto(table).values({ id: key, balance: 7 }).execute();
    expect(await balanceOn(to, key)).toBe(7);
  });
});

describe('shardedKysely(router).transaction', () => {
  it('commits on every shard it touched, with a Kysely instance per participant key', async () => {
    const [from, to] = keysOn(router, router.shardIds.slice(1, 3), 'tx') as [string, string];
    await db.forKey(from).insertInto(table).values({ id: from, balance: 100 }).execute();
    await db.forKey(to).insertInto(table).values({ id: to, balance: 0 }).execute();
    const moved = await db.transaction([from, to], async (tx) => {
      await tx
        .forKey(from)
        .updateTable(table)
        .set((eb) => ({ balance: eb('balance', '-', 30) }))
        .where('id', '=', from)
        .execute();
      const result = await tx
        .forKey(to)
        .updateTable(table)
        .set((eb) => ({ balance: eb('balance', '+', 30) }))
        .where('id', '=', to)
        .executeTakeFirstOrThrow();
      return result.numUpdatedRows;
    });
    expect(moved).toBe(1n);
    expect(await balanceOn(router.shardFor(from), from)).toBe(70);
    expect(await balanceOn(router.shardFor(to), to)).toBe(30);
  });

  it('rolls back every shard when the callback throws, and refuses Kysely’s own nested transaction', async () => {
    const [from, to] = keysOn(router, router.shardIds.slice(2, 4), 'rb') as [string, string];
    await db.forKey(from).insertInto(table).values({ id: from, balance: 5 }).execute();
    const failure = new Error('abort the transfer');
    const thrown = await rejectionOf(
      db.transaction([from, to], async (tx) => {
        await tx.forKey(from).updateTable(table).set({ balance: 0 }).where('id', '=', from).execute();
        await tx.forKey(to).insertInto(table).values({ id: to, balance: 5 }).execute();
        throw failure;
      }),
    );
    expect(thrown).toBe(failure);
    expect(await balanceOn(router.shardFor(from), from)).toBe(5);
    expect(await balanceOn(router.shardFor(to), to)).toBeUndefined();
    const nested = await rejectionOf(
      db.transaction([from], (tx) =>
        tx
          .forKey(from)
          .transaction()
          .execute(async () => undefined),
      ),
    );
    expect((nested as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    const count = await db.transaction([from], async (tx) =>
      sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql.table(table)}`.execute(tx.forKey(from)),
    );
    expect(count.rows[0]!.n).toBeGreaterThan(0);
  });
});
