/**
 * The router's key hash (MurmurHash3 x86 32-bit, seed 0, over the key's UTF-8 bytes) as SQL
 * functions, so rows of a bucket can be found on the shards during rebalancing. Must agree
 * with hashKey/bucketOf bit for bit (test/integration/sql-hash.test.ts).
 */
export function hashFunctionDdl(schema: string): string[] {
  const s = `"${schema}"`;
  // 32-bit multiply in bigint without overflow: a * b = a * lo16(b) + (a * hi16(b) mod 2^16) << 16 (mod 2^32).
  const mul = (a: string, b: number) => `((${a} * ${b & 0xffff} + (((${a} * ${b >>> 16}) & 65535) << 16)) & 4294967295)`;
  const rotl = (x: string, r: number) => `(((${x} << ${r}) | (${x} >> ${32 - r})) & 4294967295)`;
  return [
    `CREATE OR REPLACE FUNCTION ${s}.murmur3(key text) RETURNS integer LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $murmur$
DECLARE
  data bytea := convert_to(key, 'UTF8');
  len integer := octet_length(data);
  h bigint := 0;
  k bigint;
  i integer := 0;
  block_end integer := (octet_length(data) / 4) * 4;
BEGIN
  WHILE i < block_end LOOP
    k := get_byte(data, i) | (get_byte(data, i + 1) << 8) | (get_byte(data, i + 2) << 16) | (get_byte(data, i + 3)::bigint << 24);
    k := ${mul('k', 0xcc9e2d51)};
    k := ${rotl('k', 15)};
    k := ${mul('k', 0x1b873593)};
    h := h # k;
    h := ${rotl('h', 13)};
    h := (h * 5 + 3864292196) & 4294967295;
    i := i + 4;
  END LOOP;
  IF len > block_end THEN
    k := get_byte(data, i);
    IF len - block_end > 1 THEN k := k | (get_byte(data, i + 1) << 8); END IF;
    IF len - block_end > 2 THEN k := k | (get_byte(data, i + 2) << 16); END IF;
    k := ${mul('k', 0xcc9e2d51)};
    k := ${rotl('k', 15)};
    k := ${mul('k', 0x1b873593)};
    h := h # k;
  END IF;
  h := h # len;
  h := h # (h >> 16);
  h := ${mul('h', 0x85ebca6b)};
  h := h # (h >> 13);
  h := ${mul('h', 0xc2b2ae35)};
  h := h # (h >> 16);
  IF h >= 2147483648 THEN RETURN (h - 4294967296)::integer; END IF;
  RETURN h::integer;
END $murmur$`,
    `CREATE OR REPLACE FUNCTION ${s}.bucket_of(key text, bucket_count integer) RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
     $bucket$ SELECT ((${s}.murmur3(key)::bigint & 4294967295) % bucket_count)::integer $bucket$`,
  ];
}
