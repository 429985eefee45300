import pg from 'pg';
import type { QueryResult, QueryResultRow } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster } from '../../src/local.js';
import type { ShardRouter } from '../../src/index.js';
import type { LocalCluster } from '../../src/local.js';
import { connectFreshRouter, dropSchemas, uniqueName } from '../support/cluster.js';
import { seededRandom } from '../support/random.js';

/**
 * Differential test of router.broadcast: the same deterministic rows live spread over 4 shards
 * (one of them holding none) and, unchanged, on one separate reference server. Every query of
 * the corpus must give, through broadcast, exactly what the reference server gives a pg.Client:
 * same rows (same parsed values), same field names and type ids.
 */

const T = uniqueName('bx');
/** A second sharded table (by its own id, so not co-located with T): orders of T's rows. */
const O = `${T}_o`;
/** A registered reference table: a full copy on every shard. */
const R = `${T}_r`;
/** The shard that must hold no rows of the table. */
const EMPTY_SHARD = 's3';
/** Groups whose rows all live on one shard. */
const ONLY_GROUPS = ['only-s0', 'only-s1', 'only-s2'] as const;

let router: ShardRouter;
let catalog: string;
let reference: LocalCluster;
let client: pg.Client;
let rows: DataRow[] = [];

// ---------------------------------------------------------------------------------------------
// Deterministic data

interface DataRow {
  id: bigint;
  g: string | null;
  k: number | null;
  s: number | null;
  big: string | null;
  amount: string | null;
  n: string | null;
  f: number | null;
  flag: boolean | null;
  d: string | null;
  ts: string | null;
  tl: string | null;
  u: string | null;
  vc: string | null;
}

const COLUMNS = ['id', 'g', 'k', 's', 'big', 'amount', 'n', 'f', 'flag', 'd', 'ts', 'tl', 'u', 'vc'] as const;
const ROW_COUNT = 3000;

/**
 * Text values: mixed case, '' and multi-byte UTF-8, including characters whose UTF-16 order
 * differs from their code point (= the server's C.UTF-8 and "C") order: U+FF5A 'ｚ' sorts
 * before U+1F600 '😀' by code point but after it by UTF-16 code unit.
 */
const TEXTS = [
  'alpha',
  'Alpha',
  'ALPHA',
  'beta',
  'Beta',
  'gamma',
  'delta',
  'ärger',
  'Ärger',
  'zebra',
  'Ωmega',
  '日本語',
  '😀 smile',
  'ｚｅｔａ',
  'a b',
  'a',
  'ab',
  'Z',
  '~tilde',
];
const WORDS = ['x', 'X', 'éclair', 'Éclair', 'naïve', 'car', 'Car', 'CAR', '北京', '🦄', 'ｚ', 'a%b', 'under_score', 'zz', 'A'];
const TWO_POW_62 = 1n << 62n;
/**
 * Two groups whose int8 sums (9223372036854775810 and ...809) are one apart but the same
 * float64: only exact arithmetic orders them (and HAVING compares them) as one server does.
 */
const TWINS = [
  { g: 'twin-1', big: String(TWO_POW_62) },
  { g: 'twin-1', big: String(TWO_POW_62) },
  { g: 'twin-1', big: '2' },
  { g: 'twin-2', big: String(TWO_POW_62) },
  { g: 'twin-2', big: String(TWO_POW_62) },
  { g: 'twin-2', big: '1' },
] as const;
const INT8_MAX = 9223372036854775807n;
const INT8_MIN = -9223372036854775808n;

function generateRows(shardFor: (key: bigint) => string): DataRow[] {
  const random = seededRandom(0x5eedb0a7);
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const chance = (p: number) => random() < p;
  const pick = <V>(values: readonly V[]): V => values[Math.floor(random() * values.length)]!;
  const usedIds = new Set<bigint>();
  const tsPool: number[] = [];
  const tsStrings: string[] = [];

  const drawId = (accept: (shard: string) => boolean): bigint => {
    for (;;) {
      const roll = random();
      const id =
        roll < 0.03
          ? -BigInt(int(1, 1_000_000_000)) // negative ids
          : roll < 0.06
            ? (1n << 60n) + BigInt(int(0, 2 ** 31)) // beyond 2^53
            : BigInt(int(1, 2_000_000_000));
      if (usedIds.has(id) || !accept(shardFor(id))) continue;
      usedIds.add(id);
      return id;
    }
  };

  const bigValue = (): string | null => {
    const roll = random();
    if (roll < 0.06) return null;
    if (roll < 0.08) return String(TWO_POW_62); // ties
    if (roll < 0.09) return String(-TWO_POW_62);
    if (roll < 0.095) return String(INT8_MAX);
    if (roll < 0.1) return String(INT8_MIN);
    if (roll < 0.2) return String(int(-1000, 1000)); // small values
    const offset = BigInt(int(0, 2 ** 30)) * BigInt(int(1, 1024));
    return String(chance(0.5) ? TWO_POW_62 - offset : offset - TWO_POW_62);
  };

  const amountValue = (): string | null => {
    const roll = random();
    if (roll < 0.07) return null;
    if (roll < 0.17) return pick(['0', '100.5', '-42.42', '0.0001', '999999999999999.9999']); // ties
    const integer = BigInt(int(0, 9_999_999)) * 100_000_000n + BigInt(int(0, 99_999_999)); // up to ~1e15
    const fraction = String(int(0, 9999)).padStart(4, '0');
    return `${chance(0.3) ? '-' : ''}${integer}.${fraction}`;
  };

  /** Unconstrained numeric with mixed scales; never two equal values with different scales (min/max/DISTINCT would then be free to return either spelling). */
  const numericValue = (): string | null => {
    const roll = random();
    if (roll < 0.08) return null;
    if (roll < 0.2) return pick(['1.5', '-2', '3.14159', '0.000001', '-0.25', '7']); // ties
    if (roll < 0.205) return pick(['123456789012345678901234567.891', '-98765432109876543210.12345']);
    const scale = int(0, 8);
    let mantissa = int(1, 999_999_999);
    if (scale > 0 && mantissa % 10 === 0) mantissa += 1;
    const digits = String(mantissa).padStart(scale + 1, '0');
    const text = scale === 0 ? digits : `${digits.slice(0, digits.length - scale)}.${digits.slice(digits.length - scale)}`;
    return `${chance(0.35) ? '-' : ''}${text}`;
  };

  /** Dyadic rationals of bounded size: every float8 sum of them is exact, whatever the order. */
  const floatValue = (): number | null => {
    const roll = random();
    if (roll < 0.08) return null;
    if (roll < 0.15) return pick([0.5, -1.25, 1024]);
    return int(-800_000, 800_000) / 8;
  };

  const dateValue = (): string | null => {
    if (chance(0.07)) return null;
    return new Date(Date.UTC(2019, 0, 1) + int(0, 2555) * 86_400_000).toISOString().slice(0, 10);
  };

  /** A timestamp with microseconds; some share their millisecond (and differ in microseconds) or are exact ties. */
  const timestamp = (): { iso: string; ms: number; micro: number } => {
    let ms: number;
    const roll = random();
    if (roll < 0.08 && tsPool.length > 0) ms = pick(tsPool);
    else {
      ms = Date.UTC(2019, 0, 1) + int(0, 5 * 365 * 24 * 3600) * 1000 + int(0, 999);
      tsPool.push(ms);
    }
    const micro = int(0, 999);
    return { iso: new Date(ms).toISOString(), ms, micro };
  };
  const tsValue = (): string | null => {
    if (chance(0.06)) return null;
    if (chance(0.03) && tsStrings.length > 0) return pick(tsStrings);
    const { iso, micro } = timestamp();
    const text = `${iso.slice(0, 23)}${String(micro).padStart(3, '0')}+00`;
    tsStrings.push(text);
    return text;
  };
  const tlValue = (): string | null => {
    if (chance(0.06)) return null;
    const { iso, micro } = timestamp();
    return `${iso.slice(0, 10)} ${iso.slice(11, 23)}${String(micro).padStart(3, '0')}`;
  };

  const uuidValue = (): string | null => {
    if (chance(0.1)) return null;
    let hex = '';
    for (let i = 0; i < 32; i++) hex += int(0, 15).toString(16);
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  };

  const groupValue = (index: number): string | null => {
    // 3 groups with all their rows on one shard each, 15 rows apiece, and one group of one row.
    if (index < ONLY_GROUPS.length * 15) return ONLY_GROUPS[index % ONLY_GROUPS.length]!;
    if (index === ONLY_GROUPS.length * 15) return 'singleton';
    const twin = index - ONLY_GROUPS.length * 15 - 1;
    if (twin >= 0 && twin < TWINS.length) return TWINS[twin]!.g;
    const roll = random();
    if (roll < 0.07) return null;
    if (roll < 0.12) return '';
    return pick(TEXTS);
  };

  const generated: DataRow[] = [];
  for (let index = 0; index < ROW_COUNT; index++) {
    const g = groupValue(index);
    const only = ONLY_GROUPS.find((group) => group === g);
    const id = drawId(only ? (shard) => shard === only.slice('only-'.length) : (shard) => shard !== EMPTY_SHARD);
    generated.push({
      id,
      g,
      k: chance(0.08) ? null : int(-5, 6),
      s: chance(0.08) ? null : int(-300, 300),
      big: bigValue(),
      amount: amountValue(),
      n: numericValue(),
      f: floatValue(),
      flag: chance(0.15) || g === 'singleton' ? null : chance(0.53),
      d: dateValue(),
      ts: tsValue(),
      tl: tlValue(),
      u: uuidValue(),
      vc: chance(0.08) ? null : chance(0.06) ? '' : pick(WORDS),
    });
    const twin = TWINS[index - ONLY_GROUPS.length * 15 - 1];
    if (twin) generated[index]!.big = twin.big;
  }
  return generated;
}

