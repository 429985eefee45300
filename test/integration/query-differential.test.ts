import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, shardUrls, uniqueName, withServer } from '../support/cluster.js';

/**
 * Differential test of router.query: the same rows live spread over 4 shards (users by id,
 * orders by user_id, events by a text tenant, countries a reference table) and, unchanged, in a
 * schema of their own on one server (the reference, reached through search_path). Every
 * statement of the corpus runs through router.query and on the reference: rows and rowCount
 * must be equal (sorted first where the statement leaves the order open), and after the writes
 * the tables must be equal too.
 */

const USERS = uniqueName('qu');
const ORDERS = uniqueName('qo');
const EVENTS = uniqueName('qe');
const COUNTRIES = uniqueName('qc');
const REFERENCE_SCHEMA = uniqueName('qref');
const catalog = uniqueName('cat');

let router: ShardRouter;
let reference: pg.Client;

const COUNTRY_CODES = ['NO', 'SE', 'DK', 'FI', 'IS'];
const STATUSES = ['new', 'paid', 'shipped', 'void'];
const TENANTS = ['acme', 'globex', 'initech', 'umbrella', 'hooli', 'Äpfel', 'tenant-7'];

function ddl(): string[] {
  return [
    `CREATE TABLE ${USERS} (id bigint PRIMARY KEY, name text NOT NULL, country text NOT NULL)`,
    `CREATE TABLE ${ORDERS} (id bigint PRIMARY KEY, user_id bigint NOT NULL, total numeric(12,2) NOT NULL, status text NOT NULL)`,
    `CREATE TABLE ${EVENTS} (tenant text NOT NULL, seq integer NOT NULL, payload text, PRIMARY KEY (tenant, seq))`,
    `CREATE TABLE ${COUNTRIES} (code text PRIMARY KEY, name text NOT NULL)`,
  ];
}

interface Rows {
  users: [number, string, string][];
  orders: [number, number, string, string][];
  events: [string, number, string][];
}

function data(): Rows {
  const users: Rows['users'] = [];
  const orders: Rows['orders'] = [];
  const events: Rows['events'] = [];
  for (let id = 1; id <= 40; id++) users.push([id, `user ${id}`, COUNTRY_CODES[id % COUNTRY_CODES.length]!]);
  let orderId = 1000;
  for (let id = 1; id <= 40; id++) {
    for (let n = 0; n < (id % 4) + 1; n++)
      orders.push([orderId++, id, ((id * 37 + n * 11) % 500) + 0.25 * n + '', STATUSES[(id + n) % 4]!]);
  }
  TENANTS.forEach((tenant, t) => {
    for (let seq = 1; seq <= 5 + t; seq++) events.push([tenant, seq, `${tenant}:${seq}`]);
  });
  return { users, orders, events };
}

/** Runs a statement on the reference (its session sees the reference schema first). */
async function onReference(sql: string, params: readonly unknown[]): Promise<{ rows: unknown[]; rowCount: number }> {
  const result = await reference.query({ text: sql, values: params as unknown[] });
  return { rows: result.rows, rowCount: result.rowCount ?? result.rows.length };
}

async function load(run: (sql: string, params: unknown[]) => Promise<unknown>): Promise<void> {
  const { users, orders, events } = data();
  await run(`INSERT INTO ${COUNTRIES} (code, name) SELECT * FROM unnest($1::text[], $2::text[])`, [
    COUNTRY_CODES,
    COUNTRY_CODES.map((c) => `Country ${c}`),
  ]);
  for (const [id, name, country] of users) await run(`INSERT INTO ${USERS} (id, name, country) VALUES ($1, $2, $3)`, [id, name, country]);
  for (const [id, user, total, status] of orders)
    await run(`INSERT INTO ${ORDERS} (id, user_id, total, status) VALUES ($1, $2, $3, $4)`, [id, user, total, status]);
  for (const [tenant, seq, payload] of events)
    await run(`INSERT INTO ${EVENTS} (tenant, seq, payload) VALUES ($1, $2, $3)`, [tenant, seq, payload]);
}

