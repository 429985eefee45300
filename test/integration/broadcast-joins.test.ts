import pg from 'pg';
import type { QueryResultRow } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, shardConfigs, uniqueName } from '../support/cluster.js';
import { seededRandom } from '../support/random.js';

/**
 * Push-down of co-located joins and joins with reference tables: every query is answered by
 * broadcast over 4 shards and by one server holding all the rows (a schema of its own on s0),
 * and must come out the same (values, field names and types). explain says which joins went
 * down whole to the shards and which took the coordinator step instead.
 */

const P = uniqueName('bj');
/** Sharded by user_id. */
const U = `${P}_users`;
/** Sharded by user_id too: co-located with U. */
const O = `${P}_orders`;
/** Sharded by its own id (an id equal to a user's id lives on that user's shard). */
const E = `${P}_events`;
/** Sharded by a text key under a case-insensitive collation: 'a' = 'A', but they hash to different buckets. */
const N = `${P}_words`;
const CI = `${P}_ci`;
/** A registered reference table. */
const C = `${P}_countries`;
/** The one-server copy of everything. */
const ONE = `${P}_one`;

let router: ShardRouter;
let catalog: string;
let client: pg.Client;

const TABLES = {
  U: `(user_id bigint PRIMARY KEY, name text, country text, score int4)`,
  O: `(user_id bigint NOT NULL, id bigint NOT NULL, amount numeric(12,2), qty int4, PRIMARY KEY (user_id, id))`,
  E: `(id bigint PRIMARY KEY, kind text)`,
  N: `(id int4 PRIMARY KEY, wk text COLLATE ${CI})`,
  C: `(code text PRIMARY KEY, region text)`,
} as const;
const names = { U, O, E, N, C } as const;
const COLUMN_NAMES = {
  U: ['user_id', 'name', 'country', 'score'],
  O: ['user_id', 'id', 'amount', 'qty'],
  E: ['id', 'kind'],
  N: ['id', 'wk'],
  C: ['code', 'region'],
} as const;

/** The statement for the router (`{U}` -> the sharded table) or for the one server (its schema's copy). */
function sqlFor(template: string, one: boolean): string {
  return template.replace(/\{([UOENC])\}/g, (_, key: keyof typeof names) => (one ? `"${ONE}".${names[key]}` : names[key]));
}

interface Data {
  U: unknown[][];
  O: unknown[][];
  E: unknown[][];
  N: unknown[][];
  C: unknown[][];
}