const CREATE = (table: string) => `CREATE TABLE ${table} (
  id bigint PRIMARY KEY,
  g text,
  k int4,
  s int2,
  big int8,
  amount numeric(20, 4),
  n numeric,
  f float8,
  flag bool,
  d date,
  ts timestamptz,
  tl timestamp,
  u uuid,
  vc varchar(12)
)`;

function insertStatement(batch: readonly DataRow[]): { sql: string; params: unknown[] } {
  const params: unknown[] = [];
  const tuples = batch.map((row) => {
    const placeholders = COLUMNS.map((column) => {
      const value = row[column];
      params.push(typeof value === 'bigint' ? String(value) : value);
      return `$${params.length}`;
    });
    return `(${placeholders.join(', ')})`;
  });
  return { sql: `INSERT INTO ${T} (${COLUMNS.join(', ')}) VALUES ${tuples.join(', ')}`, params };
}

function chunks<V>(values: readonly V[], size: number): V[][] {
  const result: V[][] = [];
  for (let i = 0; i < values.length; i += size) result.push(values.slice(i, i + size));
  return result;
}

// ---------------------------------------------------------------------------------------------
// Set-up

beforeAll(async () => {
  catalog = uniqueName('cat');
  const referenceStarting = startLocalCluster({ shards: 1 });
  router = await connectFreshRouter({ catalogSchema: catalog });
  reference = await referenceStarting;
  client = new pg.Client({ connectionString: reference.connectionStrings[0]! });
  await client.connect();

  // The reference session speaks like the shards' sessions.
  const shardSettings = await router.executeOn<{ timezone: string; datestyle: string; intervalstyle: string; extra: string }>(
    's0',
    "SELECT current_setting('TimeZone') AS timezone, current_setting('DateStyle') AS datestyle, current_setting('IntervalStyle') AS intervalstyle, current_setting('extra_float_digits') AS extra",
  );
  const settings = shardSettings.rows[0]!;
  await client.query(
    "SELECT set_config('TimeZone', $1, false), set_config('DateStyle', $2, false), set_config('IntervalStyle', $3, false), set_config('extra_float_digits', $4, false)",
    [settings.timezone, settings.datestyle, settings.intervalstyle, settings.extra],
  );

  rows = generateRows((key) => router.shardFor(key));

  for (const shardId of router.shardIds) await router.executeOn(shardId, CREATE(T));
  await client.query(CREATE(T));

  // The first rows one by one through execute (routed by id), the rest in multi-row INSERTs per shard.
  const single = rows.slice(0, 60);
  for (const row of single) {
    const { sql, params } = insertStatement([row]);
    const result = await router.execute(row.id, sql, params);
    expect(result.shardId).toBe(router.shardFor(row.id));
  }
  const byShard = new Map<string, DataRow[]>();
  for (const row of rows.slice(single.length)) {
    const shard = router.shardFor(row.id);
    byShard.set(shard, [...(byShard.get(shard) ?? []), row]);
  }
  await Promise.all(
    [...byShard].map(async ([shardId, shardRows]) => {
      for (const batch of chunks(shardRows, 300)) {
        const { sql, params } = insertStatement(batch);
        await router.executeOn(shardId, sql, params);
      }
    }),
  );
  for (const batch of chunks(rows, 300)) {
    const { sql, params } = insertStatement(batch);
    await client.query(sql, params);
  }
  for (const shardId of router.shardIds) await router.executeOn(shardId, `ANALYZE ${T}`);
  await client.query(`ANALYZE ${T}`);
  await loadJoinTables();
});

/** O (sharded by its id) and R (a registered reference table), the same on the shards and the reference server. */
async function loadJoinTables(): Promise<void> {
  const random = seededRandom(0x0bde55);
  const orders = Array.from({ length: 500 }, (_, i) => ({
    id: String(i + 1),
    item: random() < 0.1 ? String(-1 - i) : String(rows[Math.floor(random() * rows.length)]!.id),
    qty: random() < 0.05 ? null : 1 + Math.floor(random() * 9),
    note: random() < 0.1 ? null : TEXTS[Math.floor(random() * TEXTS.length)]!,
  }));
  const createO = `CREATE TABLE ${O} (id bigint PRIMARY KEY, item bigint, qty int4, note text)`;
  const createR = `CREATE TABLE ${R} (g text PRIMARY KEY, label text, weight int4)`;
  const refRows = TEXTS.slice(0, 12).map((g, i) => [g, `label ${i % 5}`, i % 4 === 0 ? null : i * 3]);
  const insertO = `INSERT INTO ${O} SELECT * FROM unnest($1::int8[], $2::int8[], $3::int4[], $4::text[])`;
  const insertR = `INSERT INTO ${R} SELECT * FROM unnest($1::text[], $2::text[], $3::int4[])`;
  const columnsOf = (list: readonly (readonly unknown[])[], width: number) =>
    Array.from({ length: width }, (_, c) => list.map((row) => row[c]));
  const orderTuples = (list: typeof orders) =>
    columnsOf(
      list.map((o) => [o.id, o.item, o.qty, o.note]),
      4,
    );
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, createO);
    await router.executeOn(shardId, createR);
    await router.executeOn(shardId, insertR, columnsOf(refRows, 3));
    await router.executeOn(shardId, insertO, orderTuples(orders.filter((o) => router.shardFor(BigInt(o.id)) === shardId)));
  }
  await router.registerReferenceTable(R);
  await client.query(createO);
  await client.query(createR);
  await client.query(insertR, columnsOf(refRows, 3));
  await client.query(insertO, orderTuples(orders));
}