beforeAll(async () => {
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) for (const statement of ddl()) await router.executeOn(shardId, statement);
  await router.registerShardedTable(USERS, 'id');
  await router.registerShardedTable(ORDERS, 'user_id');
  await router.registerShardedTable(EVENTS, 'tenant');
  await router.registerReferenceTable(COUNTRIES);
  await router.broadcast(`INSERT INTO ${COUNTRIES} (code, name) SELECT * FROM unnest($1::text[], $2::text[])`, [
    COUNTRY_CODES,
    COUNTRY_CODES.map((c) => `Country ${c}`),
  ]);
  const { users, orders, events } = data();
  for (const [id, name, country] of users)
    await router.execute(id, `INSERT INTO ${USERS} (id, name, country) VALUES ($1, $2, $3)`, [id, name, country]);
  for (const [id, user, total, status] of orders)
    await router.execute(user, `INSERT INTO ${ORDERS} (id, user_id, total, status) VALUES ($1, $2, $3, $4)`, [id, user, total, status]);
  for (const [tenant, seq, payload] of events)
    await router.execute(tenant, `INSERT INTO ${EVENTS} (tenant, seq, payload) VALUES ($1, $2, $3)`, [tenant, seq, payload]);

  reference = new pg.Client({ connectionString: shardUrls()[0]! });
  await reference.connect();
  await reference.query(`CREATE SCHEMA ${REFERENCE_SCHEMA}`);
  await reference.query(`SET search_path TO ${REFERENCE_SCHEMA}`);
  for (const statement of ddl()) await reference.query(statement);
  await load((sql, params) => reference.query(sql, params));
}, 120_000);

afterAll(async () => {
  await reference?.end();
  await withServer(shardUrls()[0]!, (client) => client.query(`DROP SCHEMA IF EXISTS ${REFERENCE_SCHEMA} CASCADE`));
  await router?.broadcast(`DROP TABLE IF EXISTS ${USERS}, ${ORDERS}, ${EVENTS}, ${COUNTRIES}`).catch(() => undefined);
  await router?.close();
  await dropSchemas(catalog);
});

/** One corpus entry: `sorted` compares rows as multisets (the statement leaves the order open). */
interface Case {
  readonly sql: string;
  readonly params?: readonly unknown[];
  readonly sorted?: boolean;
}