function generate(): Data {
  const random = seededRandom(0x701d5);
  const pick = <V>(values: readonly V[]) => values[Math.floor(random() * values.length)]!;
  const countries = ['de', 'fr', 'jp', 'br'];
  const U: unknown[][] = [];
  const O: unknown[][] = [];
  for (let user = 1; user <= 300; user++) {
    U.push([user, random() < 0.05 ? null : pick(['ann', 'Bob', 'bob', 'Zoë', 'émile', 'li']), pick([...countries, 'xx', null]), user % 17]);
    const orders = Math.floor(random() * 6);
    for (let n = 1; n <= orders; n++) O.push([user, user * 10 + n, random() < 0.05 ? null : (random() * 500).toFixed(2), 1 + (n % 4)]);
  }
  // Orders of users that do not exist (an outer join keeps or drops them).
  for (let user = 301; user <= 320; user++) O.push([user, user * 10, '1.50', 2]);
  const E = Array.from({ length: 250 }, (_, i) => [i * 2 + 1, pick(['click', 'view', null])]);
  const N = Array.from({ length: 40 }, (_, i) => [i + 1, ['a', 'A', 'b', 'B', 'ä', 'Ä', 'c'][i % 7]]);
  const C = [
    ['de', 'eu'],
    ['fr', 'eu'],
    ['jp', 'asia'],
    ['us', 'america'],
  ];
  return { U, O, E, N, C };
}

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog });
  client = new pg.Client({ connectionString: shardConfigs()[0]!.connectionString });
  await client.connect();
  const data = generate();
  await client.query(`CREATE SCHEMA "${ONE}"`);
  const keyOf: Record<string, number> = { U: 0, O: 0, E: 0, N: 1 };
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE COLLATION ${CI} (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`);
  }
  for (const key of Object.keys(TABLES) as (keyof typeof TABLES)[]) {
    const columnNames = COLUMN_NAMES[key];
    const insert = (table: string) => `INSERT INTO ${table} SELECT * FROM json_populate_recordset(NULL::${table}, $1::json)`;
    const columns = (rows: unknown[][]) => [
      JSON.stringify(rows.map((row) => Object.fromEntries(columnNames.map((name, c) => [name, row[c]])))),
    ];
    await router.broadcast(`CREATE TABLE ${names[key]} ${TABLES[key]}`);
    await client.query(`CREATE TABLE "${ONE}".${names[key]} ${TABLES[key]}`);
    await client.query(insert(`"${ONE}".${names[key]}`), columns(data[key]));
    for (const shardId of router.shardIds) {
      const mine = key === 'C' ? data[key] : data[key].filter((row) => router.shardFor(String(row[keyOf[key]!])) === shardId);
      if (mine.length > 0) await router.executeOn(shardId, insert(names[key]), columns(mine));
    }
  }
  await router.registerShardedTable(U, 'user_id');
  await router.registerShardedTable(O, 'user_id');
  await router.registerShardedTable(E, 'id');
  await router.registerShardedTable(N, 'wk');
  await router.registerReferenceTable(C);
});

afterAll(async () => {
  await client?.end().catch(() => undefined);
  if (router) {
    for (const table of [U, O, E, N, C]) await router.broadcast(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
    await dropSchemas(ONE);
    await router.broadcast(`DROP COLLATION IF EXISTS ${CI}`).catch(() => undefined);
    await router.close();
  }
  if (catalog) await dropSchemas(catalog);
});

/** Pushed down: each shard joins its own rows (explain names the co-located keys). */
const PUSHED: [string, unknown[]?][] = [
  ['SELECT u.user_id, u.name, o.id, o.amount FROM {U} u JOIN {O} o ON o.user_id = u.user_id ORDER BY o.id'],
  ['SELECT u.user_id, o.id FROM {U} u LEFT JOIN {O} o ON u.user_id = o.user_id AND o.qty > 2 ORDER BY u.user_id, o.id NULLS FIRST'],
  ['SELECT u.user_id, o.id FROM {U} u RIGHT JOIN {O} o ON u.user_id = o.user_id ORDER BY o.id'],
  ['SELECT u.user_id, o.id FROM {U} u FULL JOIN {O} o ON u.user_id = o.user_id AND o.qty <> 3 ORDER BY o.id NULLS FIRST, u.user_id'],
  ['SELECT count(*) AS n, count(o.id) AS orders FROM {U} u FULL JOIN {O} o USING (user_id)'],
  [
    'SELECT u.name, count(*) AS n, sum(o.amount * o.qty) AS revenue, avg(o.amount) AS avg_amount FROM {U} u JOIN {O} o ON o.user_id = u.user_id GROUP BY u.name ORDER BY u.name NULLS FIRST',
  ],
  [
    'SELECT u.country, count(u.user_id) AS n, min(o.amount) AS lo, max(o.amount) AS hi FROM {U} u, {O} o WHERE u.user_id = o.user_id AND o.qty >= $1 GROUP BY u.country ORDER BY u.country NULLS LAST',
    [2],
  ],
  ['SELECT c.region, count(*) AS n, sum(u.score) AS s FROM {U} u JOIN {C} c ON c.code = u.country GROUP BY c.region ORDER BY c.region'],
  ['SELECT u.user_id, c.region FROM {U} u LEFT JOIN {C} c ON c.code = u.country WHERE u.user_id < 40 ORDER BY u.user_id'],
  ['SELECT u.user_id, c.region FROM {C} c RIGHT JOIN {U} u ON c.code = u.country WHERE u.user_id % 7 = 0 ORDER BY u.user_id'],
  [
    'SELECT c.region, o.qty, count(*) AS n FROM {U} u JOIN {O} o ON o.user_id = u.user_id JOIN {C} c ON c.code = u.country GROUP BY c.region, o.qty ORDER BY 1, 2',
  ],
  [
    'SELECT u.name, sum(o.qty) AS q FROM {U} u JOIN {O} o ON o.user_id = u.user_id GROUP BY u.name HAVING sum(o.qty) > 20 ORDER BY q DESC, u.name LIMIT 3',
  ],
  ['SELECT DISTINCT u.country FROM {U} u JOIN {O} o ON o.user_id = u.user_id WHERE o.amount > 400 ORDER BY 1 NULLS FIRST'],
  ['SELECT e.kind, count(*) AS n FROM {E} e JOIN {U} u ON u.user_id = e.id GROUP BY e.kind ORDER BY e.kind NULLS FIRST'],
  ['SELECT count(*) AS n FROM {U} a JOIN {U} b ON a.user_id = b.user_id JOIN {O} o ON o.user_id = b.user_id'],
  ['SELECT u.name, o.id FROM {U} u JOIN {O} o ON o.user_id = u.user_id ORDER BY u.name COLLATE "C" NULLS FIRST, o.id LIMIT 15 OFFSET 5'],
];

/** Not exact if pushed down: the coordinator step answers them (still exactly). */
const REFUSED: [string, RegExp][] = [
  ['SELECT c.code, count(u.user_id) AS n FROM {C} c LEFT JOIN {U} u ON u.country = c.code GROUP BY c.code ORDER BY c.code', /Coordinator/],
  ['SELECT c.code, u.user_id FROM {U} u RIGHT JOIN {C} c ON u.country = c.code WHERE c.code = $1 ORDER BY u.user_id', /Coordinator/],
  ['SELECT count(*) AS n, count(c.code) AS matched FROM {U} u FULL JOIN {C} c ON u.country = c.code', /Coordinator/],
  ['SELECT count(*) AS n FROM {U} u JOIN {O} o ON o.id = u.user_id', /Coordinator/],
  ['SELECT count(*) AS n FROM {U} u, {O} o WHERE u.score = o.qty', /Coordinator/],
  [
    'SELECT u.country, count(DISTINCT o.qty) AS kinds FROM {U} u JOIN {O} o ON o.user_id = u.user_id GROUP BY u.country ORDER BY 1',
    /Coordinator/,
  ],
];

function canonical(row: QueryResultRow): string {
  return JSON.stringify(Object.entries(row));
}

async function expectSame(template: string, params: unknown[] = []): Promise<void> {
  const expected = await client.query(sqlFor(template, true), params);
  const actual = await router.broadcast(sqlFor(template, false), params);
  expect(actual.fields.map((field) => [field.name, field.dataTypeID])).toEqual(
    expected.fields.map((field) => [field.name, field.dataTypeID]),
  );
  expect(actual.failures).toEqual([]);
  if (/ORDER BY/.test(template) && !/\bDISTINCT\b.*ORDER BY 1 NULLS/.test(template)) expect(actual.rows).toEqual(expected.rows);
  else expect(actual.rows.map(canonical).sort()).toEqual(expected.rows.map(canonical).sort());
}

describe('broadcast join push-down', () => {
  it.each(PUSHED)('pushed down and exact: %s', async (template, params) => {
    expect(router.explain(sqlFor(template, false))).toMatch(/Join pushed down whole to each shard/);
    await expectSame(template, params);
  });

  it.each(REFUSED)('not pushed down, answered by the coordinator step: %s', async (template, plan) => {
    expect(router.explain(sqlFor(template, false))).toMatch(plan);
    await expectSame(template, template.includes('$1') ? ['de'] : []);
  });

  it('a GROUP BY over a co-located join sends per-shard partial aggregates, each table guarded against moves on its own key', () => {
    const explained = router.explain(
      sqlFor('SELECT u.country, count(*), sum(o.amount * o.qty) FROM {U} u JOIN {O} o ON o.user_id = u.user_id GROUP BY u.country', false),
    );
    expect(explained).toMatch(/GROUP BY merge/);
    expect(explained).toMatch(/co-located on u\.user_id = o\.user_id/);
    expect(explained).toMatch(/bucket_of\(u\.user_id::text/);
    expect(explained).toMatch(/bucket_of\(o\.user_id::text/);
  });

  it('a co-located join inside a coordinator step runs whole on each shard, guarded per table, and pulls fewer rows than its tables', async () => {
    const template =
      'SELECT u.country, count(DISTINCT o.qty) AS kinds, count(*) AS n FROM {U} u JOIN {O} o ON o.user_id = u.user_id ' +
      'WHERE o.amount > $1 GROUP BY u.country ORDER BY u.country NULLS FIRST';
    const explained = router.explain(sqlFor(template, false));
    expect(explained).toMatch(/Coordinator step/);
    expect(explained).toMatch(/Pushed-down join of \S+_users, \S+_orders/);
    expect(explained).toMatch(
      /Shard query: SELECT u\.country AS country, o\.qty AS qty FROM \S+ (AS )?u JOIN \S+ (AS )?o ON o\.user_id = u\.user_id WHERE o\.amount > \$1/,
    );
    expect(explained).toMatch(/Moves guard .*bucket_of\(u\.user_id::text/);
    expect(explained).toMatch(/Moves guard .*bucket_of\(o\.user_id::text/);
    expect(explained).not.toMatch(/Pulled up: \S+_users/);
    await expectSame(template, ['10']);
    const streamed: QueryResultRow[] = [];
    for await (const row of router.broadcastStream(sqlFor(template, false), ['10'])) streamed.push(row);
    expect(streamed).toEqual((await client.query(sqlFor(template, true), ['10'])).rows);
    // Under a limit below either table's row count, only the pushed join fits (it sends its distinct groups).
    const limit = 200;
    const { rows: counts } = await client.query<{ users: string }>(`SELECT count(*) AS users FROM ${sqlFor('{U}', true)}`);
    expect(Number(counts[0]!.users)).toBeGreaterThan(limit);
    const limited = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      broadcast: { maxIntermediateRows: limit },
    });
    try {
      const pushed = await limited.broadcast(sqlFor(template, false), ['10']);
      expect(pushed.rows).toEqual((await client.query(sqlFor(template, true), ['10'])).rows);
      const pulled = 'SELECT u.country, count(DISTINCT o.qty) AS kinds FROM {U} u JOIN {O} o ON o.id = u.user_id GROUP BY u.country';
      expect(limited.explain(sqlFor(pulled, false))).toMatch(/Pulled up: \S+_users/);
      await expect(limited.broadcast(sqlFor(pulled, false))).rejects.toMatchObject({ code: 'RESULT_TOO_LARGE' });
    } finally {
      await limited.close();
    }
  });

  it('a pushed join in a coordinator step on keys that hash equal values apart pulls each table instead, exactly', async () => {
    const template = 'SELECT a.id, count(DISTINCT b.wk) AS matches FROM {N} a JOIN {N} b ON a.wk = b.wk GROUP BY a.id ORDER BY a.id';
    expect(router.explain(sqlFor(template, false))).toMatch(/Pushed-down join/);
    await expectSame(template);
  });

  it('a join of reference tables only reads one shard', () => {
    expect(router.explain(sqlFor('SELECT a.code, b.region FROM {C} a LEFT JOIN {C} b ON a.code = b.code', false))).toMatch(/Single shard/);
  });

  it("keys under a nondeterministic collation ('a' = 'A', hashed apart) fall back to the coordinator step, exactly", async () => {
    const counted = 'SELECT count(*) AS n, sum(a.id) AS ids FROM {N} a JOIN {N} b ON a.wk = b.wk';
    expect(router.explain(sqlFor(counted, false))).toMatch(/Join pushed down/);
    await expectSame(counted);
    // Checked once: the cached plan is now the coordinator step.
    expect(router.explain(sqlFor(counted, false))).toMatch(/Coordinator step/);
    const streamedSql = 'SELECT a.id, b.id AS other FROM {N} a JOIN {N} b ON b.wk = a.wk ORDER BY a.id, b.id';
    const streamed: QueryResultRow[] = [];
    for await (const row of router.broadcastStream(sqlFor(streamedSql, false))) streamed.push(row);
    const expected = (await client.query(sqlFor(streamedSql, true))).rows;
    expect(streamed).toEqual(expected);
    // 'a' and 'A' (on different shards) met: more pairs than rows with the same spelling would give.
    expect(expected.length).toBeGreaterThan(40 + 2 * 6 * 6);
  });
});
