import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { shardUrls, TEST_SHARDS, uniqueName, withServer } from '../support/cluster.js';

/**
 * Text order under a collation JS cannot reproduce (ICU, as a docker postgres' en_US would be):
 * the router asks a server to rank the values, so broadcast must equal one server exactly.
 * The shards here are databases whose DEFAULT collation is ICU, plus one reference database
 * holding every row.
 */
const database = uniqueName('icu');
const urlOf = (url: string) => {
  const scratch = new URL(url);
  scratch.pathname = `/${database}`;
  return scratch.toString();
};
// Strings whose ICU order differs from code point order: case, accents, punctuation, digits.
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
  'zulu',
  'éclair',
  'eclair',
  'Eclair',
  '10',
  '9',
  'a b',
  'ab',
  '',
  'ß',
  'ss',
  '😀',
  'ｚ',
];
const rows = Array.from({ length: 120 }, (_, i) => ({
  id: i + 1,
  g: `g${i % 4}`,
  v: i % 17 === 0 ? null : WORDS[(i * 7) % WORDS.length]!,
}));

let router: ShardRouter;
let reference: (sql: string) => Promise<unknown[]>;

beforeAll(async () => {
  const servers = shardUrls().slice(0, TEST_SHARDS);
  for (const url of servers) {
    await withServer(url, (client) =>
      client.query(`CREATE DATABASE ${database} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C.UTF-8'`),
    );
  }
  router = await ShardRouter.connect({ shards: servers.map((url, i) => ({ id: `s${i}`, connectionString: urlOf(url) })) });
  await router.broadcast('CREATE TABLE words (id int PRIMARY KEY, g text, v text)');
  for (const row of rows) await router.execute(row.id, 'INSERT INTO words VALUES ($1, $2, $3)', [row.id, row.g, row.v]);
  // The reference: every row in one table of server 0's database, under the same default collation.
  await withServer(urlOf(servers[0]!), async (client) => {
    await client.query('CREATE TABLE all_words (id int PRIMARY KEY, g text, v text)');
    await client.query('INSERT INTO all_words SELECT * FROM unnest($1::int[], $2::text[], $3::text[])', [
      rows.map((r) => r.id),
      rows.map((r) => r.g),
      rows.map((r) => r.v),
    ]);
  });
  reference = (sql) =>
    withServer(urlOf(servers[0]!), async (client) => (await client.query(sql.replaceAll('FROM words', 'FROM all_words'))).rows);
});

afterAll(async () => {
  await router?.close();
  for (const url of shardUrls().slice(0, TEST_SHARDS))
    await withServer(url, (client) => client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`));
});

describe('broadcast under an ICU default collation', () => {
  it.each([
    'SELECT id, v FROM words ORDER BY v, id',
    'SELECT id, v FROM words ORDER BY v DESC NULLS LAST, id LIMIT 25 OFFSET 3',
    'SELECT min(v) AS lo, max(v) AS hi FROM words',
    'SELECT g, min(v) AS lo, max(v) AS hi, count(*) FROM words GROUP BY g ORDER BY g',
    'SELECT g, max(v) AS hi FROM words GROUP BY g ORDER BY max(v), g',
    'SELECT DISTINCT v FROM words ORDER BY v NULLS FIRST',
    'SELECT min(v COLLATE "C") AS lo, max(v COLLATE "C") AS hi FROM words',
    'SELECT id, v FROM words ORDER BY v COLLATE "C", id',
  ])('%s equals one server', async (sql) => {
    const { rows: merged } = await router.broadcast(sql);
    expect(merged).toEqual(await reference(sql));
  });

  it('the data really orders differently from code points (the test would catch a JS sort)', async () => {
    const ordered = (await reference('SELECT DISTINCT v FROM words WHERE v IS NOT NULL ORDER BY v')) as { v: string }[];
    const values = ordered.map((row) => row.v);
    expect(values).not.toEqual([...values].sort());
  });

  it('a stream cannot order such text in JS, and says so', async () => {
    const consume = async () => {
      for await (const row of router.broadcastStream('SELECT id, v FROM words ORDER BY v')) void row;
    };
    await expect(consume()).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    expect((await router.broadcast('SELECT count(*) FROM words')).rows).toEqual([{ count: '120' }]);
  });
});