function readCorpus(): Case[] {
  const cases: Case[] = [];
  // Point reads, by parameter and by constant, on integer and text keys.
  for (const id of [1, 2, 3, 7, 11, 19, 23, 31, 40, 99])
    cases.push({ sql: `SELECT id, name, country FROM ${USERS} WHERE id = $1`, params: [id] });
  for (const id of [4, 8, 15, 16, 38])
    cases.push({ sql: `SELECT id, total, status FROM ${ORDERS} WHERE user_id = $1 ORDER BY id`, params: [id] });
  cases.push({ sql: `SELECT * FROM ${USERS} WHERE id = 12` });
  cases.push({ sql: `SELECT * FROM ${USERS} WHERE 13 = id AND name LIKE 'user%'` });
  cases.push({ sql: `SELECT count(*) AS n, sum(total) AS s FROM ${ORDERS} WHERE user_id = $1 AND status <> 'void'`, params: [9] });
  cases.push({ sql: `SELECT * FROM ${ORDERS} WHERE user_id = $1::bigint ORDER BY total DESC, id LIMIT 2`, params: ['0021'] });
  for (const tenant of TENANTS) cases.push({ sql: `SELECT seq, payload FROM ${EVENTS} WHERE tenant = $1 ORDER BY seq`, params: [tenant] });
  cases.push({ sql: `SELECT max(seq) AS m FROM ${EVENTS} WHERE tenant = 'hooli'` });
  cases.push({ sql: `SELECT * FROM ${USERS} WHERE id = $1`, params: [null] });
  // IN lists and = ANY spanning shards (merged like broadcast).
  cases.push({ sql: `SELECT id, name FROM ${USERS} WHERE id IN (1, 2, 3, 4, 5, 6) ORDER BY id` });
  cases.push({ sql: `SELECT id, name FROM ${USERS} WHERE id IN ($1, $2, $3) ORDER BY name`, params: [10, 20, 30] });
  cases.push({ sql: `SELECT id FROM ${USERS} WHERE id = ANY($1)`, params: [[3, 13, 23, 33]], sorted: true });
  cases.push({ sql: `SELECT id, name FROM ${USERS} WHERE id = ANY($1::bigint[]) ORDER BY id DESC LIMIT 3`, params: [[5, 6, 7, 8, 9]] });
  cases.push({
    sql: `SELECT status, count(*) AS n, sum(total) AS s FROM ${ORDERS} WHERE user_id = ANY($1) GROUP BY status ORDER BY status`,
    params: [[1, 2, 3, 4, 5, 6, 7, 8]],
  });
  cases.push({ sql: `SELECT count(*) AS n FROM ${ORDERS} WHERE user_id IN (1, 17, 33)` });
  cases.push({ sql: `SELECT avg(total) AS a FROM ${ORDERS} WHERE user_id = ANY($1)`, params: [[2, 4, 6, 8, 10, 12]] });
  cases.push({
    sql: `SELECT tenant, count(*) AS n FROM ${EVENTS} WHERE tenant IN ('acme', 'globex', 'Äpfel') GROUP BY tenant ORDER BY tenant`,
  });
  cases.push({ sql: `SELECT DISTINCT status FROM ${ORDERS} WHERE user_id = ANY($1) ORDER BY status`, params: [[11, 12, 13, 14]] });
  cases.push({ sql: `SELECT id FROM ${USERS} WHERE id = ANY($1)`, params: [[]] });
  cases.push({ sql: `SELECT id FROM ${USERS} WHERE id IN (NULL, 3) ORDER BY id` });
  // Co-located joins (users.id = orders.user_id), pinned.
  for (const id of [1, 6, 14, 27, 35])
    cases.push({
      sql: `SELECT u.name, o.id, o.total FROM ${USERS} u JOIN ${ORDERS} o ON o.user_id = u.id WHERE u.id = $1 ORDER BY o.id`,
      params: [id],
    });
  cases.push({
    sql: `SELECT u.name, count(o.id) AS n FROM ${USERS} u LEFT JOIN ${ORDERS} o ON o.user_id = u.id WHERE u.id = $1 GROUP BY u.name`,
    params: [22],
  });
  cases.push({ sql: `SELECT o.id FROM ${ORDERS} o, ${USERS} u WHERE o.user_id = u.id AND o.user_id = 18 ORDER BY o.id` });
  cases.push({
    sql: `SELECT u.id, o.status FROM ${ORDERS} o JOIN ${USERS} u ON u.id = o.user_id WHERE o.user_id = $1 AND o.total > 100 ORDER BY 1, 2`,
    params: [25],
  });
  // Joins with the reference table.
  for (const id of [2, 9, 26])
    cases.push({
      sql: `SELECT u.name, c.name AS country FROM ${USERS} u JOIN ${COUNTRIES} c ON c.code = u.country WHERE u.id = $1`,
      params: [id],
    });
  cases.push({
    sql: `SELECT o.id, c.name FROM ${ORDERS} o JOIN ${USERS} u ON u.id = o.user_id JOIN ${COUNTRIES} c ON c.code = u.country WHERE o.user_id = $1 ORDER BY o.id`,
    params: [31],
  });
  // Reference table alone, and unpinned single-table reads (broadcast).
  cases.push({ sql: `SELECT * FROM ${COUNTRIES} ORDER BY code` });
  cases.push({ sql: `SELECT count(*) AS n FROM ${COUNTRIES}` });
  cases.push({ sql: `SELECT status, count(*) AS n FROM ${ORDERS} GROUP BY status ORDER BY status` });
  cases.push({ sql: `SELECT id, total FROM ${ORDERS} WHERE total > $1 ORDER BY total DESC, id LIMIT 5`, params: [300] });
  cases.push({ sql: `SELECT count(*) AS n FROM ${USERS} WHERE id = 3 OR id = 4` });
  cases.push({ sql: `SELECT tenant, max(seq) AS m FROM ${EVENTS} GROUP BY tenant ORDER BY tenant` });
  cases.push(...joinAndSubqueryCorpus());
  return cases;
}

