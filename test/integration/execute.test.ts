import { DatabaseError } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueryError, ShardRouterError } from '../../src/index.js';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, rejectionOf, shardConfigs, uniqueName, withServer } from '../support/cluster.js';

const data = uniqueName('exec');
let router: ShardRouter;
let catalog: string;

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.items (key text PRIMARY KEY, written_for text NOT NULL)`);
  }
});

afterAll(async () => {
  await router.close();
  await dropSchemas(data, catalog);
});

describe('execute', () => {
  it('sends each key to shardFor(key): rows for 1000 keys exist only on their owning shard', async () => {
    const keys = Array.from({ length: 1000 }, (_, i) => (i % 3 === 0 ? i : i % 3 === 1 ? `user-${i}` : BigInt(i) * 1_000_003n));
    await Promise.all(
      keys.map((key) =>
        router.execute(key, `INSERT INTO ${data}.items (key, written_for) VALUES ($1, $2)`, [String(key), router.shardFor(key)]),
      ),
    );
    // Read every shard directly, bypassing the router.
    const found = new Map<string, string[]>();
    for (const { id, connectionString } of shardConfigs()) {
      const { rows } = await withServer(connectionString, (client) =>
        client.query<{ key: string; written_for: string }>(`SELECT key, written_for FROM ${data}.items`),
      );
      for (const row of rows) {
        expect(row.written_for).toBe(id);
        found.set(row.key, [...(found.get(row.key) ?? []), id]);
      }
    }
    expect(found.size).toBe(1000);
    for (const key of keys) expect(found.get(String(key))).toEqual([router.shardFor(key)]);
    // 1000 keys over 4 shards of 256 buckets each: every shard got some.
    expect(new Set([...found.values()].flat()).size).toBe(router.shardIds.length);
  });

  it("returns pg's result shape plus the shard id", async () => {
    const result = await router.execute<{ n: number; t: string }>('user-7', 'SELECT $1::int AS n, $2::text AS t', [7, 'seven']);
    expect(result.rows).toEqual([{ n: 7, t: 'seven' }]);
    expect(result.rowCount).toBe(1);
    expect(result.command).toBe('SELECT');
    expect(result.fields.map((field) => field.name)).toEqual(['n', 't']);
    expect(result.shardId).toBe(router.shardFor('user-7'));
  });

  it('treats 42, 42n and "42" as the same key', () => {
    expect(router.shardFor(42)).toBe(router.shardFor('42'));
    expect(router.shardFor(42n)).toBe(router.shardFor('42'));
    expect(router.bucketFor(42)).toBe(router.bucketFor('42'));
  });

  it('reports a SQL error as QUERY_FAILED with the SQLSTATE and the pg error as cause, and keeps working', async () => {
    const syntax = await rejectionOf(router.execute(1, 'SELEC nonsense'));
    expect(syntax).toBeInstanceOf(QueryError);
    expect(syntax).toMatchObject({ code: 'QUERY_FAILED', sqlState: '42601', shardId: router.shardFor(1) });
    expect((syntax as Error).cause).toBeInstanceOf(DatabaseError);

    await router.execute('dup', `INSERT INTO ${data}.items VALUES ('dup', 'x')`);
    const duplicate = await rejectionOf(router.execute('dup', `INSERT INTO ${data}.items VALUES ('dup', 'x')`));
    expect(duplicate).toMatchObject({ code: 'QUERY_FAILED', sqlState: '23505' });
    expect(((duplicate as Error).cause as DatabaseError).constraint).toBe('items_pkey');

    expect((await router.execute(1, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('reports more params than the statement uses (08P01 at severity ERROR) as QUERY_FAILED and keeps the connection', async () => {
    const before = router.poolStats();
    const error = await rejectionOf(router.execute(1, 'SELECT 1', [1]));
    expect(error).toBeInstanceOf(QueryError);
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '08P01' });
    // The session survived: the same number of connections, and the next statement works.
    expect(router.poolStats()).toEqual(before);
    expect((await router.execute(1, 'SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('runs exactly one statement per call (no multi-statement strings)', async () => {
    const error = await rejectionOf(router.execute(1, 'SELECT 1; SELECT 2'));
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '42601' });
  });

  it.each([
    ['null', null],
    ['undefined', undefined],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['a fraction', 0.5],
    ['an unsafe integer', 2 ** 60],
    ['an object', {}],
    ['an array', ['a']],
    ['a boolean', false],
    ['the empty string', ''],
  ])('rejects %s as a key with INVALID_KEY before any I/O', async (_, key) => {
    const before = JSON.stringify(router.poolStats());
    const error = await rejectionOf(router.execute(key as never, 'SELECT 1'));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('INVALID_KEY');
    expect(() => router.shardFor(key as never)).toThrow(expect.objectContaining({ code: 'INVALID_KEY' }));
    expect(JSON.stringify(router.poolStats())).toBe(before);
  });

  it('rejects bad arguments with INVALID_ARGUMENT', async () => {
    await expect(router.execute(1, '')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(router.execute(1, 'SELECT $1', 'x' as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(router.executeOn('nope', 'SELECT 1')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('runs statements on a named shard with executeOn', async () => {
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ id: string }>(shardId, `SELECT shard_id AS id FROM ${catalog}.shard_identity`);
      expect(rows).toEqual([{ id: shardId }]);
    }
  });
});

describe('close', () => {
  it('is idempotent, and every later call gets ROUTER_CLOSED', async () => {
    const otherCatalog = uniqueName('cat');
    const other = await connectFreshRouter({ catalogSchema: otherCatalog });
    await other.execute(1, 'SELECT 1');
    await Promise.all([other.close(), other.close()]);
    await other.close();
    await expect(other.execute(1, 'SELECT 1')).rejects.toMatchObject({ code: 'ROUTER_CLOSED' });
    await expect(other.executeOn('s0', 'SELECT 1')).rejects.toMatchObject({ code: 'ROUTER_CLOSED' });
    expect(() => other.shardFor(1)).toThrow(expect.objectContaining({ code: 'ROUTER_CLOSED' }));
    expect(Object.values(other.poolStats()).every((stats) => stats.size === 0)).toBe(true);
    await dropSchemas(otherCatalog);
  });
});
