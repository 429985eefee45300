import { createHash } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/index.js';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, eventually, rejectionOf, shardUrls, uniqueName, withServer } from '../support/cluster.js';

/**
 * router.broadcastStream: a million rows over four shards stream through in order with bounded
 * memory; breaking out early gives the connections back; LIMIT/OFFSET, aggregates, and an
 * ORDER BY only the server can order (ICU collation) behave as documented.
 */

const S = uniqueName('bs');
const ICU = uniqueName('bs_icu');
/** Names this file's connections in pg_stat_activity, apart from other files running alongside. */
const applicationName = uniqueName('bs_app');
const SHARDS = 4;
const PER_SHARD = 250_000;
const TOTAL = SHARDS * PER_SHARD;
const MB = 1024 * 1024;
/** Peak live-heap growth allowed while streaming all rows (buffering them all would take several hundred MB). */
const HEAP_BOUND = 64 * MB;

let router: ShardRouter;
let catalog: string;

/** A real full GC, without a --expose-gc flag on the worker (the flag is set at run time, then `gc` is taken from a fresh context). */
const gc: () => void = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
})();

function md5(text: string): string {
  return createHash('md5').update(text).digest('hex');
}

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, applicationName, recovery: { intervalMillis: 0, atConnect: false } });
  expect(router.shardIds).toHaveLength(SHARDS);
  // Shard i holds ids i+1, i+1+4, ...: ids 1..1,000,000, disjoint, interleaved (so the merge takes turns between shards).
  await Promise.all(
    router.shardIds.map(async (shardId, i) => {
      await router.executeOn(shardId, `CREATE TABLE ${S} (id int PRIMARY KEY, payload text NOT NULL)`);
      await router.executeOn(shardId, `INSERT INTO ${S} SELECT g, md5(g::text) FROM generate_series($1::int, $2::int, $3::int) g`, [
        i + 1,
        TOTAL,
        SHARDS,
      ]);
      await router.executeOn(shardId, `ANALYZE ${S}`);
    }),
  );
}, 120_000);

afterAll(async () => {
  if (router) {
    for (const shardId of router.shardIds) await router.executeOn(shardId, `DROP TABLE IF EXISTS ${S}, ${ICU}`).catch(() => undefined);
    await router.close();
  }
  if (catalog) await dropSchemas(catalog);
});

/** Every pool lends nothing out, and every server connection of this router is idle (no cursor left open). */
async function expectConnectionsBack(): Promise<void> {
  await eventually(
    'every pool has borrowed 0',
    async () => Object.values(router.poolStats()).every((stats) => stats.borrowed === 0),
    250,
    20,
  );
  for (const url of shardUrls().slice(0, SHARDS)) {
    await withServer(url, (client) =>
      eventually('no busy backend of this router', async () => {
        const { rows } = await client.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle' AND pid <> pg_backend_pid()",
          [applicationName],
        );
        return rows[0]!.n === 0;
      }),
    );
  }
}

async function collect<R>(stream: AsyncIterable<R>): Promise<R[]> {
  const rows: R[] = [];
  for await (const row of stream) rows.push(row);
  return rows;
}