/** Joins without a pinned key (the broadcast planner), pinned joins over several shards, subqueries and CTEs. */
function joinAndSubqueryCorpus(): Case[] {
  const byUser = `(SELECT count(*) FROM ${ORDERS} o WHERE o.user_id = u.id)`;
  return [
    // Unpinned joins: co-located, with the reference table, and on other columns.
    { sql: `SELECT u.id, count(o.id) AS n FROM ${USERS} u JOIN ${ORDERS} o ON o.user_id = u.id GROUP BY u.id ORDER BY u.id` },
    { sql: `SELECT c.name, count(*) AS n FROM ${USERS} u JOIN ${COUNTRIES} c ON c.code = u.country GROUP BY c.name ORDER BY c.name` },
    { sql: `SELECT u.id, o.id AS oid FROM ${USERS} u JOIN ${ORDERS} o ON o.id = u.id + 999 ORDER BY 1` },
    { sql: `SELECT u.country, sum(o.total) AS s FROM ${ORDERS} o JOIN ${USERS} u ON u.id = o.user_id GROUP BY 1 ORDER BY 1` },
    // Pinned joins whose keys fall on several shards: read on those shards, merged.
    { sql: `SELECT u.name, o.id FROM ${USERS} u JOIN ${ORDERS} o ON o.user_id = u.id WHERE u.id IN (1, 2, 3, 4) ORDER BY o.id` },
    {
      sql: `SELECT u.id, o.id AS oid FROM ${USERS} u LEFT JOIN ${ORDERS} o ON o.user_id = u.id WHERE u.id = ANY($1) ORDER BY 1, 2`,
      params: [[1, 2, 3, 4, 5, 6, 99]],
    },
    // Subqueries and CTEs pinned to one shard (correlated ones follow the outer key).
    { sql: `SELECT u.id, ${byUser} AS n FROM ${USERS} u WHERE u.id = $1`, params: [5] },
    {
      sql: `SELECT id FROM ${USERS} u WHERE u.id = $1 AND EXISTS (SELECT 1 FROM ${ORDERS} o WHERE o.user_id = u.id AND o.total > 100)`,
      params: [17],
    },
    { sql: `SELECT id FROM ${USERS} u WHERE u.id = $1 AND NOT EXISTS (SELECT 1 FROM ${ORDERS} o WHERE o.user_id = u.id)`, params: [99] },
    { sql: `WITH mine AS (SELECT * FROM ${ORDERS} WHERE user_id = $1) SELECT count(*) AS n, sum(total) AS s FROM mine`, params: [19] },
    { sql: `SELECT s.id, c.name FROM (SELECT * FROM ${USERS} WHERE id = $1) s JOIN ${COUNTRIES} c ON c.code = s.country`, params: [24] },
    {
      sql: `SELECT id AS k FROM ${USERS} WHERE id = $1 UNION ALL SELECT user_id FROM ${ORDERS} WHERE user_id = $1 ORDER BY 1`,
      params: [3],
    },
    {
      sql: `SELECT id, name FROM ${USERS} WHERE id = $1 AND id IN (SELECT user_id FROM ${ORDERS} WHERE user_id = $1 AND status = 'paid')`,
      params: [7],
    },
    {
      sql: `WITH RECURSIVE r(n) AS (SELECT count(*) FROM ${ORDERS} WHERE user_id = $1 UNION ALL SELECT n - 1 FROM r WHERE n > 0) SELECT n FROM r ORDER BY n`,
      params: [28],
    },
    // Pinned to several shards with a correlated subquery: read on those shards.
    { sql: `SELECT u.id, ${byUser} AS n FROM ${USERS} u WHERE u.id IN (1, 2, 3, 4, 5) ORDER BY u.id` },
  ];
}

