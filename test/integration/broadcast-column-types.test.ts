import type { QueryResultRow } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, uniqueName } from '../support/cluster.js';

/**
 * Differential test of two merges that depend on a column's declared type rather than the
 * query: a text column with its own COLLATE (ORDER BY, min and max follow it, not the database
 * default) and avg(float4) (one server sums float4 in float8). The reference is one table on
 * shard s0 holding every row; the queries run there with the table name swapped.
 */

const T = uniqueName('bct');
const ALL = `${T}_all`;
// Strings whose ICU order differs from code point order.
const WORDS = [
  'apple',
  'Apple',
  'APPLE',
  'äpple',
  'banana',
  'Banana',
  '_under',
  '-dash',
  'zebra',
  'Zürich',
  'éclair',
  'eclair',
  '10',
  '9',
  'ß',
  'ss',
];
// float4 values whose float8 sums are exact in any order but whose float4 sums lose bits (2^24 + 1).
const FLOATS = [16777216, 1, 1, 0.5, 0.25, -3.75, 1234.5, 0.125, -7.25, 3];

let router: ShardRouter;
let catalog: string;
const rows = Array.from({ length: 160 }, (_, i) => ({
  id: i + 1,
  g: `g${i % 5}`,
  icu: i % 13 === 0 ? null : WORDS[(i * 7) % WORDS.length]!,
  c: WORDS[(i * 5) % WORDS.length]!,
  f4: i % 11 === 0 ? null : FLOATS[(i * 3) % FLOATS.length]!,
}));

const CREATE = (table: string) =>
  `CREATE TABLE ${table} (id int PRIMARY KEY, g text, icu text COLLATE "und-x-icu", c varchar(20) COLLATE "C", f4 float4)`;

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog });
  await router.broadcast(CREATE(T));
  for (const row of rows) {
    await router.execute(row.id, `INSERT INTO ${T} VALUES ($1, $2, $3, $4, $5)`, [row.id, row.g, row.icu, row.c, row.f4]);
  }
  await router.executeOn('s0', CREATE(ALL));
  await router.executeOn('s0', `INSERT INTO ${ALL} SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::float4[])`, [
    rows.map((r) => r.id),
    rows.map((r) => r.g),
    rows.map((r) => r.icu),
    rows.map((r) => r.c),
    rows.map((r) => r.f4),
  ]);
});

afterAll(async () => {
  if (router) {
    await router.broadcast(`DROP TABLE IF EXISTS ${T}`).catch(() => undefined);
    await router.executeOn('s0', `DROP TABLE IF EXISTS ${ALL}`).catch(() => undefined);
    await router.close();
  }
  if (catalog) await dropSchemas(catalog);
});

async function expectSameAsOneServer(sql: string): Promise<void> {
  const merged = await router.broadcast(sql);
  const one = await router.executeOn<QueryResultRow>('s0', sql.replaceAll(T, ALL));
  expect(merged.fields.map((field) => [field.name, field.dataTypeID])).toEqual(one.fields.map((field) => [field.name, field.dataTypeID]));
  expect(merged.rows).toEqual(one.rows);
}

describe('a text column with its own COLLATE is merged under that collation', () => {
  it.each([
    `SELECT id, icu FROM ${T} ORDER BY icu, id`,
    `SELECT id, icu FROM ${T} ORDER BY icu DESC NULLS LAST, id LIMIT 20 OFFSET 3`,
    `SELECT id, upper(icu) AS u FROM ${T} ORDER BY upper(icu), id`,
    `SELECT min(icu) AS lo, max(icu) AS hi FROM ${T}`,
    `SELECT g, min(icu) AS lo, max(icu) AS hi, count(*) AS n FROM ${T} GROUP BY g ORDER BY g`,
    `SELECT g FROM ${T} GROUP BY g ORDER BY max(icu), g`,
    `SELECT icu, count(*) AS n FROM ${T} GROUP BY icu ORDER BY icu NULLS FIRST`,
    `SELECT DISTINCT icu FROM ${T} ORDER BY icu`,
    `SELECT min(icu COLLATE "C") AS lo, max(icu COLLATE "C") AS hi FROM ${T}`,
    `SELECT id, c FROM ${T} ORDER BY c, id`,
    `SELECT g, min(c) AS lo, max(c) AS hi FROM ${T} GROUP BY g ORDER BY g`,
    `SELECT id, c FROM ${T} ORDER BY c COLLATE "und-x-icu", id`,
  ])('%s equals one server', (sql) => expectSameAsOneServer(sql));

  it('the data really orders differently under the two collations (a database-default merge would be caught)', async () => {
    const icu = await router.executeOn<{ v: string }>('s0', `SELECT DISTINCT icu AS v FROM ${ALL} WHERE icu IS NOT NULL ORDER BY 1`);
    const codePoint = await router.executeOn<{ v: string }>(
      's0',
      `SELECT DISTINCT icu COLLATE "C" AS v FROM ${ALL} WHERE icu IS NOT NULL ORDER BY 1`,
    );
    expect(icu.rows.map((row) => row.v)).not.toEqual(codePoint.rows.map((row) => row.v));
  });

  it('a stream orders the column by its collation too (or says it cannot)', async () => {
    const streamed: unknown[] = [];
    const consume = async () => {
      for await (const row of router.broadcastStream(`SELECT id, c FROM ${T} ORDER BY c, id`)) streamed.push(row);
    };
    await consume();
    expect(streamed).toEqual((await router.executeOn('s0', `SELECT id, c FROM ${ALL} ORDER BY c, id`)).rows);
  });
});

describe('avg(float4) sums in float8 on the shards, like one server', () => {
  it.each([
    `SELECT avg(f4) AS a FROM ${T}`,
    `SELECT g, avg(f4) AS a, count(f4) AS n FROM ${T} GROUP BY g ORDER BY g`,
    `SELECT g FROM ${T} GROUP BY g ORDER BY avg(f4), g`,
    `SELECT g, avg(f4) AS a, avg(id) AS ai FROM ${T} GROUP BY g HAVING avg(f4) > 0 ORDER BY g`,
  ])('%s equals one server', (sql) => expectSameAsOneServer(sql));

  it('the float4 sum really differs from the float8 one (a float4 partial sum would be caught)', async () => {
    const { rows: sums } = await router.executeOn<{ narrow: number; wide: number }>(
      's0',
      `SELECT sum(f4)::float8 AS narrow, sum(f4::float8) AS wide FROM ${ALL}`,
    );
    expect(sums[0]!.narrow).not.toBe(sums[0]!.wide);
  });
});