describe('broadcastStream over a million rows', () => {
  it('streams every row in order with bounded memory', async () => {
    gc();
    const baseline = process.memoryUsage().heapUsed;
    let rawPeak = 0;
    let livePeak = 0;
    let count = 0;
    let sum = 0;
    let previous = 0;
    let outOfOrder = 0;
    let badPayloads = 0;
    const started = Date.now();
    for await (const row of router.broadcastStream<{ id: number; payload: string }>(`SELECT id, payload FROM ${S} ORDER BY id`, [], {
      batchSize: 1000,
    })) {
      // Ids are exactly 1..TOTAL, so "strictly increasing" here means "the next one".
      if (row.id !== previous + 1) outOfOrder++;
      previous = row.id;
      count++;
      sum += row.id;
      if (row.id % 997 === 0 && row.payload !== md5(String(row.id))) badPayloads++;
      if (count % 10_000 === 0) {
        rawPeak = Math.max(rawPeak, process.memoryUsage().heapUsed - baseline);
        if (count % 100_000 === 0) {
          // What the stream really holds: garbage aside.
          gc();
          livePeak = Math.max(livePeak, process.memoryUsage().heapUsed - baseline);
        }
      }
    }
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `broadcastStream: ${count} rows in ${seconds.toFixed(1)} s; heap growth over baseline: live peak ${(livePeak / MB).toFixed(1)} MB, ` +
        `raw peak (garbage included) ${(rawPeak / MB).toFixed(1)} MB`,
    );
    expect(count).toBe(TOTAL);
    expect(outOfOrder).toBe(0);
    expect(previous).toBe(TOTAL);
    expect(sum).toBe((TOTAL * (TOTAL + 1)) / 2);
    expect(badPayloads).toBe(0);
    expect(livePeak).toBeLessThan(HEAP_BOUND);
    await expectConnectionsBack();
  }, 120_000);

  it('closes the cursors and returns the connections when the consumer breaks out early', async () => {
    const ids: number[] = [];
    for await (const row of router.broadcastStream<{ id: number }>(`SELECT id, payload FROM ${S} ORDER BY id`, [], { batchSize: 1000 })) {
      ids.push(row.id);
      if (ids.length === 10) break;
    }
    expect(ids).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    await expectConnectionsBack();
    // Without ORDER BY too (the shards are read one after the other).
    let seen = 0;
    for await (const row of router.broadcastStream<{ id: number }>(`SELECT id FROM ${S}`, [], { batchSize: 100 })) {
      expect(typeof row.id).toBe('number');
      if (++seen === 10) break;
    }
    await expectConnectionsBack();
    const { rows } = await router.broadcast<{ c: string }>(`SELECT count(*) AS c FROM ${S}`);
    expect(rows).toEqual([{ c: String(TOTAL) }]);
  });

  it.each([1000, 3, 1])('applies LIMIT/OFFSET after the merge (batchSize %i)', async (batchSize) => {
    const ids = async (sql: string, params: unknown[] = []) =>
      (await collect(router.broadcastStream<{ id: number }>(sql, params, { batchSize }))).map((row) => row.id);
    expect(await ids(`SELECT id FROM ${S} ORDER BY id LIMIT 5 OFFSET 10`)).toEqual([11, 12, 13, 14, 15]);
    expect(await ids(`SELECT id FROM ${S} ORDER BY id LIMIT $1 OFFSET $2`, [5, 10])).toEqual([11, 12, 13, 14, 15]);
    expect(await ids(`SELECT id FROM ${S} ORDER BY id DESC LIMIT 3 OFFSET 2`)).toEqual([TOTAL - 2, TOTAL - 3, TOTAL - 4]);
    expect(await ids(`SELECT id FROM ${S} WHERE id % 10 = 0 ORDER BY id LIMIT 4 OFFSET 1`)).toEqual([20, 30, 40, 50]);
    // OFFSET without LIMIT, as a parameter (the shards then get no LIMIT at all).
    expect(await ids(`SELECT id FROM ${S} WHERE id > $1 ORDER BY id OFFSET $2`, [TOTAL - 100, 98])).toEqual([TOTAL - 1, TOTAL]);
    expect(await ids(`SELECT id FROM ${S} ORDER BY id LIMIT 0`)).toEqual([]);
    expect(await ids(`SELECT id FROM ${S} WHERE id < 0 ORDER BY id`)).toEqual([]);
    await expectConnectionsBack();
  });

  it('yields the same rows as broadcast for aggregate and DISTINCT queries', async () => {
    const queries = [
      `SELECT id % 7 AS m, count(*) AS c, sum(id) AS total, min(id) AS lo, max(id) AS hi, avg(id) AS mean FROM ${S} GROUP BY id % 7 ORDER BY m`,
      `SELECT count(*) AS c, sum(id) AS total, avg(id) AS mean, max(payload) AS top FROM ${S}`,
      `SELECT DISTINCT id % 5 AS r FROM ${S} ORDER BY r`,
    ];
    for (const sql of queries) {
      const buffered = await router.broadcast(sql);
      expect(await collect(router.broadcastStream(sql))).toEqual(buffered.rows);
    }
    // And the merged values are right.
    const grouped = await collect(router.broadcastStream<{ m: number; c: string; total: string; lo: number; hi: number }>(queries[0]!));
    const expected = Array.from({ length: 7 }, (_, m) => ({ m, c: 0, total: 0, lo: Infinity, hi: -Infinity }));
    for (let id = 1; id <= TOTAL; id++) {
      const group = expected[id % 7]!;
      group.c++;
      group.total += id;
      group.lo = Math.min(group.lo, id);
      group.hi = Math.max(group.hi, id);
    }
    expect(grouped.map(({ m, c, total, lo, hi }) => ({ m, c, total, lo, hi }))).toEqual(
      expected.map((group) => ({ ...group, c: String(group.c), total: String(group.total) })),
    );
    expect(await collect(router.broadcastStream(queries[2]!))).toEqual([0, 1, 2, 3, 4].map((r) => ({ r })));
    await expectConnectionsBack();
  });
});

