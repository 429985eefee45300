import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { ShardRouter } from '../../src/index.js';
import { requiredEnv } from '../chaos/child-env.js';

/**
 * One router process of the ids concurrency test: draws `ROUTER_IDS` ids through router.nextId
 * (reserved blocks) and, concurrently, `SQL_IDS` per shard straight from next_id() on each
 * shard's server, and writes them all to `OUT` as one id per line.
 */
const shards = JSON.parse(requiredEnv('SHARDS')) as { id: string; connectionString: string }[];
const catalogSchema = requiredEnv('CATALOG');
const routerIds = Number(requiredEnv('ROUTER_IDS'));
const sqlIds = Number(requiredEnv('SQL_IDS'));
const out = requiredEnv('OUT');

async function fromRouter(router: ShardRouter): Promise<bigint[]> {
  const ids: bigint[] = [];
  let started = 0;
  // Eight callers at once, as an application's concurrent requests would.
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (started++ < routerIds) ids.push(await router.nextId());
    }),
  );
  return ids;
}

async function fromSql(url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const ids: string[] = [];
    for (let drawn = 0; drawn < sqlIds; drawn += 10_000) {
      const n = Math.min(10_000, sqlIds - drawn);
      const { rows } = await client.query<{ id: string }>(`SELECT "${catalogSchema}".next_id()::text AS id FROM generate_series(1, $1)`, [
        n,
      ]);
      for (const row of rows) ids.push(row.id);
    }
    return ids;
  } finally {
    await client.end();
  }
}

const router = await ShardRouter.connect({ shards, catalogSchema, recovery: { intervalMillis: 0, atConnect: false } });
try {
  const [mine, ...perShard] = await Promise.all([fromRouter(router), ...shards.map((shard) => fromSql(shard.connectionString))]);
  writeFileSync(out, [...mine.map(String), ...perShard.flat()].join('\n'));
} finally {
  await router.close();
}
