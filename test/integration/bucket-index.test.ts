import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { bucketIndexName, bucketIndexState } from '../../src/rebalance/bucket-index.js';
import { bucketRowsSql, deleteBucketRowsSql, tablesToCopy } from '../../src/rebalance/copy.js';
import type { TableCopy } from '../../src/rebalance/copy.js';
import { createScratchDatabases, rejectionOf, uniqueName, withServer } from '../support/cluster.js';

/**
 * The optional bucket index (docs/rebalance.md, "Bucket index"): built by
 * registerShardedTable(..., { bucketIndex: true }) on every shard and by addShard on a new one,
 * it holds the router's bucket of every key for every key type the registry allows, and a
 * move's copy and clean-up statements read through it instead of scanning the table.
 */

const BUCKETS = 64;
const schema = uniqueName('bix');
let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
let router: ShardRouter;

/** Every key type registerShardedTable accepts, with a key generator (the router's key for row n). */
const KEY_TYPES: readonly { table: string; type: string; key: (n: number) => string | number }[] = [
  { table: 'k_text', type: 'text', key: (n) => `user-${n}-é€😀` },
  { table: 'k_varchar', type: 'varchar(40)', key: (n) => `v${n * 7919}` },
  { table: 'k_smallint', type: 'smallint', key: (n) => n * 97 - 16_000 },
  { table: 'k_integer', type: 'integer', key: (n) => n * 7_654_321 - 2_000_000_000 },
  { table: 'k_bigint', type: 'bigint', key: (n) => n * 1_234_567_890_123 - 2 ** 50 },
  {
    table: 'k_uuid',
    type: 'uuid',
    key: (n) => `${n.toString(16).padStart(8, '0')}-1234-4abc-8def-${(n * 31).toString(16).padStart(12, '0')}`,
  },
];
const ROWS_PER_TYPE = 300;

function admin<T>(shard: number, work: (client: import('pg').Client) => Promise<T>): Promise<T> {
  return withServer(scratch.urls[shard]!, work);
}

beforeAll(async () => {
  scratch = await createScratchDatabases();
  for (const url of scratch.urls.slice(0, 3)) {
    await withServer(url, async (client) => {
      for (const { table, type } of KEY_TYPES) await client.query(`CREATE TABLE ${table} (id ${type} PRIMARY KEY, payload text NOT NULL)`);
      await client.query('CREATE TABLE plain (id text PRIMARY KEY, payload text NOT NULL)');
    });
  }
  const shards = scratch.urls.slice(0, 2).map((url, index) => ({ id: `s${index}`, connectionString: url }));
  router = await ShardRouter.connect({
    shards,
    catalogSchema: schema,
    bucketCount: BUCKETS,
    recovery: { intervalMillis: 0, atConnect: false },
  });
  for (const { table } of KEY_TYPES) await router.registerShardedTable(table, 'id', { bucketIndex: true });
  await router.registerShardedTable('plain', 'id');
  // Each key's row on the shard the router routes it to (one INSERT per shard and table).
  for (const { table, type, key } of KEY_TYPES) {
    for (const [shard, shardId] of ['s0', 's1'].entries()) {
      const mine = Array.from({ length: ROWS_PER_TYPE }, (_, n) => n).filter((n) => router.shardFor(key(n)) === shardId);
      await admin(shard, (client) =>
        client.query(`INSERT INTO ${table} (id, payload) SELECT k::${type}, 'row ' || n FROM unnest($1::text[], $2::int[]) AS u(k, n)`, [
          mine.map((n) => String(key(n))),
          mine,
        ]),
      );
    }
  }
}, 120_000);

afterAll(async () => {
  await router?.close();
  await scratch?.drop();
});

