import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/index.js';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, rejectionOf, shardUrls, uniqueName, withServer } from '../support/cluster.js';

/**
 * router.broadcast of statements other than SELECT: they run on every shard inside one
 * transaction (two-phase commit), so a change lands on all shards or on none, whichever shard
 * refuses it and whenever (at the statement, at PREPARE, or at the deciding COMMIT).
 */

const PREFIX = uniqueName('bw');
/** Table names of this file (all dropped at the end). */
const name = (suffix: string) => `${PREFIX}_${suffix}`;
const created = new Set<string>();

let router: ShardRouter;
let catalog: string;
/** shard id -> the URL of its server (connectFreshRouter puts s<i> on server i). */
let urlOf: (shardId: string) => string;

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  const urls = shardUrls();
  urlOf = (shardId) => urls[router.shardIds.indexOf(shardId)]!;
});

afterAll(async () => {
  if (router) {
    for (const shardId of router.shardIds) {
      for (const table of [...created].reverse())
        await router.executeOn(shardId, `DROP TABLE IF EXISTS ${table} CASCADE`).catch(() => undefined);
    }
    await router.close();
  }
  if (catalog) await dropSchemas(catalog);
});

/** Per shard, whether the table exists, asked of each server directly (not through the router). */
async function existsPerShard(table: string): Promise<Record<string, boolean>> {
  const entries = await Promise.all(
    router.shardIds.map(async (shardId) => {
      const found = await withServer(
        urlOf(shardId),
        async (client) => (await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table])).rows[0]!.t,
      );
      return [shardId, found !== null] as const;
    }),
  );
  return Object.fromEntries(entries);
}

/** Per shard, the table's columns in order (none where it does not exist), asked of each server directly. */
async function columnsPerShard(table: string): Promise<Record<string, string[]>> {
  const entries = await Promise.all(
    router.shardIds.map(async (shardId) => {
      const columns = await withServer(urlOf(shardId), async (client) => {
        const { rows } = await client.query<{ attname: string }>(
          'SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum',
          [table],
        );
        return rows.map((row) => row.attname);
      });
      return [shardId, columns] as const;
    }),
  );
  return Object.fromEntries(entries);
}

const everyShard = <V>(value: V) => Object.fromEntries(router.shardIds.map((shardId) => [shardId, value]));

/** No prepared transaction of this cluster is left on any shard: by status(), and by each server's pg_prepared_xacts. */
async function expectNoPreparedLeft(): Promise<void> {
  const status = await router.status();
  for (const shard of status.shards) {
    expect(shard.reachable).toBe(true);
    expect(shard.preparedTransactions.filter((prepared) => prepared.ours)).toEqual([]);
  }
  const prefix = `psr:${router.clusterId}:`;
  for (const shardId of router.shardIds) {
    const left = await withServer(
      urlOf(shardId),
      async (client) =>
        (await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [prefix]))
          .rows[0]!.n,
    );
    expect(left, `prepared transactions of this cluster on ${shardId}`).toBe(0);
  }
}

/** Creates a table on every shard through the router's broadcast, and remembers it for clean-up. */
async function broadcastCreate(table: string, columns: string): Promise<void> {
  created.add(table);
  const result = await router.broadcast(`CREATE TABLE ${table} (${columns})`);
  expect(result.command).toBe('CREATE');
  expect(result.rows).toEqual([]);
  expect(result.failures).toEqual([]);
}

