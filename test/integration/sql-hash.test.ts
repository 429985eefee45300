import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf, hashKey } from '../../src/index.js';
import { hashFunctionDdl } from '../../src/rebalance/sql-hash.js';
import { dropSchemas, shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { seededRandom } from '../support/random.js';

/**
 * The SQL MurmurHash3 finds a bucket's rows on the shards during rebalancing, so it must agree
 * with the router's hashKey/bucketOf bit for bit, on every kind of key.
 */
const schema = uniqueName('hash');

beforeAll(async () => {
  await withServer(shardUrls()[0]!, async (client) => {
    await client.query(`CREATE SCHEMA ${schema}`);
    for (const statement of hashFunctionDdl(schema)) await client.query(statement);
  });
});

afterAll(() => dropSchemas(schema));

function generatedKeys(): string[] {
  const random = seededRandom(20261121);
  const pick = (alphabet: readonly string[]) => alphabet[Math.floor(random() * alphabet.length)]!;
  const ascii = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
  const wide = ['é', 'ß', 'Ж', 'ı', '中', '文', '€', '😀', '𝄞', '🇳🇴', 'ﬀ', '\u0301'];
  const keys: string[] = [];
  for (let length = 1; length <= 40; length++) {
    for (let n = 0; n < 40; n++) keys.push(Array.from({ length }, () => pick(ascii)).join(''));
    for (let n = 0; n < 20; n++) keys.push(Array.from({ length }, () => (random() < 0.5 ? pick(wide) : pick(ascii))).join(''));
  }
  for (let n = 0; n < 500; n++) keys.push(String(Math.floor((random() - 0.5) * 2 * Number.MAX_SAFE_INTEGER)));
  keys.push('0', '-1', String(Number.MAX_SAFE_INTEGER), String(Number.MIN_SAFE_INTEGER), (2n ** 64n + 12345n).toString(), '-' + (2n ** 70n).toString());
  for (let n = 0; n < 200; n++) keys.push(crypto.randomUUID());
  return keys;
}

describe('SQL murmur3 / bucket_of', () => {
  it('equal hashKey and bucketOf bit for bit on generated keys (ASCII, multi-byte UTF-8, integers, uuids)', async () => {
    const keys = generatedKeys();
    const counts = [1, 7, 1000, 1024, 65536];
    const { rows } = await withServer(shardUrls()[0]!, (client) =>
      client.query<{ i: string; h: number; b: number[] }>(
        `SELECT i::text, ${schema}.murmur3(k) AS h, ARRAY(SELECT ${schema}.bucket_of(k, n) FROM unnest($2::int[]) n) AS b
           FROM unnest($1::text[]) WITH ORDINALITY AS t(k, i) ORDER BY i`,
        [keys, counts],
      ),
    );
    expect(rows).toHaveLength(keys.length);
    const wrong = rows.flatMap((row) => {
      const key = keys[Number(row.i) - 1]!;
      const expected = counts.map((count) => bucketOf(key, count));
      return row.h === (hashKey(key) | 0) && JSON.stringify(row.b) === JSON.stringify(expected) ? [] : [{ key, sql: row.h, js: hashKey(key) | 0 }];
    });
    expect(wrong).toEqual([]);
  });

  it('hashes integer columns through ::text like the router hashes numbers, gives NULL for NULL, and is immutable', async () => {
    await withServer(shardUrls()[0]!, async (client) => {
      const { rows } = await client.query<{ b: number; n: number | null }>(
        `SELECT ${schema}.bucket_of(42::bigint::text, 1024) AS b, ${schema}.bucket_of(NULL, 1024) AS n`,
      );
      expect(rows[0]).toEqual({ b: bucketOf(42, 1024), n: null });
      const volatility = await client.query<{ proname: string; provolatile: string }>(
        `SELECT proname, provolatile FROM pg_proc WHERE pronamespace = $1::regnamespace ORDER BY proname`,
        [schema],
      );
      expect(volatility.rows).toEqual([
        { proname: 'bucket_of', provolatile: 'i' },
        { proname: 'murmur3', provolatile: 'i' },
      ]);
    });
  });
});