describe('bucket index', () => {
  it('is built on every shard for tables registered with bucketIndex: true, and only for them', async () => {
    for (const shard of [0, 1]) {
      await admin(shard, async (client) => {
        for (const { table } of KEY_TYPES) expect(await bucketIndexState(client, schema, `public.${table}`)).toBe('valid');
        expect(await bucketIndexState(client, schema, 'public.plain')).toBe('none');
      });
    }
  });

  it('registering again with bucketIndex: true builds it on demand; a bad option is refused', async () => {
    await router.registerShardedTable('plain', 'id', { bucketIndex: true });
    await admin(0, async (client) => expect(await bucketIndexState(client, schema, 'public.plain')).toBe('valid'));
    await admin(0, (client) => client.query(`DROP INDEX public.${bucketIndexName(schema, 'public.plain')}`));
    await admin(1, (client) => client.query(`DROP INDEX public.${bucketIndexName(schema, 'public.plain')}`));
    const error = await rejectionOf(router.registerShardedTable('plain', 'id', { bucketIndex: 'yes' as unknown as boolean }));
    expect(error).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('groups the keys of every allowed key type into the router’s buckets (read through the index)', async () => {
    for (const { table, key } of KEY_TYPES) {
      const expected = new Map<number, string[]>();
      for (let n = 0; n < ROWS_PER_TYPE; n++) {
        const bucket = router.bucketFor(key(n));
        expected.set(bucket, [...(expected.get(bucket) ?? []), String(key(n))].sort());
      }
      for (const [shard, shardId] of ['s0', 's1'].entries()) {
        const owned = [...expected.keys()].filter((bucket) => router.bucketMap.ownerOf(bucket) === shardId);
        await admin(shard, async (client) => {
          await client.query('SET enable_seqscan = off');
          const sql = `SELECT "${schema}".bucket_of(id::text, ${BUCKETS}) AS b, id::text AS k FROM ${table} WHERE "${schema}".bucket_of(id::text, ${BUCKETS}) = ANY ($1::int[])`;
          const plan = await client.query(`EXPLAIN ${sql}`, [owned]);
          expect(plan.rows.map((row) => row['QUERY PLAN']).join('\n')).toContain(bucketIndexName(schema, `public.${table}`));
          const { rows } = await client.query<{ b: number; k: string }>(sql, [owned]);
          const found = new Map<number, string[]>();
          for (const row of rows) found.set(row.b, [...(found.get(row.b) ?? []), row.k].sort());
          expect(new Map([...found].sort(([a], [b]) => a - b))).toEqual(
            new Map(owned.sort((a, b) => a - b).map((bucket) => [bucket, expected.get(bucket)!])),
          );
          const total = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
          expect(rows.length).toBe(total.rows[0]!.n);
        });
      }
    }
  });

  it("makes a move's copy and clean-up read through the index; without it they scan the table", async () => {
    // Enough rows over all buckets that one bucket is a small part of the table.
    const keys = Array.from({ length: 20_000 }, (_, n) => `bulk-${n}`);
    for (const [shard, shardId] of ['s0', 's1'].entries()) {
      const mine = keys.filter((key) => router.shardFor(key) === shardId);
      await admin(shard, async (client) => {
        for (const table of ['k_text', 'plain']) {
          await client.query(`INSERT INTO ${table} (id, payload) SELECT k, repeat('x', 100) FROM unnest($1::text[]) AS k`, [mine]);
          await client.query(`ANALYZE ${table}`);
        }
      });
    }
    const bucket = router.bucketFor('bulk-0');
    const shard = router.shardFor('bulk-0') === 's0' ? 0 : 1;
    await admin(shard, async (client) => {
      const tables = await tablesToCopy(contextOf(['public.k_text', 'public.plain']), client);
      const byName = (name: string) => tables.find((t: TableCopy) => t.shape.name === name)!;
      // The copy's SELECT carries the buckets as a literal (it runs inside COPY), the DELETE as $1.
      const plan = async (sql: string) =>
        (await client.query(`EXPLAIN ${sql}`, sql.includes('$1') ? [[bucket]] : [])).rows
          .map((row) => row['QUERY PLAN'] as string)
          .join('\n');
      const indexName = bucketIndexName(schema, 'public.k_text');
      for (const sql of [
        bucketRowsSql(schema, byName('public.k_text'), BUCKETS, [bucket]),
        deleteBucketRowsSql(schema, byName('public.k_text'), BUCKETS),
      ]) {
        const text = await plan(sql);
        expect(text).toContain(indexName);
        expect(text).not.toContain('Seq Scan');
      }
      for (const sql of [
        bucketRowsSql(schema, byName('public.plain'), BUCKETS, [bucket]),
        deleteBucketRowsSql(schema, byName('public.plain'), BUCKETS),
      ]) {
        expect(await plan(sql)).toContain('Seq Scan');
      }
    });
    // And a real move of that bucket through the index: every row arrives, nothing stays behind.
    const target = router.shardFor('bulk-0') === 's0' ? 's1' : 's0';
    const before = await router.execute(
      'bulk-0',
      `SELECT count(*)::int AS n FROM k_text WHERE "${schema}".bucket_of(id, ${BUCKETS}) = $1`,
      [bucket],
    );
    const report = await router.rebalancer().moveBucket(bucket, target);
    expect(report.moves[0]!.rowsCopied).toBeGreaterThanOrEqual(before.rows[0]!.n);
    const after = await router.execute('bulk-0', `SELECT count(*)::int AS n FROM k_text WHERE "${schema}".bucket_of(id, ${BUCKETS}) = $1`, [
      bucket,
    ]);
    expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
    expect((await router.rebalancer().verify()).ok).toBe(true);
  }, 120_000);

  it('addShard builds it on the new shard; removeShard leaves the removed shard (and its index) alone', async () => {
    const rebalancer = router.rebalancer();
    await rebalancer.addShard({ id: 's2', connectionString: scratch.urls[2]! });
    await admin(2, async (client) => {
      for (const { table } of KEY_TYPES) expect(await bucketIndexState(client, schema, `public.${table}`)).toBe('valid');
      expect(await bucketIndexState(client, schema, 'public.plain')).toBe('none');
    });
    const bucket = router.bucketFor('user-1-é€😀');
    await rebalancer.moveBucket(bucket, 's2');
    const moved = await router.execute('user-1-é€😀', 'SELECT payload FROM k_text WHERE id = $1', ['user-1-é€😀']);
    expect(moved).toMatchObject({ shardId: 's2', rows: [{ payload: 'row 1' }] });
    await rebalancer.removeShard('s2');
    expect(router.shardFor('user-1-é€😀')).not.toBe('s2');
    const back = await router.execute('user-1-é€😀', 'SELECT payload FROM k_text WHERE id = $1', ['user-1-é€😀']);
    expect(back.rows).toEqual([{ payload: 'row 1' }]);
    expect((await rebalancer.verify()).ok).toBe(true);
  }, 120_000);
});

/** The little of a RebalanceContext that tablesToCopy reads. */
function contextOf(tables: readonly string[]): Parameters<typeof tablesToCopy>[0] {
  return {
    tables: tables.map((table) => ({ table, kind: 'sharded' as const, shardKey: 'id' })),
    config: { catalogSchema: schema },
  } as unknown as Parameters<typeof tablesToCopy>[0];
}
