import { q } from '../sql.js';

/**
 * The router's key hash in SQL. Rebalancing has to find a bucket's rows inside PostgreSQL (a
 * scan, an expression index, a per-row trigger while a bucket moves), so the database must put
 * every key in the same bucket as `hashKey` / `bucketOf` in src/router/hash.ts, bit for bit:
 * MurmurHash3 x86 32-bit, seed 0, over the UTF-8 bytes of the key's text. Integer columns are
 * hashed through their text (`bucket_of(id::text, n)`), as the router hashes `String(key)`.
 *
 * PostgreSQL's int4 arithmetic raises on overflow, so the 32-bit state lives in a bigint in
 * [0, 2^32) and every step is masked with `& 4294967295`. The multiplications need no 16-bit
 * split: the constants are written as signed int32 (c - 2^32 when c >= 2^31), and
 * |x| < 2^32 times |c| < 2^31 fits in a bigint with the same low 32 bits as the uint32 product.
 * A rotation uses its operand once, so a block is one PL/pgSQL statement:
 * rotl32(t, r) = ((t << r) - 1) % 4294967295 + 1 for t in [0, 2^32), because 2^32 = 1 modulo
 * 2^32 - 1, and `%` keeps the dividend's sign: t = 0 gives -1 % m + 1 = 0, t = 2^32 - 1 gives
 * (m - 1) + 1 = m.
 *
 * Speed, in µs per call (PostgreSQL 18.4, embedded, on a busy shared 2-core machine):
 * `SELECT sum(bucket_of(k, 1024))` over a 100,000-row temp table minus the same scan with
 * `sum(length(k))`, best of 25 interleaved rounds, 10-character ASCII keys / 36-character uuid
 * text. (`count(*)` over a subquery would measure nothing: the planner drops the unused call.)
 *   1.6 / 3.2  chosen: one PL/pgSQL statement per 4-byte block (four get_byte), rotations as above
 *   1.6 / 3.1  the same with two blocks per statement (no gain worth the extra code)
 *   1.9 / 4.2  three statements per block (k, h # k, rotation of h), shift-or rotations
 *   2.7 / 5.3  the same with a WHILE loop and a statement per finalisation step
 *   3.2 / 7.4  the previous version: a statement per step, 16-bit split multiplications
 *   4.3 / 11.3 blocks read as ('x' || substr(reversed hex, ...))::bit(32)::bigint, nibbles swapped
 *   1.8 / 3.0  the chosen one reading blocks with PostgreSQL 18's substring(reverse(bytes), p, 4)
 *              ::integer instead of four get_byte (same run: chosen 1.8 / 3.2): too little to
 *              give up PostgreSQL 17 and older, which lack both
 *   2.9 / 4.8  that reading in the three-statements-per-block version (2.7 / 4.3 with 8 bytes
 *              at a time through bytea::bigint)
 *   ~100 / 110 an SQL-language function with a recursive CTE over the blocks
 *   +0.3 to +0.5 bucket_of as a PL/pgSQL wrapper instead of the inlined SQL function
 * For scale: calling an empty PL/pgSQL function costs 0.1-0.3 and convert_to 0.2.
 */

/**
 * Statements that install `"<schema>".murmur3(key text) RETURNS integer` (the hash as a signed
 * int4: `hashKey(key) | 0`) and `"<schema>".bucket_of(key text, bucket_count integer) RETURNS
 * integer` (`bucketOf(key, bucket_count)`), in this order, one statement each. Both are
 * IMMUTABLE, STRICT (NULL in, NULL out) and PARALLEL SAFE, so they can back expression indexes
 * and run in per-row triggers. `CREATE OR REPLACE`, so running them again is harmless. The
 * database must be UTF8. `schema` must already be validated; it is only double-quoted here.
 *
 * bucket_of is a one-expression SQL function, which the planner inlines into the calling query:
 * each row costs one PL/pgSQL call. Its body names murmur3 with its schema, so it does not depend
 * on search_path (pg_dump and maintenance commands run with a restricted one).
 */
export function hashFunctionDdl(schema: string): string[] {
  const s = q(schema);
  const m = '4294967295';
  /** rotl32 of t in [0, 2^32), naming t once (see the module comment). */
  const rotl = (t: string, r: number) => `((((${t}) << ${r}) - 1) % ${m} + 1)`;
  /** uint32 x times a uint32 constant, mod 2^32: the constant as a signed int32 keeps the product in a bigint. */
  const mul = (x: string, c: number) => `((${x}) * ${c | 0} & ${m})`;
  /** MurmurHash3's k := rotl32(k * c1, 15) * c2 of a block (or the tail) k. */
  const scramble = (k: string) => mul(rotl(mul(k, 0xcc9e2d51), 15), 0x1b873593);
  const block = 'get_byte(b, i) | (get_byte(b, i + 1) << 8) | (get_byte(b, i + 2) << 16) | (get_byte(b, i + 3)::bigint << 24)';
  const tail = `(CASE len & 3
             WHEN 0 THEN 0
             WHEN 1 THEN get_byte(b, len - 1)
             WHEN 2 THEN get_byte(b, len - 2) | (get_byte(b, len - 1) << 8)
             ELSE get_byte(b, len - 3) | (get_byte(b, len - 2) << 8) | (get_byte(b, len - 1) << 16)
           END)::bigint`;
  return [
    `CREATE OR REPLACE FUNCTION ${s}.murmur3(key text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $murmur3$
-- MurmurHash3 x86 32-bit, seed 0, of the UTF-8 bytes of key, as a signed int4. The state is a
-- bigint in [0, 2^32); constants are written as signed int32 so products fit in a bigint;
-- rotl32(t, r) is ((t << r) - 1) % 4294967295 + 1. See src/rebalance/sql-hash.ts.
DECLARE
  b bytea := convert_to(key, 'UTF8');
  len integer := octet_length(b);
  h bigint := 0;
BEGIN
  -- Each 4-byte block, little-endian: h := rotl32(h # scramble(block), 13) * 5 + 0xe6546b64.
  FOR i IN 0 .. len - 4 BY 4 LOOP
    h := (${rotl(`h # ${scramble(block)}`, 13)} * 5 + 3864292196) & ${m};
  END LOOP;
  -- The last len % 4 bytes (none: scramble(0) = 0 leaves h alone), then the length.
  h := h # ${scramble(tail)} # len;
  -- fmix32.
  h := ${mul('h # (h >> 16)', 0x85ebca6b)};
  h := ${mul('h # (h >> 13)', 0xc2b2ae35)};
  RETURN (((h # (h >> 16)) # 2147483648) - 2147483648)::integer;
END
$murmur3$`,
    `CREATE OR REPLACE FUNCTION ${s}.bucket_of(key text, bucket_count integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $bucket_of$
SELECT ((${s}.murmur3(key) & ${m}) % bucket_count)::integer
$bucket_of$`,
  ];
}