afterAll(async () => {
  await client?.end().catch(() => undefined);
  await reference?.stop();
  if (router) {
    for (const shardId of router.shardIds) {
      await router.executeOn(shardId, `DROP TABLE IF EXISTS ${T}, ${O}, ${R}`).catch(() => undefined);
    }
    await router.close();
  }
  if (catalog) await dropSchemas(catalog);
});

// ---------------------------------------------------------------------------------------------
// The corpus

interface CorpusQuery {
  readonly sql: string;
  /** Evaluated when the test runs (some depend on the generated rows). */
  readonly params?: unknown[] | (() => unknown[]);
  /** True when ORDER BY fixes the order of the output completely (rows are then compared in order). */
  readonly ordered: boolean;
}

const q = (sql: string, ordered: boolean, params?: unknown[] | (() => unknown[])): CorpusQuery =>
  params === undefined ? { sql, ordered } : { sql, ordered, params };

/** An id that exists, on shard s1. */
const anIdOnS1 = () => [String(rows.find((row) => row.g === 'only-s1')!.id)];

/** The exact sum of `amount` (scale 4) over a group, computed here in BigInt, as numeric text. */
function exactAmountSum(group: string, plusUnits = 0n): string {
  let total = plusUnits;
  for (const row of rows) {
    if (row.g !== group || row.amount === null) continue;
    const [integer, fraction = ''] = row.amount.replace('-', '').split('.');
    const units = BigInt(integer!) * 10_000n + BigInt(fraction.padEnd(4, '0'));
    total += row.amount.startsWith('-') ? -units : units;
  }
  const sign = total < 0n ? '-' : '';
  const magnitude = total < 0n ? -total : total;
  return `${sign}${magnitude / 10_000n}.${String(magnitude % 10_000n).padStart(4, '0')}`;
}

