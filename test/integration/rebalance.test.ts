import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, ShardRouterError } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { Rebalancer } from '../../src/index.js';
import type { LocalCluster } from '../../src/local.js';
import { createScratchDatabases, rejectionOf, shardConfigs, uniqueName, withServer } from '../support/cluster.js';
import { seededRandom } from '../support/random.js';

/**
 * Online rebalancing against real shards: writers keep inserting, updating and deleting keys of
 * the moving buckets while buckets move; afterwards the tables must equal the log of the writes
 * the routers acknowledged (nothing lost, duplicated or resurrected) and verify must be clean.
 */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
/** The fifth shard runs on a server of its own: see the closing note on gids shared by one server's databases. */
let fifth: LocalCluster;
let router: ShardRouter;
const schema = uniqueName('cat');

beforeAll(async () => {
  scratch = await createScratchDatabases();
  fifth = await startLocalCluster({ shards: 1 });
  const shards = scratch.urls.map((url, index) => ({ id: `s${index}`, connectionString: url }));
  router = await ShardRouter.connect({ shards, catalogSchema: schema, bucketCount: 64, recovery: { intervalMillis: 0, atConnect: false } });
  for (const url of [...scratch.urls, fifth.connectionStrings[0]!]) {
    await withServer(url, async (client) => {
      await client.query('CREATE TABLE accounts (id text PRIMARY KEY, balance bigint NOT NULL, note text)');
      await client.query(
        'CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, account_id text NOT NULL, payload jsonb, at timestamptz DEFAULT now())',
      );
      await client.query('CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL)');
    });
  }
  await router.registerShardedTable('accounts', 'id');
  await router.registerShardedTable('events', 'account_id');
  await router.registerReferenceTable('countries');
  await router.broadcast('INSERT INTO countries (code, name) VALUES ($1, $2), ($3, $4)', ['NO', 'Norway', 'PT', 'Portugal']);
});

afterAll(async () => {
  await router?.close();
  await scratch?.drop();
  await fifth?.stop();
});

/** Writers over a fixed key set; the model holds what an acknowledged write left behind. */
function startWriters(target: ShardRouter, keys: readonly string[], seed: number, writers = 4) {
  const model = new Map<string, number>();
  const pending = new Map<string, number>();
  let stop = false;
  let acknowledged = 0;
  const failures: unknown[] = [];
  const random = seededRandom(seed);
  const loops = Array.from({ length: writers }, async (_, writer) => {
    // Each writer owns its keys, so acknowledged writes to one key are ordered.
    const mine = keys.filter((_, index) => index % writers === writer);
    while (!stop) {
      const key = mine[Math.floor(random() * mine.length)]!;
      const current = model.get(key);
      try {
        if (current === undefined) {
          await target.execute(key, 'INSERT INTO accounts (id, balance) VALUES ($1, $2)', [key, 1]);
          await target.execute(key, 'INSERT INTO events (account_id, payload) VALUES ($1, $2)', [key, { op: 'open' }]);
          model.set(key, 1);
        } else if (random() < 0.2) {
          const deleted = await target.execute(key, 'DELETE FROM accounts WHERE id = $1', [key]);
          expect(deleted.rowCount).toBe(1);
          model.delete(key);
        } else {
          const updated = await target.execute(key, 'UPDATE accounts SET balance = balance + 1 WHERE id = $1', [key]);
          expect(updated.rowCount).toBe(1);
          model.set(key, current + 1);
        }
        acknowledged++;
      } catch (error) {
        failures.push(error);
        return;
      }
    }
  });
  return {
    model,
    pending,
    get acknowledged() {
      return acknowledged;
    },
    failures,
    async stop() {
      stop = true;
      await Promise.all(loops);
    },
  };
}

/** The accounts whose id starts with one of `prefixes`, as id -> balance, read through a broadcast. */
async function tableContents(target: ShardRouter, prefixes: readonly string[]): Promise<Map<string, number>> {
  const { rows } = await target.broadcast<{ id: string; balance: string }>(
    'SELECT id, balance FROM accounts WHERE id LIKE ANY ($1) ORDER BY id',
    [prefixes.map((prefix) => `${prefix}%`)],
  );
  return new Map(rows.map((row) => [row.id, Number(row.balance)]));
}

