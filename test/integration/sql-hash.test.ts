import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf, hashKey } from '../../src/index.js';
import { hashFunctionDdl } from '../../src/placement/hash-sql.js';
import { dropSchemas, shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { seededRandom } from '../support/random.js';

/**
 * The SQL MurmurHash3 finds a bucket's rows on the shards during rebalancing, so it must agree
 * with the router's hashKey/bucketOf bit for bit, on every kind of key. Keys are generated from
 * a seed (SQL_HASH_SEED=<seed> replays another one); a failure names the seed and the keys.
 */
const SEED = Number(process.env.SQL_HASH_SEED ?? 20261121);
const BUCKET_COUNTS = [1, 7, 1000, 1024, 65536];
const schema = uniqueName('hash');

function session<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  return withServer(shardUrls()[0]!, work);
}

beforeAll(async () => {
  await session(async (client) => {
    await client.query(`CREATE SCHEMA "${schema}"`);
    // Twice: the statements must be idempotent.
    for (let round = 0; round < 2; round++) for (const statement of hashFunctionDdl(schema)) await client.query(statement);
  });
});

afterAll(() => dropSchemas(schema));

function generatedKeys(seed: number): string[] {
  const random = seededRandom(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  const string = (length: number, char: () => string) => Array.from({ length }, char).join('');
  // Every ASCII character a text value can hold (not NUL).
  const ascii = () => String.fromCharCode(int(1, 127));
  const twoByte = () => String.fromCodePoint(int(0x80, 0x7ff)); // é ß Ж ı ...
  const threeByte = () => String.fromCodePoint(pick([int(0x800, 0xd7ff), int(0xe000, 0xfffd)])); // 中 € ﬀ ...
  const fourByte = () => String.fromCodePoint(pick([int(0x1f300, 0x1faff), int(0x10000, 0x10ffff)])); // emoji, 𝄞 ...
  const named = ['é', 'ß', 'Ж', '中', '€', '😀', '𝄞', '🇳🇴', '👩‍👩‍👧', 'ﬀ', 'e\u0301'];
  const mixed = () => pick([ascii, ascii, twoByte, threeByte, fourByte, () => pick(named)])();
  const keys: string[] = [];
  // Lengths 1-40 cover every length (in bytes, too) modulo 4, so every tail size.
  for (let length = 1; length <= 40; length++) {
    for (let n = 0; n < 30; n++) keys.push(string(length, ascii));
    for (let n = 0; n < 5; n++) keys.push(string(length, twoByte), string(length, threeByte), string(length, fourByte));
    for (let n = 0; n < 20; n++) keys.push(string(length, mixed));
  }
  const randomBigInt = (bits: number) =>
    Array.from({ length: bits / 16 }, () => BigInt(int(0, 0xffff))).reduce((a, b) => (a << 16n) | b, 0n);
  for (let n = 0; n < 300; n++) keys.push(String(int(-1e6, 1e6)), String(Math.round((random() - 0.5) * 2 * Number.MAX_SAFE_INTEGER)));
  for (let n = 0; n < 100; n++) keys.push((random() < 0.5 ? '-' : '') + randomBigInt(pick([64, 80, 128])).toString());
  keys.push(
    '0',
    '-1',
    '42',
    String(Number.MAX_SAFE_INTEGER),
    String(Number.MIN_SAFE_INTEGER),
    (2n ** 63n).toString(),
    (2n ** 64n + 12345n).toString(),
    '-' + (2n ** 70n).toString(),
  );
  const hex = (length: number) => string(length, () => int(0, 15).toString(16));
  for (let n = 0; n < 300; n++) keys.push(`${hex(8)}-${hex(4)}-4${hex(3)}-${pick(['8', '9', 'a', 'b'])}${hex(3)}-${hex(12)}`);
  return keys;
}

// MurmurHash3's steps in JS, to build keys that drive the SQL rotation's edge cases.
const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;
const rotr = (x: number, r: number) => ((x >>> r) | (x << (32 - r))) >>> 0;
/** The inverse of an odd number modulo 2^32 (Newton's iteration). */
function inverse(c: number): number {
  let x = c;
  for (let i = 0; i < 5; i++) x = Math.imul(x, (2 - Math.imul(c, x)) | 0);
  return x >>> 0;
}
const scramble = (block: number) => Math.imul(rotl(Math.imul(block, C1) >>> 0, 15), C2) >>> 0;
const unscramble = (k: number) => Math.imul(rotr(Math.imul(k, inverse(C2)) >>> 0, 15), inverse(C1)) >>> 0;
const mixBlock = (h: number, block: number) => (Math.imul(rotl((h ^ scramble(block)) >>> 0, 13), 5) + 0xe6546b64) >>> 0;
const blockOf = (text: string) =>
  (text.charCodeAt(0) | (text.charCodeAt(1) << 8) | (text.charCodeAt(2) << 16) | (text.charCodeAt(3) << 24)) >>> 0;
const textOf = (block: number) => String.fromCharCode(block & 0xff, (block >>> 8) & 0xff, (block >>> 16) & 0xff, block >>> 24);

/**
 * ASCII keys whose second block makes `h # k` (the operand the SQL rotates by 13) equal to 0
 * or to 2^32 - 1, the two values where rotl32(t) = ((t << r) - 1) % (2^32 - 1) + 1 needs its
 * sign trick. (The other rotation's operand, block * c1, can be 2^32 - 1 only for the bytes
 * 4f c4 1e 21, which are not UTF-8.)
 */
function rotationEdgeKeys(seed: number): { key: string; operand: number }[] {
  const random = seededRandom(seed);
  const found: { key: string; operand: number }[] = [];
  for (const operand of [0, 0xffffffff]) {
    let count = 0;
    for (let attempt = 0; attempt < 100_000 && count < 3; attempt++) {
      const first = Array.from({ length: 4 }, () => String.fromCharCode(32 + Math.floor(random() * 95))).join('');
      const h = mixBlock(0, blockOf(first));
      const second = unscramble((h ^ operand) >>> 0);
      const bytes = [second & 0xff, (second >>> 8) & 0xff, (second >>> 16) & 0xff, second >>> 24];
      if (bytes.every((byte) => byte >= 1 && byte <= 0x7f)) {
        expect((h ^ scramble(blockOf(textOf(second)))) >>> 0 === operand).toBe(true);
        found.push({ key: first + textOf(second), operand }, { key: first + textOf(second) + 'tail', operand });
        count++;
      }
    }
  }
  return found;
}

interface HashRow {
  i: string;
  h: number;
  b: number[];
}

/** murmur3 and bucket_of (every bucket count) of each key, in one round trip. */
async function sqlHashes(keys: readonly string[]): Promise<HashRow[]> {
  const { rows } = await session((client) =>
    client.query<HashRow>(
      `SELECT t.i::text AS i, "${schema}".murmur3(t.k) AS h,
              ARRAY(SELECT "${schema}".bucket_of(t.k, n) FROM unnest($2::int[]) WITH ORDINALITY AS c(n, j) ORDER BY j) AS b
         FROM unnest($1::text[]) WITH ORDINALITY AS t(k, i)
        ORDER BY t.i`,
      [keys, BUCKET_COUNTS],
    ),
  );
  return rows;
}

/** A line per key where SQL and JS disagree, naming the key. */
function disagreements(keys: readonly string[], rows: readonly HashRow[]): string[] {
  expect(rows).toHaveLength(keys.length);
  return rows.flatMap((row) => {
    const key = keys[Number(row.i) - 1]!;
    const expected = { h: hashKey(key) | 0, b: BUCKET_COUNTS.map((count) => bucketOf(key, count)) };
    if (row.h === expected.h && JSON.stringify(row.b) === JSON.stringify(expected.b)) return [];
    return [
      `key ${JSON.stringify(key)}: SQL murmur3 ${row.h}, buckets ${JSON.stringify(row.b)}; JS ${expected.h}, ${JSON.stringify(expected.b)} (counts ${BUCKET_COUNTS.join(', ')})`,
    ];
  });
}

describe('SQL murmur3 / bucket_of', () => {
  it('equal hashKey | 0 and bucketOf bit for bit on generated keys (ASCII, multi-byte UTF-8, integers, bigints, uuids)', async () => {
    const keys = generatedKeys(SEED);
    expect(keys.length).toBeGreaterThan(3000);
    expect(disagreements(keys, await sqlHashes(keys)), `seed ${SEED}`).toEqual([]);
  });

  it('equal hashKey at the rotation edge cases (rotated operand 0 and 2^32 - 1)', async () => {
    const edges = rotationEdgeKeys(SEED);
    expect(edges.filter((edge) => edge.operand === 0).length).toBeGreaterThan(0);
    expect(edges.filter((edge) => edge.operand === 0xffffffff).length).toBeGreaterThan(0);
    const keys = edges.map((edge) => edge.key);
    expect(disagreements(keys, await sqlHashes(keys)), `seed ${SEED}`).toEqual([]);
  });

  it('hashes integer columns through ::text like the router hashes numbers', async () => {
    const { rows } = await session((client) =>
      client.query<{ b: number; h: number; big: number }>(
        `SELECT "${schema}".bucket_of(42::bigint::text, 1024) AS b, "${schema}".murmur3((-7)::integer::text) AS h,
                "${schema}".bucket_of(${Number.MAX_SAFE_INTEGER}::bigint::text, 65536) AS big`,
      ),
    );
    expect(rows[0]).toEqual({ b: bucketOf(42, 1024), h: hashKey(-7) | 0, big: bucketOf(BigInt(Number.MAX_SAFE_INTEGER), 65536) });
  });

  it('gives NULL for NULL and is IMMUTABLE, STRICT and PARALLEL SAFE', async () => {
    await session(async (client) => {
      const { rows } = await client.query(
        `SELECT "${schema}".murmur3(NULL) AS h, "${schema}".bucket_of(NULL, 1024) AS b, "${schema}".bucket_of('k', NULL) AS n`,
      );
      expect(rows[0]).toEqual({ h: null, b: null, n: null });
      const functions = await client.query(
        `SELECT proname, provolatile, proisstrict, proparallel, pg_get_function_identity_arguments(oid) AS args, prorettype::regtype::text AS returns
           FROM pg_proc WHERE pronamespace = $1::regnamespace ORDER BY proname`,
        [schema],
      );
      expect(functions.rows).toEqual([
        {
          proname: 'bucket_of',
          provolatile: 'i',
          proisstrict: true,
          proparallel: 's',
          args: 'key text, bucket_count integer',
          returns: 'integer',
        },
        { proname: 'murmur3', provolatile: 'i', proisstrict: true, proparallel: 's', args: 'key text', returns: 'integer' },
      ]);
    });
  });
});
