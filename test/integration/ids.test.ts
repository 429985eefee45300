import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeId, IDS_PER_MS_PER_SHARD } from '../../src/ids/layout.js';
import { hashKey, ShardRouter } from '../../src/index.js';
import type { ShardRouterError } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { LocalCluster } from '../../src/local.js';
import { runToEnd } from '../chaos/support.js';
import { connectFreshRouter, dropSchemas, shardConfigs, uniqueName, withServer } from '../support/cluster.js';

/**
 * Globally unique ids (docs/ids.md): the shards' next_id() and router.nextId, on real servers.
 * Uniqueness under concurrency (several router processes and every shard at once), after a
 * server restart, with a clock set back, and for a shard added later.
 */

const T = uniqueName('ids');
let router: ShardRouter;
const catalog = uniqueName('cat');

beforeAll(async () => {
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE TABLE ${T} (id bigint PRIMARY KEY DEFAULT "${catalog}".next_id(), user_id text NOT NULL)`);
  }
  await router.registerShardedTable(T, 'user_id');
});

afterAll(async () => {
  await router.broadcast(`DROP TABLE IF EXISTS ${T}`).catch(() => undefined);
  await router.close();
  await dropSchemas(catalog);
});

async function slotOf(shardId: string): Promise<number> {
  const { rows } = await router.executeOn<{ slot: number }>(shardId, `SELECT "${catalog}".id_slot() AS slot`);
  return rows[0]!.slot;
}

function setClockBack(url: string, schema: string, millis: number): Promise<void> {
  return withServer(url, async (client) => {
    await client.query(
      `CREATE OR REPLACE FUNCTION "${schema}".id_clock_ms() RETURNS bigint LANGUAGE sql VOLATILE
         AS $f$ SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - ${Math.trunc(millis)} $f$`,
    );
  });
}

describe('next_id() on every shard', () => {
  it('gives each shard its own slot, and a DEFAULT draws ids carrying it', async () => {
    const slots = await Promise.all(router.shardIds.map(slotOf));
    expect(new Set(slots).size).toBe(router.shardIds.length);
    for (const [index, shardId] of router.shardIds.entries()) {
      const { rows } = await router.executeOn<{ id: string }>(shardId, `INSERT INTO ${T} (user_id) VALUES ('direct') RETURNING id`);
      const decoded = decodeId(rows[0]!.id);
      expect(decoded.slot).toBe(slots[index]);
      expect(Math.abs(decoded.issuedAt.getTime() - Date.now())).toBeLessThan(60_000);
    }
  });

  it("router.nextId hands out unique, increasing ids from a reserved block, by key from the key's shard", async () => {
    const ids: bigint[] = [];
    for (let i = 0; i < 2_500; i++) ids.push(await router.nextId());
    expect(new Set(ids).size).toBe(ids.length);
    const owner = router.shardFor('user-7');
    const keyed = await router.nextId('user-7');
    expect(decodeId(keyed).slot).toBe(await slotOf(owner));
    await expect(router.nextId({} as never)).rejects.toMatchObject({ code: 'INVALID_KEY' });
  });

  it('many router processes and every shard at once: no duplicates', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'psr-ids-'));
    try {
      const processes = 3;
      const routerIds = 100_000;
      const sqlIdsPerShard = 60_000;
      const outs = Array.from({ length: processes }, (_, i) => path.join(dir, `ids-${i}.txt`));
      const exits = await Promise.all(
        outs.map((out) =>
          runToEnd('test/integration/ids-child.ts', {
            SHARDS: JSON.stringify(shardConfigs()),
            CATALOG: catalog,
            ROUTER_IDS: String(routerIds),
            SQL_IDS: String(sqlIdsPerShard),
            OUT: out,
          }),
        ),
      );
      for (const exit of exits) expect(exit.code, exit.stderr.slice(-2000)).toBe(0);
      const seen = new Set<string>();
      let total = 0;
      for (const out of outs) {
        for (const id of readFileSync(out, 'utf8').split('\n')) {
          seen.add(id);
          total++;
        }
      }
      expect(total).toBe(processes * (routerIds + sqlIdsPerShard * router.shardIds.length));
      expect(seen.size).toBe(total);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it('a clock set back a little keeps counting up; set back far, next_id refuses (ID_CLOCK_BEHIND) rather than repeat', async () => {
    const shardId = router.shardIds[1]!;
    const url = shardConfigs()[1]!.connectionString;
    const before = await idsOn(shardId, 500);
    try {
      await setClockBack(url, catalog, 3_000);
      const after = await idsOn(shardId, 5_000);
      expect(after[0]! > before.at(-1)!).toBe(true);
      expect(isIncreasing([...before, ...after])).toBe(true);
      await setClockBack(url, catalog, 3_600_000);
      const refused = await router.executeOn(shardId, `SELECT "${catalog}".next_id()`).catch((error: ShardRouterError) => error);
      expect(refused).toMatchObject({ code: 'ID_CLOCK_BEHIND', retryable: true });
      // The refusal released the counter's lock: the next call is refused the same way, not stuck.
      await expect(router.executeOn(shardId, `INSERT INTO ${T} (user_id) VALUES ('x')`)).rejects.toMatchObject({ code: 'ID_CLOCK_BEHIND' });
    } finally {
      await setClockBack(url, catalog, 0);
    }
    const resumed = await idsOn(shardId, 10);
    expect(resumed[0]! > before.at(-1)!).toBe(true);
  });
});

describe('the counter lock', () => {
  it('a next_id() cancelled while it waits for the lock leaves no lock behind', async () => {
    const url = shardConfigs()[2]!.connectionString;
    const lock = [0x50534849, hashKey(`pg-shard-router:ids:${catalog}`) | 0];
    await withServer(url, async (holder) => {
      await withServer(url, async (waiter) => {
        await holder.query('SELECT pg_advisory_lock($1, $2)', lock);
        await waiter.query("SET statement_timeout = '300ms'");
        await expect(waiter.query(`SELECT "${catalog}".next_id()`)).rejects.toMatchObject({ code: '57014' });
        await holder.query('SELECT pg_advisory_unlock($1, $2)', lock);
        await waiter.query('SET statement_timeout = 0');
        const { rows } = await waiter.query<{ held: number }>(
          "SELECT count(*)::int AS held FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        );
        expect(rows[0]!.held).toBe(0);
        // And it still works, here and for everyone else.
        await waiter.query(`SELECT "${catalog}".next_id()`);
        await holder.query(`SELECT "${catalog}".next_id()`);
      });
    });
  });
});

async function idsOn(shardId: string, n: number): Promise<bigint[]> {
  const { rows } = await router.executeOn<{ id: string }>(
    shardId,
    `SELECT "${catalog}".next_id()::text AS id FROM generate_series(1, $1)`,
    [n],
  );
  return rows.map((row) => BigInt(row.id));
}

function isIncreasing(ids: readonly bigint[]): boolean {
  return ids.every((id, i) => i === 0 || id > ids[i - 1]!);
}

describe('ids across restarts and new shards (servers of its own)', () => {
  let local: LocalCluster;
  let own: ShardRouter;
  const schema = uniqueName('cat');

  beforeAll(async () => {
    local = await startLocalCluster({ shards: 3 });
    own = await ShardRouter.connect({
      shards: local.shardConfigs().slice(0, 2),
      catalogSchema: schema,
      recovery: { intervalMillis: 0, atConnect: false },
    });
  }, 120_000);

  afterAll(async () => {
    await own?.close();
    await local?.stop();
  });

  it('after a server restart, next_id continues above every id it issued', async () => {
    const server = local.servers[0]!;
    const read = async () =>
      withServer(server.connectionString, async (client) => {
        const { rows } = await client.query<{ id: string }>(`SELECT "${schema}".next_id()::text AS id FROM generate_series(1, 20000)`);
        return rows.map((row) => BigInt(row.id));
      });
    const before = await read();
    await server.stop();
    await server.start();
    const after = await read();
    expect(after[0]! > before.at(-1)!).toBe(true);
    expect(new Set([...before, ...after]).size).toBe(before.length + after.length);
  }, 120_000);

  it('a shard added later gets a fresh slot, recorded on every shard', async () => {
    const [third] = local.shardConfigs().slice(2);
    await own.rebalancer().addShard({ id: 's2', connectionString: third!.connectionString });
    const slots = await Promise.all(
      local.connectionStrings.map((url) =>
        withServer(url, async (client) => {
          const { rows } = await client.query<{ slot: number; all: string }>(
            `SELECT "${schema}".id_slot() AS slot, (SELECT string_agg(shard_id || ':' || slot, ',' ORDER BY slot) FROM "${schema}".id_slots) AS all`,
          );
          return rows[0]!;
        }),
      ),
    );
    expect(slots.map((row) => row.slot)).toEqual([0, 1, 2]);
    expect(new Set(slots.map((row) => row.all))).toEqual(new Set(['s0:0,s1:1,s2:2']));
    const id = await own.nextId(undefined);
    expect(decodeId(id).sequence).toBeLessThan(IDS_PER_MS_PER_SHARD);
  }, 120_000);
});