const CORPUS: CorpusQuery[] = [
  // --- plain rows
  q(`SELECT * FROM ${T}`, false),
  q(`SELECT id, g, k FROM ${T} WHERE k > 2`, false),
  q(`SELECT id, g FROM ${T} ORDER BY id`, true),
  q(`SELECT id, k, g FROM ${T} ORDER BY k DESC NULLS LAST, id`, true),
  q(`SELECT id, k FROM ${T} ORDER BY k DESC, id DESC`, true), // DESC puts NULLs first by default
  q(`SELECT id, g FROM ${T} ORDER BY g COLLATE "C" NULLS FIRST, id DESC`, true),
  q(`SELECT id, g FROM ${T} ORDER BY g, id`, true),
  q(`SELECT id, amount * 2 AS double_amount, k + 1 AS k1, lower(g) AS lg, big / 2 AS half FROM ${T} WHERE flag`, false),
  q(`SELECT * FROM ${T} ORDER BY id LIMIT 10`, true),
  q(`SELECT * FROM ${T} ORDER BY id DESC LIMIT 10 OFFSET 25`, true),
  q(`SELECT id, k FROM ${T} ORDER BY k, id LIMIT 15`, true),
  q(`SELECT k FROM ${T} ORDER BY k NULLS FIRST LIMIT 300`, true), // ties in k, but the output is determined
  q(`SELECT id FROM ${T} ORDER BY id OFFSET 100000`, true),
  q(`SELECT id, g FROM ${T} ORDER BY id LIMIT 0`, true),
  q(`SELECT * FROM ${T} WHERE id < 0 AND id > 0`, false),
  q(`SELECT id, big FROM ${T} WHERE big > $1 ORDER BY big DESC, id LIMIT $2`, true, ['4000000000000000000', 7]),
  q(`SELECT id, big FROM ${T} ORDER BY big NULLS FIRST, id LIMIT 40`, true),
  q(`SELECT id, ts FROM ${T} WHERE ts >= $1 AND ts < $2 ORDER BY ts, id`, true, ['2021-01-01T00:00:00Z', new Date(Date.UTC(2021, 6, 1))]),
  // Some timestamps share their millisecond and differ in microseconds (pg's Date has milliseconds only).
  q(`SELECT id, ts FROM ${T} ORDER BY ts DESC NULLS LAST, id LIMIT 60`, true),
  q(`SELECT id, ts FROM ${T} WHERE ts IS NOT NULL ORDER BY ts, id`, true),
  q(`SELECT id, tl FROM ${T} ORDER BY tl DESC NULLS FIRST, id`, true),
  q(`SELECT id, d FROM ${T} WHERE d BETWEEN $1 AND $2 ORDER BY d DESC, id`, true, ['2020-02-01', '2020-03-15']),
  q(`SELECT id, u FROM ${T} WHERE u IS NOT NULL ORDER BY u, id LIMIT 25`, true),
  q(`SELECT id, u FROM ${T} ORDER BY u DESC NULLS LAST, id LIMIT 25 OFFSET 5`, true),
  q(`SELECT id, vc FROM ${T} WHERE vc LIKE $1 ORDER BY vc COLLATE "C", id`, true, ['%a%']),
  q(`SELECT t.id, t.k FROM ${T} t WHERE t.k = ANY($1) ORDER BY t.id`, true, [[1, 2]]),
  q(`SELECT x.id AS ident, x.g AS grp FROM ${T} AS x WHERE x.g IS NOT NULL AND x.g <> '' ORDER BY grp DESC, ident LIMIT 50`, true),
  q(`SELECT g, id FROM ${T} ORDER BY 1 DESC NULLS LAST, 2`, true),
  q(`SELECT id, k FROM ${T} ORDER BY abs(k) DESC NULLS FIRST, id`, true), // sort key not in the output
  q(`SELECT id, k * 10 AS k10 FROM ${T} ORDER BY k10, id LIMIT 30`, true),
  q(`SELECT id, -k AS k FROM ${T} ORDER BY k, id LIMIT 40`, true), // ORDER BY a name: the output column
  q(`SELECT id, -k AS k FROM ${T} ORDER BY k + 0, id LIMIT 40`, true), // ORDER BY an expression: the input column
  q(`SELECT id, s, f FROM ${T} ORDER BY f DESC NULLS LAST, id LIMIT 12`, true),
  q(`SELECT id, n FROM ${T} ORDER BY n, id`, true),
  q(`SELECT id, amount FROM ${T} ORDER BY amount DESC NULLS LAST, id LIMIT $1 OFFSET $2`, true, [20, 3]),
  q(`SELECT id, amount FROM ${T} WHERE amount IS NULL ORDER BY id`, true),
  q(`SELECT id, g, k FROM ${T} ORDER BY length(g) DESC NULLS LAST, k, id LIMIT 40`, true),
  q(`SELECT id, flag FROM ${T} ORDER BY flag NULLS FIRST, id DESC LIMIT 25 OFFSET 10`, true),
  q(`SELECT id FROM ${T} WHERE g IS DISTINCT FROM 'alpha' AND (k IN (1, 2, 3) OR flag IS NULL) ORDER BY id DESC LIMIT 50`, true),
  q(`SELECT id, g, vc FROM ${T} WHERE g = $1 OR vc = $2`, false, ['😀 smile', '北京']),
  q(`SELECT id, g FROM ${T} ORDER BY id OFFSET $1`, true, [2990]), // a parameter used only by OFFSET
  q(`SELECT id FROM ${T} ORDER BY id DESC LIMIT $1`, true, [null]), // LIMIT NULL = no limit
  q(`SELECT id, $1::text AS tag, k + $2 AS kp FROM ${T} WHERE k = $2 ORDER BY id LIMIT 20`, true, ['tagged', 3]),

  // --- DISTINCT
  q(`SELECT DISTINCT k FROM ${T}`, false),
  q(`SELECT DISTINCT g FROM ${T} ORDER BY g`, true),
  q(`SELECT DISTINCT k, flag FROM ${T} ORDER BY k NULLS FIRST, flag DESC`, true),
  q(`SELECT DISTINCT lower(g) AS lg FROM ${T} ORDER BY lg DESC NULLS LAST LIMIT 5`, true),
  q(`SELECT DISTINCT d FROM ${T} ORDER BY d LIMIT 10 OFFSET 3`, true),
  q(`SELECT DISTINCT g, vc FROM ${T} WHERE k = $1`, false, [2]),
  q(`SELECT DISTINCT g COLLATE "C" AS gc FROM ${T} ORDER BY gc NULLS FIRST`, true),
  q(`SELECT DISTINCT ts FROM ${T}`, false), // values one microsecond apart stay apart

  // --- ungrouped aggregates
  q(`SELECT count(*) FROM ${T}`, true),
  q(`SELECT count(*) AS c, count(k) AS ck, count(g) AS cg, count(flag) AS cf, count(u) AS cu FROM ${T}`, true),
  q(`SELECT sum(k) AS sk, sum(s) AS ss, sum(big) AS sb, sum(amount) AS sa, sum(n) AS sn FROM ${T}`, true),
  q(`SELECT avg(k) AS ak, avg(s) AS avg_s, avg(big) AS ab, avg(amount) AS aa, avg(n) AS an FROM ${T}`, true),
  q(
    `SELECT min(k) AS mink, max(k) AS maxk, min(s) AS mins, max(s) AS maxs, min(big) AS minb, max(big) AS maxb, min(amount) AS mina, max(amount) AS maxa, min(n) AS minn, max(n) AS maxn FROM ${T}`,
    true,
  ),
  q(`SELECT min(g) AS ming, max(g) AS maxg, min(vc) AS minvc, max(vc) AS maxvc FROM ${T}`, true),
  q(`SELECT min(g COLLATE "C") AS ming, max(g COLLATE "C") AS maxg FROM ${T}`, true),
  q(`SELECT min(d) AS mind, max(d) AS maxd, min(ts) AS mints, max(ts) AS maxts, min(tl) AS mintl, max(tl) AS maxtl FROM ${T}`, true),
  q(`SELECT min(u::text) AS minu, max(u::text) AS maxu FROM ${T}`, true),
  q(`SELECT bool_and(flag) AS ba, bool_or(flag) AS bo, every(flag) AS ev, bool_and(k > -100) AS allk FROM ${T}`, true),
  q(
    `SELECT count(*) AS c, count(k) AS ck, sum(k) AS sk, sum(big) AS sb, avg(amount) AS aa, min(g) AS mg, max(ts) AS mt, bool_and(flag) AS ba FROM ${T} WHERE k > 1000`,
    true,
  ),
  q(`SELECT count(*) FROM ${T} WHERE false`, true),
  q(`SELECT count(*) AS c, sum(amount) AS sa, max(ts) AS mt FROM ${T} WHERE g = 'only-s1'`, true),
  q(`SELECT count(*) AS c, sum(big) AS sb, avg(big) AS ab FROM ${T} WHERE g = $1`, true, ['only-s2']),
  q(
    `SELECT count(*) FILTER (WHERE flag) AS ct, count(*) FILTER (WHERE NOT flag) AS cf, sum(amount) FILTER (WHERE k < 0) AS neg, max(g) FILTER (WHERE k = 0) AS mg FROM ${T}`,
    true,
  ),
  q(`SELECT min(f) AS minf, max(f) AS maxf, sum(f) AS sf, avg(f) AS af FROM ${T}`, true),
  q(`SELECT count(*) AS c, sum(big) AS sb, min(g) AS mg FROM ${T} WHERE id = $1`, true, anIdOnS1),
  q(`SELECT max(amount) AS m, min(n) AS mn FROM ${T} WHERE g IS NULL`, true),
  q(`SELECT sum(k) AS sk, avg(k) AS ak, bool_or(flag) AS bo FROM ${T} WHERE k IS NULL`, true),
  q(`SELECT count(*) AS c FROM ${T} OFFSET 1`, true),
  q(`SELECT sum(k) AS sk FROM ${T} HAVING count(*) > 1000000`, true),
  q(`SELECT sum(k) AS sk FROM ${T} HAVING count(*) > 0`, true),
  q(`SELECT count(*) AS c, max(g) AS mg FROM ${T} WHERE false HAVING count(*) = 0`, true),

  // --- GROUP BY
  q(`SELECT g, count(*) AS c FROM ${T} GROUP BY g`, false),
  q(`SELECT g, count(*) AS c, sum(amount) AS sa, avg(k) AS ak FROM ${T} GROUP BY g ORDER BY g NULLS FIRST`, true),
  q(`SELECT k % 3 AS m, count(*) AS c, sum(big) AS sb FROM ${T} GROUP BY k % 3 ORDER BY m NULLS LAST`, true),
  q(`SELECT lower(g) AS lg, count(*) AS c, min(id) AS mi FROM ${T} GROUP BY lower(g) ORDER BY c DESC, lg NULLS LAST`, true),
  q(`SELECT date_trunc('month', ts) AS month, count(*) AS c, max(amount) AS ma FROM ${T} GROUP BY 1 ORDER BY 1`, true),
  q(`SELECT g, k, count(*) AS c FROM ${T} GROUP BY g, k ORDER BY g, k`, true),
  q(`SELECT g, flag, count(*) AS c, bool_or(k > 0) AS anypos FROM ${T} GROUP BY 1, 2`, false),
  q(`SELECT extract(year FROM d) AS y, count(*) AS c, sum(s) AS ss FROM ${T} GROUP BY y ORDER BY y`, true),
  q(`SELECT k % 3 AS k, count(*) AS c FROM ${T} GROUP BY k ORDER BY k, c`, true), // GROUP BY k: the input column; ORDER BY k: the output column
  q(
    `SELECT flag, date_trunc('month', ts) AS m, count(*) AS c FROM ${T} GROUP BY flag, 2 ORDER BY 2 NULLS FIRST, 1 NULLS FIRST LIMIT 12`,
    true,
  ),
  q(`SELECT flag, k % 2 AS parity, count(*) AS c FROM ${T} GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2 DESC NULLS LAST`, true),
  q(`SELECT count(*) AS c FROM ${T} GROUP BY g`, false), // group key not in the output
  q(`SELECT g, min(d) AS md, max(tl) AS mtl, min(u::text) AS mu, max(vc) AS mvc, min(ts) AS mts FROM ${T} GROUP BY g`, false),
  q(`SELECT k, avg(k) AS ak, avg(s) AS avg_s, avg(big) AS ab, avg(n) AS an, sum(n) AS sn FROM ${T} GROUP BY k`, false),
  q(
    `SELECT g, count(*) AS c, sum(amount) AS sa, min(ts) AS mt, avg(big) AS ab FROM ${T} WHERE g LIKE 'only%' OR g = 'singleton' GROUP BY g ORDER BY g`,
    true,
  ),
  q(`SELECT g, count(*) AS c FROM ${T} WHERE k > 1000 GROUP BY g`, false),
  q(
    `SELECT flag, count(*) FILTER (WHERE k > 0) AS pos, sum(big) FILTER (WHERE big < 0) AS negsum, avg(n) FILTER (WHERE n > 0) AS posavg FROM ${T} GROUP BY flag ORDER BY flag NULLS FIRST`,
    true,
  ),
  q(`SELECT d, count(*) AS c FROM ${T} GROUP BY d ORDER BY c DESC, d LIMIT 5`, true),
  q(
    `SELECT g, bool_and(flag) AS ba, every(k > -3) AS ev, bool_or(flag) FILTER (WHERE k = 0) AS bo0 FROM ${T} GROUP BY g ORDER BY g COLLATE "C" NULLS FIRST`,
    true,
  ),
  q(`SELECT date_trunc('year', d) AS y, sum(n) AS sn, avg(n) AS an, min(f) AS mf FROM ${T} GROUP BY 1 ORDER BY 1 NULLS FIRST`, true),
  q(`SELECT amount > 0 AS pos, count(*) AS c, sum(amount) AS sa FROM ${T} GROUP BY amount > 0 ORDER BY pos NULLS FIRST`, true),
  q(`SELECT g, count(*), count(k) FROM ${T} GROUP BY g`, false), // two output columns named "count"
  q(`SELECT DISTINCT count(*) AS c FROM ${T} GROUP BY k ORDER BY c`, true),
  q(`SELECT g, count(*) AS c FROM ${T} GROUP BY g ORDER BY g LIMIT 0`, true),
  q(`SELECT g, count(*) AS c FROM ${T} GROUP BY g ORDER BY g OFFSET 1000`, true),
  q(`SELECT vc, min(big) AS mb, max(big) AS xb, sum(big) AS sb FROM ${T} GROUP BY vc ORDER BY vc COLLATE "C" DESC NULLS LAST`, true),
  q(`SELECT ts, count(*) AS c FROM ${T} GROUP BY ts HAVING count(*) > 1 ORDER BY ts NULLS FIRST`, true),
  q(`SELECT g, sum(big) AS sb FROM ${T} WHERE g LIKE 'twin-%' GROUP BY g ORDER BY sum(big), g`, true), // sums one apart beyond 2^63

  // --- HAVING
  q(`SELECT g, count(*) AS c FROM ${T} GROUP BY g HAVING count(*) > 100 ORDER BY c DESC, g`, true),
  q(`SELECT g FROM ${T} GROUP BY g HAVING sum(k) > 10 AND max(amount) > 0 ORDER BY g`, true),
  q(`SELECT g, min(k) AS mk FROM ${T} GROUP BY g HAVING NOT (min(k) IS NULL) OR g IS NULL ORDER BY g NULLS FIRST`, true),
  q(`SELECT k, count(*) AS c FROM ${T} GROUP BY k HAVING count(*) BETWEEN $1 AND $2 ORDER BY k NULLS FIRST`, true, [200, 260]),
  q(`SELECT g, count(*) AS c FROM ${T} GROUP BY g HAVING g <> '' AND g IS NOT NULL ORDER BY g`, true),
  q(
    `SELECT g, k, sum(amount) AS sa FROM ${T} GROUP BY g, k HAVING count(*) >= 2 ORDER BY sa DESC NULLS LAST, g, k LIMIT 10 OFFSET 5`,
    true,
  ),
  q(`SELECT g, count(*) AS c FROM ${T} WHERE k = $1 GROUP BY g HAVING count(*) > $2 ORDER BY g LIMIT $3`, true, [1, 1, 5]),
  q(`SELECT count(*) AS c, sum(amount) AS sa FROM ${T} GROUP BY k HAVING k IS NULL`, false),
  q(`SELECT g, sum(amount) AS sa FROM ${T} GROUP BY g HAVING sum(amount) > $1::numeric ORDER BY g`, true, ['0']),
  q(`SELECT g FROM ${T} GROUP BY g HAVING count(*) FILTER (WHERE flag) > 5 ORDER BY g`, true),
  q(`SELECT g, min(k) AS mi, max(k) AS ma FROM ${T} GROUP BY g HAVING min(k) < 0 AND max(k) >= 0 AND g IS NOT NULL ORDER BY g`, true),
  q(`SELECT g FROM ${T} GROUP BY g HAVING bool_or(flag) IS NULL OR max(ts) <= $1 ORDER BY g NULLS FIRST`, true, ['2023-10-01T00:00:00Z']),
  q(`SELECT g FROM ${T} GROUP BY g HAVING max(ts) <= $1 ORDER BY g`, true, [new Date(Date.UTC(2023, 9, 1))]), // a Date parameter, as pg sends it
  q(`SELECT g FROM ${T} GROUP BY g HAVING min(d) >= $1 AND max(d) < $2 ORDER BY g`, true, ['2019-01-05', '2025-12-01']),
  q(`SELECT vc, count(*) AS c FROM ${T} GROUP BY vc HAVING max(vc) > 'ｚ' ORDER BY vc`, true), // '🦄' > 'ｚ' by code point, < by UTF-16
  q(`SELECT g, sum(amount) AS sa FROM ${T} GROUP BY g HAVING sum(amount) = $1 OR sum(amount) = $2 ORDER BY g`, true, () => [
    exactAmountSum('alpha'),
    exactAmountSum('beta', 1n),
  ]),
  q(`SELECT g FROM ${T} GROUP BY g HAVING sum(big) > $1 ORDER BY g`, true, ['9223372036854775809']),
  q(`SELECT g FROM ${T} GROUP BY g HAVING sum(big) = 9223372036854775809 ORDER BY g`, true),
  q(
    `SELECT lower(g) AS lg, k % 2 AS p, count(*) AS c, sum(amount) AS sa FROM ${T} GROUP BY 1, 2 HAVING count(*) > 20 ORDER BY lg NULLS FIRST, p NULLS FIRST LIMIT 15 OFFSET 2`,
    true,
  ),
  q(`SELECT k FROM ${T} GROUP BY k HAVING avg(amount) > 0 OR min(n) < -1000 ORDER BY k DESC NULLS LAST`, true),
  q(
    `SELECT lower(g) AS lg, count(*) AS c FROM ${T} GROUP BY lower(g) HAVING count(*) <> 1 AND min(d) >= '2019-01-01' ORDER BY lg NULLS FIRST`,
    true,
  ),

  // --- ORDER BY aggregates that are not selected, and LIMIT over groups
  q(`SELECT g FROM ${T} GROUP BY g ORDER BY max(ts) DESC NULLS LAST, g LIMIT 8`, true),
  q(`SELECT k FROM ${T} GROUP BY k ORDER BY avg(amount) NULLS FIRST, k LIMIT 6`, true),
  q(`SELECT g, count(k) AS ck, count(*) AS c FROM ${T} GROUP BY g ORDER BY count(k) DESC, g NULLS FIRST LIMIT 3`, true),
  q(`SELECT k, count(*) AS c FROM ${T} GROUP BY k ORDER BY c, k NULLS FIRST LIMIT 4`, true),
  q(`SELECT g, k FROM ${T} GROUP BY g, k ORDER BY sum(big) DESC NULLS LAST, g, k LIMIT 7 OFFSET 2`, true),
  q(`SELECT vc FROM ${T} GROUP BY vc ORDER BY min(n), vc LIMIT $1 OFFSET $2`, true, [5, 1]),
  q(`SELECT date_trunc('month', d) AS m, sum(amount) AS sa FROM ${T} GROUP BY m HAVING count(*) > 10 ORDER BY sa DESC, m LIMIT 5`, true),
  // --- Coordinator step: the shards' rows in temporary tables on one shard, the query run there
  // expressions over aggregates, in the select list, HAVING and ORDER BY
  q(`SELECT g, round(avg(k), 2) AS a, count(DISTINCT vc) AS dv FROM ${T} GROUP BY g ORDER BY g NULLS FIRST`, true),
  q(`SELECT count(*) + 1 AS c1, sum(k) / count(k) AS ratio, max(k) - min(k) AS spread FROM ${T}`, true),
  q(`SELECT g, sum(amount) / nullif(sum(k), 0) AS per FROM ${T} GROUP BY g HAVING sum(k) * 2 > 10 ORDER BY per DESC NULLS LAST, g`, true),
  q(`SELECT k, count(*) AS c FROM ${T} GROUP BY k ORDER BY count(*) * -1, k NULLS FIRST`, true),
  q(`SELECT g, max(ts) - min(ts) AS span FROM ${T} GROUP BY g ORDER BY span DESC NULLS LAST, g NULLS FIRST LIMIT 5`, true),
  q(`SELECT coalesce(g, '?') AS g2, upper(min(vc)) AS umin FROM ${T} GROUP BY g ORDER BY 1`, true),
  // DISTINCT aggregates
  q(`SELECT count(DISTINCT k) AS dk, count(DISTINCT g) AS dg, sum(DISTINCT s) AS ds FROM ${T}`, true),
  q(`SELECT g, count(DISTINCT d) AS dd, avg(DISTINCT k) AS ak FROM ${T} GROUP BY g ORDER BY g NULLS FIRST`, true),
  q(`SELECT flag, string_agg(DISTINCT vc, '|' ORDER BY vc) AS words FROM ${T} GROUP BY flag ORDER BY flag NULLS FIRST`, true),
  // stddev / variance
  q(`SELECT stddev(k) AS sd, variance(s) AS v, stddev_pop(big) AS sp, var_samp(amount) AS vs FROM ${T}`, true),
  q(`SELECT g, stddev_samp(s) AS sd, var_pop(k) AS vp FROM ${T} GROUP BY g ORDER BY g NULLS FIRST`, true),
  // string_agg / array_agg with and without ORDER BY inside
  q(`SELECT g, string_agg(vc, ',' ORDER BY vc, id) AS words FROM ${T} WHERE k = 1 GROUP BY g ORDER BY g NULLS FIRST`, true),
  q(`SELECT k, array_agg(id ORDER BY id) AS ids FROM ${T} WHERE g = 'singleton' OR g LIKE 'only%' GROUP BY k ORDER BY k NULLS FIRST`, true),
  q(`SELECT array_agg(s) AS a FROM (SELECT s FROM ${T} WHERE g = 'only-s1' ORDER BY id) sub`, true),
  q(`SELECT string_agg(g, ';') AS gs FROM (SELECT DISTINCT g FROM ${T} WHERE g IS NOT NULL ORDER BY g) sub`, true),
  // ordered-set aggregates
  q(
    `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY f) AS median, percentile_disc(0.9) WITHIN GROUP (ORDER BY amount) AS p90, mode() WITHIN GROUP (ORDER BY k) AS m FROM ${T}`,
    true,
  ),
  q(`SELECT g, percentile_cont(ARRAY[0.25, 0.75]) WITHIN GROUP (ORDER BY s) AS q FROM ${T} GROUP BY g ORDER BY g NULLS FIRST`, true),
  // window functions
  q(`SELECT id, row_number() OVER (ORDER BY id) AS rn FROM ${T} ORDER BY id LIMIT 20`, true),
  q(
    `SELECT id, g, rank() OVER (PARTITION BY g ORDER BY k NULLS LAST) AS r, sum(k) OVER (PARTITION BY g) AS gs FROM ${T} WHERE g LIKE 'only%' ORDER BY id`,
    true,
  ),
  q(`SELECT id, lag(amount) OVER w AS prev, lead(d, 2) OVER w AS next2 FROM ${T} WHERE k = 2 WINDOW w AS (ORDER BY id) ORDER BY id`, true),
  q(`SELECT g, count(*) AS c, dense_rank() OVER (ORDER BY count(*) DESC) AS dr FROM ${T} GROUP BY g ORDER BY dr, g NULLS FIRST`, true),
  q(
    `SELECT id, sum(s) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS moving FROM ${T} WHERE g = 'only-s2' ORDER BY id`,
    true,
  ),
  // subqueries in FROM and WHERE
  q(`SELECT count(*) AS c FROM (SELECT g, k FROM ${T} WHERE k > 0) d`, true), // Vitess #18474: a derived table over a scatter
  q(`SELECT d.g, d.c FROM (SELECT g, count(*) AS c FROM ${T} GROUP BY g) d WHERE d.c > 100 ORDER BY d.g`, true),
  q(`SELECT g, c FROM (SELECT g, count(*) AS c FROM ${T} GROUP BY g) d ORDER BY c DESC, g NULLS FIRST LIMIT 4`, true), // ShardingSphere #31920
  q(`SELECT id FROM ${T} WHERE id IN (SELECT item FROM ${O} WHERE qty > 7) ORDER BY id`, true), // pgdog #639: IN across shards
  q(`SELECT count(*) AS c FROM ${T} t WHERE EXISTS (SELECT 1 FROM ${O} o WHERE o.item = t.id)`, true),
  q(`SELECT count(*) AS c FROM ${T} t WHERE NOT EXISTS (SELECT 1 FROM ${O} o WHERE o.item = t.id AND o.qty IS NOT NULL)`, true),
  q(`SELECT id, k FROM ${T} WHERE k = (SELECT max(k) FROM ${T}) AND g LIKE 'only%' ORDER BY id`, true),
  q(`SELECT (SELECT count(*) FROM ${T}) AS total, (SELECT count(*) FROM ${O}) AS orders`, true),
  q(`SELECT g, (SELECT count(*) FROM ${O} o WHERE o.note = t.g) AS notes FROM ${T} t WHERE g LIKE 'only%' ORDER BY id LIMIT 10`, true),
  // non-recursive CTEs
  q(`WITH c AS (SELECT g, count(*) AS n FROM ${T} GROUP BY g) SELECT g, n FROM c WHERE n > 50 ORDER BY n DESC, g`, true),
  q(
    `WITH a AS (SELECT item, sum(qty) AS q FROM ${O} GROUP BY item), b AS (SELECT id, g FROM ${T}) SELECT b.g, sum(a.q) AS q FROM a JOIN b ON a.item = b.id GROUP BY b.g ORDER BY b.g NULLS FIRST`,
    true,
  ),
  // set operations
  q(`SELECT g FROM ${T} WHERE k = 1 UNION SELECT note FROM ${O} ORDER BY 1 NULLS FIRST`, true),
  q(`SELECT k FROM ${T} UNION ALL SELECT qty FROM ${O} ORDER BY 1 NULLS LAST LIMIT 30`, true),
  q(`SELECT g FROM ${T} INTERSECT SELECT note FROM ${O} ORDER BY 1`, true),
  q(`SELECT g FROM ${T} EXCEPT SELECT note FROM ${O} ORDER BY 1 NULLS FIRST`, true),
  q(`SELECT k FROM ${T} WHERE g = 'only-s0' EXCEPT ALL SELECT k FROM ${T} WHERE g = 'only-s1' ORDER BY 1 NULLS FIRST`, true),
  // DISTINCT ON
  q(`SELECT DISTINCT ON (g) g, id, k FROM ${T} ORDER BY g NULLS FIRST, id`, true),
  q(`SELECT DISTINCT ON (k) k, amount FROM ${T} WHERE amount IS NOT NULL ORDER BY k NULLS FIRST, amount DESC, id`, true),
  // GROUPING SETS / ROLLUP / CUBE
  q(`SELECT g, k, count(*) AS c FROM ${T} WHERE g LIKE 'only%' GROUP BY ROLLUP (g, k) ORDER BY g NULLS LAST, k NULLS LAST`, true),
  q(`SELECT flag, k > 0 AS pos, sum(s) AS ss FROM ${T} GROUP BY CUBE (flag, k > 0) ORDER BY 1 NULLS LAST, 2 NULLS LAST`, false),
  q(
    `SELECT g, d, count(*) AS c, grouping(g, d) AS gr FROM ${T} WHERE g LIKE 'only%' GROUP BY GROUPING SETS ((g), (d), ()) ORDER BY gr, g NULLS LAST, d NULLS LAST`,
    true,
  ),
  // joins: with a reference table, non-co-located sharded tables, outer joins
  q(`SELECT r.label, count(*) AS c, sum(t.k) AS sk FROM ${T} t JOIN ${R} r ON r.g = t.g GROUP BY r.label ORDER BY r.label`, true),
  q(`SELECT t.id, r.weight FROM ${T} t LEFT JOIN ${R} r ON r.g = t.g WHERE t.g LIKE 'only%' OR t.g IS NULL ORDER BY t.id`, true),
  q(`SELECT t.g, sum(o.qty) AS q, count(o.id) AS n FROM ${T} t JOIN ${O} o ON o.item = t.id GROUP BY t.g ORDER BY t.g NULLS FIRST`, true),
  q(`SELECT o.id, t.g FROM ${O} o LEFT JOIN ${T} t ON t.id = o.item WHERE o.qty > $1 ORDER BY o.id`, true, [6]),
  q(`SELECT r.g, count(t.id) AS c FROM ${R} r LEFT JOIN ${T} t ON t.g = r.g AND t.k > 2 GROUP BY r.g ORDER BY r.g`, true),
  q(`SELECT count(*) AS c FROM ${T} a JOIN ${T} b ON a.id = b.id WHERE a.k = 3`, true),
  q(
    `SELECT o.note, t.vc FROM ${O} o FULL JOIN ${T} t ON t.id = o.item AND t.k = 0 WHERE o.id < 20 OR (t.g = 'singleton') ORDER BY o.id NULLS LAST, t.id`,
    true,
  ),
  // partial aggregation in the coordinator step: shards send DISTINCT group/value pairs with partial aggregates
  q(`SELECT count(*) AS c, count(DISTINCT g) AS dg, sum(k) AS sk, avg(k) AS ak FROM ${T} WHERE k > 100`, true),
  q(
    `SELECT g, sum(s) AS ss, sum(big) AS sb, avg(big) AS ab, avg(f) AS af, min(vc) AS mv, max(ts) AS mt, count(DISTINCT k) AS dk FROM ${T} GROUP BY g ORDER BY g NULLS FIRST`,
    true,
  ),
  q(
    `SELECT k, count(*) FILTER (WHERE flag) AS cf, sum(amount) FILTER (WHERE k > 0) AS sf, count(DISTINCT g) AS dg FROM ${T} WHERE d > $1 GROUP BY k HAVING count(*) > $2 ORDER BY k NULLS FIRST`,
    true,
    ['2020-01-01', 5],
  ),
  q(`SELECT count(DISTINCT g), avg(n), count(*) FROM ${T}`, true), // unaliased: names count, avg, count
  q(`SELECT g, avg(amount) * 2 AS x2, sum(DISTINCT k) AS sdk FROM ${T} WHERE g = $1 GROUP BY g`, true, ['alpha']),
  q(`SELECT max(amount) - min(amount) AS spread, count(DISTINCT d) AS dd, avg(s) AS avs FROM ${T} WHERE flag`, true),
  q(
    `SELECT t.k, count(DISTINCT t.vc) AS dv, avg(t.n) AS an FROM ${T} t WHERE t.k IS NOT NULL GROUP BY t.k ORDER BY an DESC NULLS LAST, t.k`,
    true,
  ),
  // regression cases of other sharding routers
  q(`SELECT avg(k) AS a FROM ${T} GROUP BY g ORDER BY 1 NULLS FIRST`, true), // Vitess #15625: AVG with GROUP BY on a non-selected column
  q(`SELECT round(avg(k), 3) AS a FROM ${T} GROUP BY g ORDER BY 1 NULLS FIRST`, true),
  q(`SELECT id, g, vc, max(k) AS mk FROM ${T} GROUP BY id ORDER BY id LIMIT 15`, true), // pgdog #1172: columns neither grouped nor aggregated
  q(`SELECT id, g, count(DISTINCT k) AS dk FROM ${T} GROUP BY id ORDER BY id LIMIT 15`, true),
  q(`SELECT g, avg(amount) AS aa FROM ${T} GROUP BY g ORDER BY avg(amount) DESC NULLS LAST, g LIMIT 3`, true), // Citus #2021: ORDER BY avg with LIMIT
  q(`SELECT g, round(avg(amount), 1) AS aa FROM ${T} GROUP BY g ORDER BY avg(amount), g LIMIT 3`, true),
  // combined
  q(
    `WITH ranked AS (SELECT g, id, row_number() OVER (PARTITION BY g ORDER BY amount DESC NULLS LAST, id) AS rn FROM ${T}) SELECT g, count(*) AS top3 FROM ranked WHERE rn <= 3 GROUP BY g HAVING count(DISTINCT id) = 3 ORDER BY g NULLS FIRST`,
    true,
  ),
  q(
    `SELECT g, count(DISTINCT k) AS dk, rank() OVER (ORDER BY count(DISTINCT k) DESC, g) AS r FROM ${T} WHERE id IN (SELECT item FROM ${O}) GROUP BY g ORDER BY r`,
    true,
  ),
  q(
    `SELECT k, count(*) AS c FROM ${T} WHERE k > $1 AND g <> $2 GROUP BY k HAVING count(*) > $3 ORDER BY count(*) + k DESC, k LIMIT $4`,
    true,
    [0, 'alpha', 10, 3],
  ),
  q(
    `SELECT s.g, s.m FROM (SELECT g, max(amount) - min(amount) AS m FROM ${T} GROUP BY g) s JOIN ${R} r USING (g) ORDER BY s.m DESC NULLS LAST, s.g`,
    true,
  ),
  q(
    `SELECT DISTINCT ON (flag) flag, g, n FROM (SELECT flag, g, count(*) AS n FROM ${T} GROUP BY flag, g) x ORDER BY flag NULLS FIRST, n DESC, g NULLS FIRST`,
    true,
  ),
  q(`SELECT * FROM (SELECT id, k FROM ${T} WHERE g = 'only-s0' UNION ALL SELECT id, qty FROM ${O} WHERE id <= 5) u ORDER BY id, k`, true),
  q(`SELECT id FROM ${T} ORDER BY k NULLS FIRST, id FETCH FIRST 5 ROWS WITH TIES`, true),
  q(`SELECT id, k FROM ${T} ORDER BY k USING >, id LIMIT 5`, true),
  q(`SELECT now() - now() AS zero, count(*) AS c FROM ${T} WHERE ts < now()`, true),
  // co-located (self, on id) and reference joins inside a coordinator step: pushed down whole to each shard
  q(`SELECT a.g, count(DISTINCT b.k) AS dk FROM ${T} a JOIN ${T} b ON a.id = b.id GROUP BY a.g ORDER BY a.g NULLS FIRST`, true),
  q(
    `SELECT g, count(DISTINCT k) AS dk, round(avg(weight), 2) AS w FROM ${T} JOIN ${R} USING (g) WHERE k > $1 GROUP BY g ORDER BY dk DESC, g`,
    true,
    [1],
  ),
  q(
    `SELECT t.g, string_agg(DISTINCT r.label, ',' ORDER BY r.label) AS labels, max(t.k) - min(t.k) AS spread FROM ${T} t LEFT JOIN ${R} r ON r.g = t.g GROUP BY t.g ORDER BY t.g NULLS FIRST`,
    true,
  ),
  q(
    `SELECT a.id, b.k, rank() OVER (PARTITION BY a.g ORDER BY b.k NULLS FIRST, a.id) AS rk FROM ${T} a JOIN ${T} b USING (id) WHERE a.id % 97 = $1 ORDER BY a.id`,
    true,
    [3],
  ),
  q(`SELECT DISTINCT ON (r.label) r.label, t.id, t.vc FROM ${T} t JOIN ${R} r ON r.g = t.g ORDER BY r.label, t.id DESC`, true),
  q(
    `SELECT a.g, count(DISTINCT b.k) AS dk FROM ${T} a JOIN ${T} b ON a.id = b.id AND b.k > $1 WHERE a.id > $2 GROUP BY a.g ORDER BY a.g NULLS FIRST`,
    true,
    [2, 100],
  ),
  q(
    `SELECT r.label, percentile_cont(0.5) WITHIN GROUP (ORDER BY a.k) AS med, count(DISTINCT b.g) AS groups FROM ${T} a JOIN ${T} b ON b.id = a.id JOIN ${R} r ON r.g = a.g GROUP BY r.label HAVING count(*) > 1 ORDER BY r.label`,
    true,
  ),
];