describe('broadcast DDL', () => {
  it('creates a table on every shard, and drops it on every shard', async () => {
    const table = name('x');
    await broadcastCreate(table, 'id int PRIMARY KEY, v int NOT NULL');
    expect(await existsPerShard(table)).toEqual(everyShard(true));
    expect(await columnsPerShard(table)).toEqual(everyShard(['id', 'v']));
    await expectNoPreparedLeft();

    const dropped = await router.broadcast(`DROP TABLE ${table}`);
    expect(dropped.command).toBe('DROP');
    expect(await existsPerShard(table)).toEqual(everyShard(false));
    await expectNoPreparedLeft();
  });

  it.each(['s0', 's1', 's2', 's3'])(
    'CREATE TABLE that conflicts on %s only: rejected, and no other shard keeps the table (rolled back)',
    async (conflicting) => {
      const table = name(`conflict_${conflicting}`);
      created.add(table);
      await router.executeOn(conflicting, `CREATE TABLE ${table} (marker int)`);

      const error = await rejectionOf(router.broadcast(`CREATE TABLE ${table} (id int PRIMARY KEY, made_by_broadcast int)`));
      expect(error).toBeInstanceOf(ShardRouterError);
      expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '42P07', shardId: conflicting });

      expect(await existsPerShard(table)).toEqual({ ...everyShard(false), [conflicting]: true });
      // The conflicting shard still has its own table, untouched.
      expect((await columnsPerShard(table))[conflicting]).toEqual(['marker']);
      await expectNoPreparedLeft();
    },
  );

  it('ALTER TABLE ADD COLUMN that fails on one shard (the column exists there) adds it nowhere', async () => {
    const table = name('alter');
    await broadcastCreate(table, 'id int PRIMARY KEY');
    await router.executeOn('s2', `ALTER TABLE ${table} ADD COLUMN c int`);

    const error = await rejectionOf(router.broadcast(`ALTER TABLE ${table} ADD COLUMN d text, ADD COLUMN c int`));
    expect(error).toMatchObject({ code: 'QUERY_FAILED', sqlState: '42701', shardId: 's2' });
    expect(await columnsPerShard(table)).toEqual({ ...everyShard(['id']), s2: ['id', 'c'] });
    await expectNoPreparedLeft();

    // A change that fits every shard then lands everywhere: the router is usable.
    await router.broadcast(`ALTER TABLE ${table} ADD COLUMN d text`);
    expect(await columnsPerShard(table)).toEqual({ ...everyShard(['id', 'd']), s2: ['id', 'c', 'd'] });
    await expectNoPreparedLeft();
  });
});

describe('broadcast writes refused at commit time', () => {
  /**
   * A deferred foreign key lets every shard's DELETE succeed; the shard holding a child row
   * refuses at PREPARE (a voter) or at COMMIT (the decision shard, after the others prepared).
   */
  it.each(['s0', 's2'])(
    'a DELETE refused by a deferred constraint on %s alone is rolled back on every shard, nothing left prepared',
    async (refusing) => {
      const parent = name(`parent_${refusing}`);
      const child = name(`child_${refusing}`);
      await broadcastCreate(parent, 'id int PRIMARY KEY');
      await broadcastCreate(child, `pid int REFERENCES ${parent} (id) DEFERRABLE INITIALLY DEFERRED`);
      for (const shardId of router.shardIds) await router.executeOn(shardId, `INSERT INTO ${parent} SELECT g FROM generate_series(1, 5) g`);
      await router.executeOn(refusing, `INSERT INTO ${child} VALUES (3)`);

      const error = await rejectionOf(router.broadcast(`DELETE FROM ${parent}`));
      expect(error).toBeInstanceOf(ShardRouterError);
      expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED', shardId: refusing });
      expect((error as ShardRouterError).cause).toMatchObject({ code: 'QUERY_FAILED', sqlState: '23503' });

      for (const shardId of router.shardIds) {
        const { rows } = await router.executeOn<{ n: number }>(shardId, `SELECT count(*)::int AS n FROM ${parent}`);
        expect(rows, `parent rows on ${shardId}`).toEqual([{ n: 5 }]);
      }
      await expectNoPreparedLeft();
    },
  );
});