function keysInBucket(target: ShardRouter, bucket: number, count: number, prefix: string): string[] {
  const keys: string[] = [];
  for (let n = 0; keys.length < count; n++) if (target.bucketFor(`${prefix}${n}`) === bucket) keys.push(`${prefix}${n}`);
  return keys;
}

describe('registry', () => {
  it('refuses what it cannot shard, with a typed error, and stays usable', async () => {
    const missing = await rejectionOf(router.registerShardedTable('no_such_table', 'id'));
    expect(missing).toBeInstanceOf(ShardRouterError);
    expect((missing as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    const noColumn = await rejectionOf(router.registerShardedTable('accounts', 'nope'));
    expect((noColumn as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    const changed = await rejectionOf(router.registerShardedTable('accounts', 'note'));
    expect((changed as ShardRouterError).message).toMatch(/already registered/);
    // The library's own tables (idempotency records, the outbox's, in the catalog schema) are registered by it, so moves carry them.
    expect(router.tables.map((table) => `${table.table}:${table.kind}:${table.shardKey ?? ''}`)).toEqual([
      `${schema}.idempotency_records:sharded:anchor`,
      `${schema}.outbox_events:sharded:key`,
      `${schema}.outbox_groups:reference:`,
      `${schema}.outbox_keys:sharded:key`,
      `${schema}.outbox_offsets:sharded:key`,
      `${schema}.saga_log:sharded:saga_key`,
      'public.accounts:sharded:id',
      'public.countries:reference:',
      'public.events:sharded:account_id',
    ]);
    await expect(router.registerShardedTable('accounts', 'id')).resolves.toMatchObject({ table: 'public.accounts' });
  });
});

describe('moving a bucket under concurrent writes', () => {
  it('loses, duplicates and resurrects nothing, and verify is clean', async () => {
    const bucket = router.bucketFor('hot-0');
    const keys = [...keysInBucket(router, bucket, 40, 'hot-'), ...keysInBucket(router, (bucket + 1) % 64, 10, 'cold-')];
    const other = await ShardRouter.connect({
      shards: shardConfigs().map((shard, index) => ({ ...shard, connectionString: scratch.urls[index]! })),
      catalogSchema: schema,
    });
    const load = startWriters(router, keys.slice(0, 25), 11, 3);
    const load2 = startWriters(other, keys.slice(25), 12, 3);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const from = router.shardFor('hot-0');
    const to = router.shardIds.find((id) => id !== from)!;
    const report = await router.rebalancer().moveBucket(bucket, to);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await load.stop();
    await load2.stop();
    expect(load.failures).toEqual([]);
    expect(load2.failures).toEqual([]);
    expect(report.moves).toHaveLength(1);
    expect(router.shardFor('hot-0')).toBe(to);
    expect(other.shardFor('hot-0')).toBe(to);
    const expected = new Map([...load.model, ...load2.model]);
    expect(await tableContents(router, ['hot-', 'cold-'])).toEqual(expected);
    // Every open event survived exactly once per insert (events has no key: duplicates would show).
    const verify = await router.rebalancer().verify();
    expect(verify.misplaced).toEqual([]);
    expect(verify.ok).toBe(true);
    expect(verify.openMoves).toBe(0);
    // The source kept nothing of the bucket.
    const left = await router.executeOn(from, `SELECT count(*)::int AS n FROM accounts WHERE "${schema}".bucket_of(id, 64) = $1`, [bucket]);
    expect(left.rows[0]!.n).toBe(0);
    await other.close();
  });

  it('a stale router that cannot refresh is refused (typed, retryable) and never writes the old owner', async () => {
    const stale = await ShardRouter.connect({
      shards: scratch.urls.map((url, index) => ({ id: `s${index}`, connectionString: url })),
      catalogSchema: schema,
      mapRefresh: { intervalMillis: 0, listen: false },
    });
    // Blocks its map refresh: it keeps routing by the map it has now.
    stale.refreshMap = async () => stale.bucketMap;
    const [key, sibling] = keysInBucket(stale, stale.bucketFor('stale-0'), 2, 'stale-') as [string, string];
    const bucket = stale.bucketFor(key);
    const from = stale.shardFor(key);
    const to = stale.shardIds.find((id) => id !== from)!;
    await stale.execute(key, 'INSERT INTO accounts (id, balance) VALUES ($1, 0)', [key]);
    await router.rebalancer().moveBucket(bucket, to);
    const refused = await rejectionOf(stale.execute(key, 'UPDATE accounts SET balance = 99 WHERE id = $1', [key]));
    expect(refused).toBeInstanceOf(ShardRouterError);
    expect((refused as ShardRouterError).code).toBe('STALE_BUCKET_MAP');
    expect((refused as ShardRouterError).retryable).toBe(true);
    const insert = await rejectionOf(stale.execute(sibling, 'INSERT INTO accounts (id, balance) VALUES ($1, 0)', [sibling]));
    expect((insert as ShardRouterError).code).toBe('STALE_BUCKET_MAP');
    const onOld = await router.executeOn(from, 'SELECT count(*)::int AS n FROM accounts WHERE id = $1', [key]);
    expect(onOld.rows[0]!.n).toBe(0);
    const onNew = await router.executeOn(to, 'SELECT balance::int AS b FROM accounts WHERE id = $1', [key]);
    expect(onNew.rows[0]!.b).toBe(0);
    // Once it may refresh again, the same write goes through to the new owner.
    delete (stale as { refreshMap?: unknown }).refreshMap;
    await stale.execute(key, 'UPDATE accounts SET balance = 99 WHERE id = $1', [key]);
    expect(stale.shardFor(key)).toBe(to);
    expect((await router.execute(key, 'SELECT balance::int AS b FROM accounts WHERE id = $1', [key])).rows[0]!.b).toBe(99);
    await stale.close();
  });
});

describe('adding and removing a shard', () => {
  let rebalancer: Rebalancer;
  beforeAll(() => {
    rebalancer = router.rebalancer({ bucketsPerMove: 8 });
  });

  it('4 -> 5 shards: balanced within +-1 while writes go on; remove the fifth: back to 4, data intact', async () => {
    const keys = Array.from({ length: 200 }, (_, n) => `acct-${n}`);
    const load = startWriters(router, keys, 21, 4);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const added = await rebalancer.addShard({ id: 's4', connectionString: fifth.connectionStrings[0]! });
    // The library's own reference table (outbox_groups) is copied too, but the report lists the application's tables only.
    expect(added.referenceRows).toEqual({ 'public.countries': 2 });
    const dry = await rebalancer.rebalance({ dryRun: true });
    expect(dry.moves).toEqual([]);
    expect(Object.values(dry.bucketsPerShard).every((count) => Math.abs(count - 64 / 5) < 1.01)).toBe(true);
    const done = await rebalancer.rebalance();
    const counts = Object.values(done.bucketsPerShard);
    expect(counts).toHaveLength(5);
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    expect(router.shardIds).toContain('s4');
    const removed = await rebalancer.removeShard('s4');
    await load.stop();
    expect(load.failures).toEqual([]);
    expect(Object.keys(removed.bucketsPerShard).sort()).toEqual(['s0', 's1', 's2', 's3']);
    const remaining = Object.values(removed.bucketsPerShard);
    expect(Math.max(...remaining) - Math.min(...remaining)).toBeLessThanOrEqual(1);
    expect(router.shardIds).not.toContain('s4');
    expect(await tableContents(router, ['acct-'])).toEqual(load.model);
    const verify = await rebalancer.verify();
    expect(verify.ok).toBe(true);
    expect(verify.divergent).toEqual([]);
  });

  it('refuses bad requests with typed errors', async () => {
    expect(((await rejectionOf(rebalancer.moveBucket(64, 's0'))) as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    expect(((await rejectionOf(rebalancer.moveBucket(0, 'nope'))) as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    expect(((await rejectionOf(rebalancer.removeShard('nope'))) as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    expect(((await rejectionOf(rebalancer.addShard({ id: 's0', connectionString: scratch.urls[0]! }))) as ShardRouterError).code).toBe(
      'INVALID_ARGUMENT',
    );
    const bad = (await rejectionOf(
      rebalancer.addShard({ id: 'bad id', connectionString: 'postgres://u:hunter2@h/db' }),
    )) as ShardRouterError;
    expect(bad.code).toBe('INVALID_ARGUMENT');
    expect(bad.message).not.toContain('hunter2');
  });
});