/** Statements router.query must refuse (the broadcast planner cannot answer them exactly): UNSUPPORTED, nothing sent. */
function refusedCorpus(): Case[] {
  return [
    { sql: `WITH RECURSIVE r(n) AS (SELECT min(id) FROM ${USERS} UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r` },
    {
      sql: `WITH RECURSIVE r(n) AS (SELECT count(*) FROM ${ORDERS} WHERE user_id IN (1, 2, 3, 4) UNION ALL SELECT n - 1 FROM r WHERE n > 0) SELECT n FROM r`,
    },
    { sql: `SELECT id FROM ${USERS} WHERE random() < 0.5` },
    { sql: `SELECT id FROM ${USERS} a WHERE EXISTS (SELECT 1 FROM ${ORDERS} b WHERE b.user_id = a.id) FOR UPDATE` },
    { sql: `SELECT id INTO ${USERS}_copy FROM ${USERS} WHERE id = $1`, params: [1] },
    { sql: `UPDATE ${USERS} SET name = 'x' WHERE id IN (SELECT user_id FROM ${ORDERS})` },
    { sql: `DELETE FROM ${ORDERS} o USING ${USERS} u WHERE u.id = o.user_id AND u.country = 'NO'` },
    { sql: `DELETE FROM ${ORDERS} o USING ${USERS} u WHERE u.id = o.user_id AND u.id IN (1, 2, 3, 4)` },
    { sql: `WITH gone AS (DELETE FROM ${ORDERS} WHERE user_id = $1 RETURNING id) SELECT count(*) FROM gone`, params: [2] },
  ];
}