describe('broadcast UPDATE and DELETE without a shard key', () => {
  const table = name('data');
  const ROWS = 80;

  beforeAll(async () => {
    await broadcastCreate(table, 'id int PRIMARY KEY, v int NOT NULL, tag text');
    for (let id = 1; id <= ROWS; id++) await router.execute(id, `INSERT INTO ${table} (id, v) VALUES ($1, $2)`, [id, id * 10]);
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ n: number }>(shardId, `SELECT count(*)::int AS n FROM ${table}`);
      expect(rows[0]!.n, `rows on ${shardId}`).toBeGreaterThan(0);
    }
  });

  /** Every shard's rows, straight from each shard, as [id, v, tag] sorted by id. */
  async function allRows(): Promise<{ id: number; v: number; tag: string | null; shardId: string }[]> {
    const perShard = await Promise.all(
      router.shardIds.map(async (shardId) =>
        (await router.executeOn<{ id: number; v: number; tag: string | null }>(shardId, `SELECT id, v, tag FROM ${table}`)).rows.map(
          (row) => ({ ...row, shardId }),
        ),
      ),
    );
    return perShard.flat().sort((a, b) => a.id - b.id);
  }

  it('UPDATE: rowCount is the sum over the shards, command UPDATE, and every shard changed', async () => {
    const result = await router.broadcast(`UPDATE ${table} SET v = v + 1 WHERE id <= $1`, [60]);
    expect(result.command).toBe('UPDATE');
    expect(result.rowCount).toBe(60);
    expect(result.rows).toEqual([]);
    expect(result.failures).toEqual([]);
    const rows = await allRows();
    expect(rows.map((row) => [row.id, row.v])).toEqual(
      Array.from({ length: ROWS }, (_, i) => [i + 1, (i + 1) * 10 + (i + 1 <= 60 ? 1 : 0)]),
    );
    // The change is on every shard, each row where its key routes.
    const changedShards = new Set(rows.filter((row) => row.id <= 60).map((row) => row.shardId));
    expect([...changedShards].sort()).toEqual(router.shardIds);
    for (const row of rows) expect(row.shardId).toBe(router.shardFor(row.id));
    await expectNoPreparedLeft();
  });

  it('UPDATE ... RETURNING returns the rows of all shards', async () => {
    const result = await router.broadcast<{ id: number; tag: string }>(
      `UPDATE ${table} SET tag = 'even' WHERE id % 2 = 0 RETURNING id, tag`,
    );
    expect(result.command).toBe('UPDATE');
    expect(result.rowCount).toBe(ROWS / 2);
    expect(result.fields.map((field) => field.name)).toEqual(['id', 'tag']);
    expect([...result.rows].sort((a, b) => a.id - b.id)).toEqual(
      Array.from({ length: ROWS / 2 }, (_, i) => ({ id: (i + 1) * 2, tag: 'even' })),
    );
    expect((await allRows()).filter((row) => row.tag === 'even').map((row) => row.id)).toEqual(
      result.rows.map((row) => row.id).sort((a, b) => a - b),
    );
  });

  it('an UPDATE that matches nothing: rowCount 0', async () => {
    const result = await router.broadcast(`UPDATE ${table} SET v = 0 WHERE id < 0`);
    expect(result).toMatchObject({ command: 'UPDATE', rowCount: 0, rows: [] });
  });

  it("DELETE: rowCount is the sum over the shards, command DELETE, the rows are gone from every shard; RETURNING gives all shards' rows", async () => {
    const result = await router.broadcast(`DELETE FROM ${table} WHERE id > $1`, [70]);
    expect(result.command).toBe('DELETE');
    expect(result.rowCount).toBe(10);
    expect((await allRows()).map((row) => row.id)).toEqual(Array.from({ length: 70 }, (_, i) => i + 1));

    const returning = await router.broadcast<{ id: number }>(`DELETE FROM ${table} WHERE v % 3 = 0 RETURNING id`);
    const expected = Array.from({ length: 70 }, (_, i) => i + 1).filter((id) => (id * 10 + (id <= 60 ? 1 : 0)) % 3 === 0);
    expect(returning.command).toBe('DELETE');
    expect(returning.rowCount).toBe(expected.length);
    expect(returning.rows.map((row) => row.id).sort((a, b) => a - b)).toEqual(expected);
    expect(new Set(expected.map((id) => router.shardFor(id))).size).toBeGreaterThan(1);
    expect((await allRows()).map((row) => row.id)).toEqual(
      Array.from({ length: 70 }, (_, i) => i + 1).filter((id) => !expected.includes(id)),
    );
    await expectNoPreparedLeft();
  });
});

describe('broadcast statements that cannot be one atomic write', () => {
  const table = name('refuse');

  beforeAll(async () => {
    await broadcastCreate(table, 'id int PRIMARY KEY, v int');
  });

  it.each([
    ['INSERT ... VALUES', `INSERT INTO ${table} VALUES (1, 2)`],
    ['INSERT ... VALUES', `INSERT INTO ${table} (id, v) VALUES ($1, $2), ($3, $4)`],
    ['transaction control', 'BEGIN'],
    ['transaction control', 'START TRANSACTION ISOLATION LEVEL SERIALIZABLE'],
    ['transaction control', 'COMMIT'],
    ['transaction control', 'ROLLBACK'],
    ['VacuumStmt', 'VACUUM'],
    ['VacuumStmt', `VACUUM ANALYZE ${table}`],
    ['CREATE INDEX CONCURRENTLY', `CREATE INDEX CONCURRENTLY ${table}_v ON ${table} (v)`],
  ])('%s: UNSUPPORTED, nothing sent (%#)', async (construct, sql) => {
    const error = await rejectionOf(router.broadcast(sql, sql.includes('$') ? [1, 2, 3, 4] : []));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('UNSUPPORTED');
    expect((error as Error).message).toContain(construct);
  });

  it('sent nothing: no row, no index on any shard, and the router still writes', async () => {
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ n: number; idx: string | null }>(
        shardId,
        `SELECT (SELECT count(*)::int FROM ${table}) AS n, to_regclass($1)::text AS idx`,
        [`${table}_v`],
      );
      expect(rows, shardId).toEqual([{ n: 0, idx: null }]);
    }
    const result = await router.broadcast(`UPDATE ${table} SET v = 1`);
    expect(result).toMatchObject({ command: 'UPDATE', rowCount: 0 });
    await expectNoPreparedLeft();
  });
});
