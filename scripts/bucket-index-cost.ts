import pg from 'pg';
import { hashFunctionDdl } from '../src/placement/hash-sql.js';
import { bucketIndexDdl } from '../src/rebalance/bucket-index.js';
import { startLocalCluster } from '../src/local.js';

/**
 * The cost of the bucket index (docs/rebalance.md, "Bucket index"), on a local server: the
 * index's size next to its table's, the time of a bulk load, and single-row INSERT throughput
 * into an indexed vs an identical unindexed table, in interleaved rounds (the machine is shared,
 * so only the paired ratio means something). Run: npx tsx scripts/bucket-index-cost.ts
 */

const ROWS = 100_000;
const ROUNDS = 8;
const INSERTS_PER_ROUND = 1_000;
const CATALOG = 'cost';

async function main(): Promise<void> {
  const cluster = await startLocalCluster({ shards: 1 });
  const client = new pg.Client({ connectionString: cluster.connectionStrings[0]! });
  await client.connect();
  try {
    await client.query(`CREATE SCHEMA ${CATALOG}`);
    for (const statement of hashFunctionDdl(CATALOG)) await client.query(statement);
    for (const table of ['indexed', 'plain']) {
      await client.query(`CREATE TABLE ${table} (id text PRIMARY KEY, v bigint NOT NULL, payload text NOT NULL)`);
    }
    await client.query(bucketIndexDdl(CATALOG, 'public.indexed', 'id', 1024, false));
    for (const table of ['plain', 'indexed']) {
      const start = performance.now();
      await client.query(`INSERT INTO ${table} SELECT 'key-' || n, 0, repeat(md5(n::text), 20) FROM generate_series(1, ${ROWS}) AS n`);
      console.log(`bulk load of ${ROWS} rows (~640 B) into ${table}: ${Math.round(performance.now() - start)} ms`);
    }
    const sizes = await client.query(
      `SELECT pg_size_pretty(pg_table_size('indexed')) AS heap, pg_size_pretty(pg_relation_size('indexed_pkey')) AS pkey,
              pg_size_pretty(pg_relation_size('indexed_${CATALOG}_bucket')) AS bucket_index`,
    );
    console.log(`sizes for ${ROWS} rows: ${JSON.stringify(sizes.rows[0])}`);
    const rates: Record<string, number[]> = { indexed: [], plain: [] };
    for (let round = 0; round < ROUNDS; round++) {
      for (const table of round % 2 === 0 ? ['indexed', 'plain'] : ['plain', 'indexed']) {
        const start = performance.now();
        for (let i = 0; i < INSERTS_PER_ROUND; i++) {
          await client.query(`INSERT INTO ${table} (id, v, payload) VALUES ($1, 0, $2)`, [`r${round}-${i}`, 'x'.repeat(600)]);
        }
        rates[table]!.push(INSERTS_PER_ROUND / ((performance.now() - start) / 1e3));
      }
    }
    const ratios = rates.indexed!.map((rate, i) => rate / rates.plain![i]!).sort((a, b) => a - b);
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    console.log(
      `single-row INSERT (autocommit), ${ROUNDS} interleaved rounds of ${INSERTS_PER_ROUND}: indexed ${Math.round(median(rates.indexed!))}/s, ` +
        `plain ${Math.round(median(rates.plain!))}/s, paired ratio median ${median(ratios).toFixed(3)} (min ${ratios[0]!.toFixed(3)}, max ${ratios.at(-1)!.toFixed(3)})`,
    );
  } finally {
    await client.end();
    await cluster.stop();
  }
}

await main();