function writeCorpus(): Case[] {
  const cases: Case[] = [];
  // Multi-row INSERT ... RETURNING: rows in input order, across shards.
  cases.push({
    sql: `INSERT INTO ${USERS} (id, name, country) VALUES ($1, $2, 'NO'), ($3, $4, 'SE'), ($5, $6, $7), (44, 'user 44', 'FI') RETURNING id, name`,
    params: [41, 'user 41', 42, 'user 42', 43, 'user 43', 'DK'],
  });
  cases.push({
    sql: `INSERT INTO ${ORDERS} (id, user_id, total, status) VALUES ($1, $2, 10, 'new'), ($3, $4, 20, 'new'), ($5, $2, 30, $6) RETURNING *`,
    params: [5001, 41, 5002, 42, 5003, 'paid'],
  });
  cases.push({
    sql: `INSERT INTO ${ORDERS} (id, user_id, total, status) VALUES ${Array.from({ length: 12 }, (_, i) => `($${3 * i + 1}, $${3 * i + 2}, $${3 * i + 3}, 'bulk')`).join(', ')} RETURNING id, user_id`,
    params: Array.from({ length: 12 }, (_, i) => [6000 + i, ((i * 7) % 40) + 1, i * 1.5]).flat(),
  });
  cases.push({ sql: `INSERT INTO ${ORDERS} (id, user_id, total, status) VALUES ($1, $2, 1, 'one')`, params: [5100, 3] });
  cases.push({
    sql: `INSERT INTO ${EVENTS} (tenant, seq, payload) VALUES ('acme', 100, 'x'), ('globex', 100, 'y'), ('hooli', 100, NULL) RETURNING tenant, seq`,
  });
  cases.push({ sql: `INSERT INTO ${EVENTS} (tenant, seq) VALUES ($1, 101) ON CONFLICT DO NOTHING`, params: ['acme'] });
  cases.push({ sql: `INSERT INTO ${EVENTS} (tenant, seq) VALUES ($1, 101) ON CONFLICT DO NOTHING`, params: ['acme'] });
  cases.push({ sql: `INSERT INTO ${COUNTRIES} (code, name) VALUES ('EE', 'Country EE')` });
  // UPDATE and DELETE with keys (one shard, several shards) and without (every shard).
  cases.push({ sql: `UPDATE ${ORDERS} SET status = 'paid' WHERE user_id = $1 AND status = 'new'`, params: [41] });
  cases.push({ sql: `UPDATE ${ORDERS} SET total = total + 1 WHERE user_id = $1 RETURNING id, total`, params: [8], sorted: true });
  cases.push({ sql: `UPDATE ${ORDERS} SET total = total * 2 WHERE user_id IN (1, 2, 3, 4, 5) AND status = 'paid'` });
  cases.push({ sql: `UPDATE ${ORDERS} SET status = 'held' WHERE user_id = ANY($1) RETURNING id`, params: [[6, 16, 26, 36]], sorted: true });
  cases.push({ sql: `UPDATE ${USERS} SET name = name || '!' WHERE country = 'SE'` });
  cases.push({ sql: `UPDATE ${ORDERS} o SET status = 'vip' FROM ${USERS} u WHERE u.id = o.user_id AND o.user_id = $1`, params: [10] });
  cases.push({ sql: `UPDATE ${EVENTS} SET payload = upper(payload) WHERE tenant = 'initech' AND seq < 4` });
  cases.push({ sql: `UPDATE ${COUNTRIES} SET name = name || ' (EU)' WHERE code IN ('SE', 'DK', 'FI')` });
  cases.push({ sql: `DELETE FROM ${COUNTRIES} WHERE code = 'EE' RETURNING code` });
  cases.push({ sql: `DELETE FROM ${ORDERS} WHERE user_id = $1 AND status = 'void'`, params: [12] });
  cases.push({ sql: `DELETE FROM ${ORDERS} WHERE user_id = ANY($1) RETURNING id`, params: [[20, 21, 22]], sorted: true });
  cases.push({ sql: `DELETE FROM ${ORDERS} WHERE total < 5` });
  cases.push({ sql: `DELETE FROM ${EVENTS} WHERE seq > 9` });
  cases.push({ sql: `DELETE FROM ${USERS} WHERE id = 44` });
  cases.push({ sql: `DELETE FROM ${ORDERS} o USING ${USERS} u WHERE u.id = o.user_id AND u.id = $1 AND o.total > 200`, params: [37] });
  return cases;
}

function normalized(rows: unknown[], sorted: boolean | undefined): unknown[] {
  const plain = rows.map((row) => JSON.parse(JSON.stringify(row)) as unknown);
  return sorted ? plain.map((row) => JSON.stringify(row)).sort() : plain;
}

async function compare(entry: Case): Promise<void> {
  const params = entry.params ?? [];
  const expected = await onReference(entry.sql, params);
  const actual = await router.query(entry.sql, params);
  expect({ sql: entry.sql, rows: normalized(actual.rows, entry.sorted), rowCount: actual.rowCount }).toEqual({
    sql: entry.sql,
    rows: normalized(expected.rows, entry.sorted),
    rowCount: expected.rowCount,
  });
}

const TABLE_ORDER: Record<string, string> = { [USERS]: 'id', [ORDERS]: 'id', [EVENTS]: 'tenant, seq', [COUNTRIES]: 'code' };