// ---------------------------------------------------------------------------------------------
// Comparison

/** A canonical text of one row, to compare results as multisets. */
function canonical(row: QueryResultRow): string {
  return JSON.stringify(
    Object.keys(row).map((key) => {
      const value: unknown = row[key];
      return [key, value instanceof Date ? `date:${value.getTime()}` : value];
    }),
  );
}

const sortedRows = (result: readonly QueryResultRow[]) =>
  [...result].sort((a, b) => (canonical(a) < canonical(b) ? -1 : canonical(a) > canonical(b) ? 1 : 0));

const broadcast = <R extends QueryResultRow = QueryResultRow>(sql: string, params?: unknown[]) => router.broadcast<R>(sql, params);

describe('broadcast differential (4 shards, one empty, vs one server)', () => {
  it('loaded the same rows in both places: one shard empty, each only-group on its one shard', async () => {
    const perShard: Record<string, number> = {};
    for (const shardId of router.shardIds) {
      const { rows: counted } = await router.executeOn<{ c: string }>(shardId, `SELECT count(*) AS c FROM ${T}`);
      perShard[shardId] = Number(counted[0]!.c);
      for (const group of ONLY_GROUPS) {
        const { rows: inGroup } = await router.executeOn<{ c: string }>(shardId, `SELECT count(*) AS c FROM ${T} WHERE g = $1`, [group]);
        expect(Number(inGroup[0]!.c)).toBe(group === `only-${shardId}` ? 15 : 0);
      }
    }
    expect(perShard[EMPTY_SHARD]).toBe(0);
    expect(Object.values(perShard).reduce((a, b) => a + b, 0)).toBe(ROW_COUNT);
    expect(
      Object.entries(perShard)
        .filter(([shard]) => shard !== EMPTY_SHARD)
        .every(([, count]) => count > 500),
    ).toBe(true);
    const { rows: total } = await client.query<{ c: string }>(`SELECT count(*) AS c FROM ${T}`);
    expect(Number(total[0]!.c)).toBe(ROW_COUNT);
    expect(CORPUS.length).toBeGreaterThanOrEqual(150);
  });

  it.each(CORPUS.map((entry) => [entry.sql.replaceAll(O, 'o').replaceAll(R, 'r').replaceAll(T, 't'), entry] as const))(
    '%s',
    async (_, entry) => {
      const params = typeof entry.params === 'function' ? entry.params() : entry.params;
      const expected: QueryResult = await client.query(entry.sql, params);
      const actual = await broadcast(entry.sql, params);

      expect(actual.fields.map((field) => [field.name, field.dataTypeID])).toEqual(
        expected.fields.map((field) => [field.name, field.dataTypeID]),
      );
      expect(actual.command).toBe('SELECT');
      expect(actual.failures).toEqual([]);
      expect(actual.rowCount).toBe(expected.rowCount);
      if (expected.rows.length > 0 && actual.rows.length > 0) expect(Object.keys(actual.rows[0]!)).toEqual(Object.keys(expected.rows[0]!));
      if (entry.ordered) expect(actual.rows).toEqual(expected.rows);
      else expect(sortedRows(actual.rows)).toEqual(sortedRows(expected.rows));
    },
  );

  it('passes a shard error through: min(uuid) does not exist on one server either', async () => {
    const expected = await client.query(`SELECT min(u) FROM ${T}`).then(
      () => undefined,
      (error: pg.DatabaseError) => error,
    );
    expect(expected?.code).toBe('42883');
    await expect(broadcast(`SELECT min(u) FROM ${T}`)).rejects.toMatchObject({ code: 'QUERY_FAILED', sqlState: '42883' });
  });
});