describe('ORDER BY under an ICU collation', () => {
  /** Distinct words whose ICU order differs from code point order (case, accents, digits, punctuation, scripts). */
  const WORDS = [
    'b',
    'A',
    'a',
    'B',
    'ä',
    'Ä',
    'z',
    'Z',
    'é',
    'e',
    'E',
    'ss',
    'ß',
    'Ω',
    'ω',
    '1',
    '10',
    '2',
    'a b',
    'ab',
    'a-b',
    'ｚ',
    '😀',
    '日本',
    'co-op',
    'coop',
    'Co-op',
    'zebra',
    'Zebra',
    'äpfel',
    'apfel',
    'Apfel',
    'éclair',
    'eclair',
    'Éclair',
  ];
  const ORDER = 'ORDER BY word COLLATE "und-x-icu"';
  let icuAvailable = false;

  beforeAll(async () => {
    icuAvailable = await withServer(
      shardUrls()[0]!,
      async (client) => (await client.query("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'")).rowCount === 1,
    );
    expect(icuAvailable, 'the test servers are built with ICU').toBe(true);
    for (const shardId of router.shardIds) await router.executeOn(shardId, `CREATE TABLE ${ICU} (id int PRIMARY KEY, word text NOT NULL)`);
    for (const [i, word] of WORDS.entries()) await router.execute(i + 1, `INSERT INTO ${ICU} VALUES ($1, $2)`, [i + 1, word]);
    expect(new Set(WORDS.map((_, i) => router.shardFor(i + 1))).size).toBe(SHARDS);
  });

  /** What one server returns for the same rows, all in one (temporary) table. */
  async function reference(order: string): Promise<{ id: number; word: string }[]> {
    return withServer(shardUrls()[0]!, async (client) => {
      await client.query('CREATE TEMP TABLE icu_reference (id int PRIMARY KEY, word text NOT NULL)');
      await client.query('INSERT INTO icu_reference SELECT * FROM unnest($1::int[], $2::text[])', [WORDS.map((_, i) => i + 1), WORDS]);
      return (await client.query<{ id: number; word: string }>(`SELECT id, word FROM icu_reference ${order}`)).rows;
    });
  }

  it('broadcast (buffered) orders exactly like one server', async () => {
    const expected = await reference(ORDER);
    expect(expected).toHaveLength(WORDS.length);
    // The collation matters here: code point order would differ.
    expect(expected.map((row) => row.word)).not.toEqual([...WORDS].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    const { rows } = await router.broadcast<{ id: number; word: string }>(`SELECT id, word FROM ${ICU} ${ORDER}`);
    expect(rows).toEqual(expected);
    const descending = await router.broadcast<{ id: number; word: string }>(`SELECT id, word FROM ${ICU} ${ORDER} DESC LIMIT 7 OFFSET 3`);
    expect(descending.rows).toEqual(await reference(`${ORDER} DESC LIMIT 7 OFFSET 3`));
  });

  it('broadcastStream refuses it with UNSUPPORTED (JS cannot reproduce ICU order), leaving no connection behind', async () => {
    const error = await rejectionOf(collect(router.broadcastStream(`SELECT id, word FROM ${ICU} ${ORDER}`, [], { batchSize: 4 })));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('UNSUPPORTED');
    expect((error as Error).message).toMatch(/COLLATE/);
    await expectConnectionsBack();
  });

  it('broadcastStream with COLLATE "C" streams in the server\'s code point order', async () => {
    const sql = `SELECT id, word FROM ${ICU} ORDER BY word COLLATE "C"`;
    const streamed = await collect(router.broadcastStream<{ id: number; word: string }>(sql, [], { batchSize: 4 }));
    expect(streamed).toEqual(await reference('ORDER BY word COLLATE "C"'));
    await expectConnectionsBack();
  });
});