describe('router.query against one reference server', () => {
  it('has a corpus of at least 80 statements', () => {
    expect(readCorpus().length + writeCorpus().length).toBeGreaterThanOrEqual(80);
  });

  it('reads: point, IN / ANY across shards, co-located and reference joins, unpinned, subqueries and CTEs', async () => {
    for (const entry of readCorpus()) await compare(entry);
  });

  it('pinned keys on several shards are read on their owners only', async () => {
    const keys = [1, 2, 3, 4, 5];
    const owners = [...new Set(keys.map((key) => router.shardFor(key)))].sort();
    expect(owners.length).toBeGreaterThan(1);
    expect(owners.length).toBeLessThan(router.shardIds.length);
    for (const sql of [
      `SELECT id FROM ${USERS} WHERE id = ANY($1) ORDER BY id`,
      `SELECT u.id, o.id AS oid FROM ${USERS} u JOIN ${ORDERS} o ON o.user_id = u.id WHERE u.id = ANY($1) ORDER BY 1, 2`,
    ]) {
      expect(await router.explainQuery(sql, [keys])).toMatchObject({ kind: 'broadcast', shardIds: owners });
      const result = await router.query(sql, [keys]);
      expect(result.shardIds).toEqual(owners);
      expect(result.rows).toEqual((await onReference(sql, [keys])).rows.map((row) => JSON.parse(JSON.stringify(row))));
    }
    // The table moved away on the other shards: a statement sent there would fail (42P01).
    const others = router.shardIds.filter((shardId) => !owners.includes(shardId));
    const away = `${USERS}_away`;
    for (const shardId of others) await router.executeOn(shardId, `ALTER TABLE ${USERS} RENAME TO ${away}`);
    try {
      const sql = `SELECT count(*) AS n FROM ${USERS} u WHERE u.id = ANY($1) AND EXISTS (SELECT 1 FROM ${ORDERS} o WHERE o.user_id = u.id)`;
      expect((await router.query(sql, [keys])).rows).toEqual((await onReference(sql, [keys])).rows);
    } finally {
      for (const shardId of others) await router.executeOn(shardId, `ALTER TABLE ${away} RENAME TO ${USERS}`);
    }
  });

  it('refuses what the broadcast planner cannot answer exactly', async () => {
    for (const entry of refusedCorpus()) {
      const error = await router.query(entry.sql, entry.params ?? []).then(
        () => undefined,
        (failure: unknown) => failure,
      );
      expect({ sql: entry.sql, code: (error as { code?: string } | undefined)?.code }).toEqual({ sql: entry.sql, code: 'UNSUPPORTED' });
    }
    // Nothing was written: the tables are as on the reference (and no table was created by INTO).
    for (const [table, order] of Object.entries(TABLE_ORDER)) {
      const sql = `SELECT * FROM ${table} ORDER BY ${order}`;
      expect(normalized((await router.query(sql)).rows, false)).toEqual(normalized((await onReference(sql, [])).rows, false));
    }
    for (const shardId of router.shardIds) {
      const created = await router.executeOn<{ t: string | null }>(shardId, 'SELECT to_regclass($1)::text AS t', [`${USERS}_copy`]);
      expect(created.rows).toEqual([{ t: null }]);
    }
  });

  it('writes: multi-row INSERT RETURNING in input order, UPDATE/DELETE with and without keys; then the tables are equal', async () => {
    for (const entry of writeCorpus()) await compare(entry);
    for (const [table, order] of Object.entries(TABLE_ORDER)) {
      const sql = `SELECT * FROM ${table} ORDER BY ${order}`;
      const expected = await onReference(sql, []);
      const actual = await router.query(sql);
      expect(normalized(actual.rows, false)).toEqual(normalized(expected.rows, false));
    }
    // Every row lives on the shard its key says (the split INSERTs included).
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ user_id: string }>(shardId, `SELECT DISTINCT user_id::text FROM ${ORDERS}`);
      for (const row of rows) expect(router.shardFor(row.user_id)).toBe(shardId);
    }
  });
});
