import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, type ShardRouterError } from '../../src/index.js';
import type { RebalanceProgress, ShardRouterConfig } from '../../src/index.js';
import { rebalanceHooks } from '../../src/rebalance/test-hooks.js';
import { createScratchDatabases, rejectionOf, uniqueName, withServer } from '../support/cluster.js';
import { TcpProxy } from '../support/tcp-proxy.js';

/**
 * Regression tests of issue 19: cluster membership beyond the bucket map (a shard that owns no
 * buckets is still a member), broadcast writes retried after a stale-map refusal, transactions
 * whose declared key moves under the callback, and the progress reported by moves and resumes.
 *
 * Every shard of these clusters lives on a server of its own (scratch databases on servers
 * 0..2): two databases of one server would share its prepared-transaction gids.
 */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
const routers: ShardRouter[] = [];
let proxy: TcpProxy | undefined;

beforeAll(async () => {
  scratch = await createScratchDatabases();
});

afterAll(async () => {
  rebalanceHooks.step = undefined;
  await Promise.allSettled(routers.map((router) => router.close()));
  await proxy?.cut();
  await scratch?.drop();
});

const quiet = { recovery: { intervalMillis: 0, atConnect: false } } as const;

async function connect(config: ShardRouterConfig): Promise<ShardRouter> {
  const router = await ShardRouter.connect(config);
  routers.push(router);
  return router;
}

/** Shard configs s<i> over the scratch databases of the given servers. */
function shardsOn(...servers: number[]): { id: string; connectionString: string }[] {
  return servers.map((server) => ({ id: `s${server}`, connectionString: scratch.urls[server]! }));
}

async function countOn(server: number, table: string, where: string, params: unknown[]): Promise<number> {
  return withServer(scratch.urls[server]!, async (client) => {
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`, params);
    return rows[0]!.n;
  });
}

/** A key (prefix + n) whose bucket the router maps to `shardId`. */
function keyOn(router: ShardRouter, shardId: string, prefix: string, avoidBucket?: number): string {
  for (let n = 0; n < 100_000; n++) {
    const key = `${prefix}${n}`;
    if (router.shardFor(key) === shardId && router.bucketFor(key) !== avoidBucket) return key;
  }
  throw new Error(`no key on ${shardId}`);
}

describe('a shard that owns no buckets (issue 19)', () => {
  const schema = uniqueName('cat');
  const ref = uniqueName('tags');
  const items = uniqueName('items');
  /** Connected before s2 is added, never told about it: it learns only when a fence refuses it. */
  let stale: ShardRouter;
  /** Adds s2. */
  let adder: ShardRouter;
  /** Connected after s2 was added, configured with s0 and s1 only. */
  let fresh: ShardRouter;
  let s2Password: string;

  beforeAll(async () => {
    for (const url of scratch.urls.slice(0, 4)) {
      await withServer(url, async (client) => {
        await client.query(`CREATE TABLE ${ref} (code text PRIMARY KEY, name text NOT NULL)`);
        await client.query(`CREATE TABLE ${items} (id text PRIMARY KEY, note text)`);
      });
    }
    const config = { shards: shardsOn(0, 1), catalogSchema: schema, bucketCount: 16, ...quiet };
    stale = await connect({ ...config, mapRefresh: { listen: false, intervalMillis: 0 } });
    await stale.registerReferenceTable(ref);
    await stale.registerShardedTable(items, 'id');
    await stale.broadcast(`INSERT INTO ${ref} (code, name) VALUES ('NO', 'Norway')`);
    adder = await connect(config);
    const added = await adder.rebalancer().addShard({ id: 's2', connectionString: scratch.urls[2]! });
    expect(added.referenceRows).toEqual({ [`public.${ref}`]: 1 });
    expect(adder.bucketMap.owners).not.toContain('s2');
    fresh = await connect(config);
    s2Password = decodeURIComponent(new URL(scratch.urls[2]!).password);
  });

  it('regression: a router connected after addShard lists the bucketless shard (shardIds, shards(), status())', async () => {
    expect(fresh.bucketMap.owners).not.toContain('s2');
    expect(fresh.shardIds).toContain('s2');
    const listed = fresh.shards().find((shard) => shard.shardId === 's2');
    expect(listed).toMatchObject({ shardId: 's2', state: 'active', buckets: 0 });
    const url = new URL(listed!.url);
    expect(url.port).toBe(new URL(scratch.urls[2]!).port);
    expect(url.pathname).toBe(new URL(scratch.urls[2]!).pathname);
    expect(url.password).toBe('');
    expect(s2Password).not.toBe('');
    expect(listed!.url).not.toContain(s2Password);
    for (const shard of fresh.shards()) expect(shard.url).not.toContain(s2Password);
    expect(
      fresh
        .shards()
        .filter((shard) => shard.shardId !== 's2')
        .map((shard) => [shard.shardId, shard.state, shard.buckets]),
    ).toEqual([
      ['s0', 'active', 8],
      ['s1', 'active', 8],
    ]);
    const status = await fresh.status();
    expect(status.shards.find((shard) => shard.shardId === 's2')).toMatchObject({ state: 'active', buckets: 0, reachable: true });
  });

  it('regression: a broadcast write of a router connected after addShard reaches the bucketless shard', async () => {
    const result = await fresh.broadcast(`INSERT INTO ${ref} (code, name) VALUES ($1, $2)`, ['PT', 'Portugal']);
    expect(result.rowCount).toBe(3);
    expect(await countOn(2, ref, 'code = $1', ['PT'])).toBe(1);
    expect(await countOn(0, ref, 'code = $1', ['PT'])).toBe(1);
  });

  it('regression: a broadcast write retried after a stale-map refusal writes the shard added meanwhile', async () => {
    // `stale` still routes by the map from before addShard: s0 and s1's fences refuse its write.
    expect(stale.bucketMap.version).toBeLessThan(adder.bucketMap.version);
    const result = await stale.broadcast(`INSERT INTO ${ref} (code, name) VALUES ($1, $2)`, ['SE', 'Sweden']);
    expect(result.rowCount).toBe(3);
    expect(await countOn(2, ref, 'code = $1', ['SE'])).toBe(1);
    expect(await countOn(0, ref, 'code = $1', ['SE'])).toBe(1);
    expect(await countOn(1, ref, 'code = $1', ['SE'])).toBe(1);
    expect(stale.shardIds).toContain('s2');
  });

  it('regression: verify of a router connected after addShard compares the bucketless shard’s reference tables', async () => {
    const rebalancer = fresh.rebalancer();
    // Keep this test meaningful on its own: make the copies equal first (rows the tests above wrote).
    const onS0 = await withServer(scratch.urls[0]!, (client) =>
      client.query<{ code: string; name: string }>(`SELECT code, name FROM ${ref}`),
    );
    await withServer(scratch.urls[2]!, async (client) => {
      await client.query(`DELETE FROM ${ref}`);
      for (const row of onS0.rows) await client.query(`INSERT INTO ${ref} (code, name) VALUES ($1, $2)`, [row.code, row.name]);
    });
    const clean = await rebalancer.verify();
    expect(clean.divergent).toEqual([]);
    expect(clean.ok).toBe(true);

    await withServer(scratch.urls[2]!, (client) => client.query(`INSERT INTO ${ref} (code, name) VALUES ('XX', 'only on s2')`));
    const dirty = await rebalancer.verify();
    expect(dirty.ok).toBe(false);
    expect(dirty.divergent.map((table) => table.table)).toEqual([`public.${ref}`]);
    const perShard = Object.fromEntries(dirty.divergent[0]!.shards.map((shard) => [shard.shardId, shard.rows]));
    expect(perShard.s2).toBe(perShard.s0! + 1);

    await withServer(scratch.urls[2]!, (client) => client.query(`DELETE FROM ${ref} WHERE code = 'XX'`));
    expect((await rebalancer.verify()).ok).toBe(true);
  });

  it('regression: plan() of a router connected after addShard moves buckets onto the bucketless shard', async () => {
    const plan = await fresh.rebalancer().plan();
    const ontoS2 = plan.filter((move) => move.target === 's2').reduce((sum, move) => sum + move.buckets.length, 0);
    // 16 buckets over three shards: s2 gets 5.
    expect(ontoS2).toBe(5);
    expect(fresh.bucketMap.owners).not.toContain('s2');
  });

  it('regression: removeShard of the bucketless shard succeeds from a router connected after addShard', async () => {
    const report = await fresh.rebalancer().removeShard('s2');
    expect(report.moves).toEqual([]);
    expect(Object.keys(report.bucketsPerShard).sort()).toEqual(['s0', 's1']);
    expect(fresh.shardIds).not.toContain('s2');
    expect(fresh.shards().find((shard) => shard.shardId === 's2')).toMatchObject({ state: 'removed', buckets: 0 });
    // A write now goes to the members only.
    const after = await fresh.broadcast(`INSERT INTO ${ref} (code, name) VALUES ($1, $2)`, ['DK', 'Denmark']);
    expect(after.rowCount).toBe(2);
    expect(await countOn(2, ref, 'code = $1', ['DK'])).toBe(0);
  });

  it('regression: verify checks a removed shard for leftover sharded rows', async () => {
    const key = 'left-behind';
    await withServer(scratch.urls[2]!, (client) => client.query(`INSERT INTO ${items} (id) VALUES ($1)`, [key]));
    const report = await fresh.rebalancer().verify();
    expect(report.unreachable).toEqual([]);
    expect(report.ok).toBe(false);
    expect(report.misplaced).toEqual([
      expect.objectContaining({
        table: `public.${items}`,
        shardId: 's2',
        bucket: fresh.bucketFor(key),
        owner: fresh.shardFor(key),
        rows: 1,
        sampleKeys: [key],
      }),
    ]);
    // The removed shard's stale reference copy (it missed 'DK') is no divergence.
    expect(report.divergent).toEqual([]);
    await withServer(scratch.urls[2]!, (client) => client.query(`DELETE FROM ${items} WHERE id = $1`, [key]));
    expect((await fresh.rebalancer().verify()).ok).toBe(true);
  });

  it('regression: verify lists a removed shard it cannot reach as unreachable instead of failing', async () => {
    // s3 is reached through a proxy, so that it can be made to look down after its removal.
    proxy = await TcpProxy.start(scratch.urls[3]!);
    await fresh.rebalancer().addShard({ id: 's3', connectionString: proxy.urlFor(scratch.urls[3]!) });
    await fresh.rebalancer().removeShard('s3');
    await proxy.cut();
    const report = await fresh.rebalancer().verify();
    expect(report.unreachable).toEqual([{ shardId: 's3', error: expect.any(String) }]);
    expect(report.ok).toBe(true);
    expect(
      fresh
        .shards()
        .filter((shard) => shard.state === 'removed')
        .map((shard) => shard.shardId),
    ).toEqual(['s2', 's3']);
  });
});

describe('moves under a transaction, and move progress (issue 19)', () => {
  const schema = uniqueName('cat');
  const accounts = uniqueName('acct');
  let router: ShardRouter;

  beforeAll(async () => {
    for (const url of scratch.urls.slice(0, 3)) {
      await withServer(url, (client) => client.query(`CREATE TABLE ${accounts} (id text PRIMARY KEY, note text)`));
    }
    router = await connect({ shards: shardsOn(0, 1, 2), catalogSchema: schema, bucketCount: 16, ...quiet });
    await router.registerShardedTable(accounts, 'id');
  });

  /**
   * A move that keeps every shard within the mean +-1 buckets (16 over 3: 6/5/5 -> 5/6/5), so a
   * later rebalance plans nothing; `third` is the shard neither side of the move.
   */
  function balancedMove(): { source: string; target: string; third: string } {
    const counts = router.bucketMap.bucketsPerShard();
    const byCount = [...router.shardIds].sort((a, b) => (counts.get(b) ?? 0) - (counts.get(a) ?? 0) || (a < b ? -1 : 1));
    return { source: byCount[0]!, target: byCount[2]!, third: byCount[1]! };
  }

  it('regression: a declared key whose bucket moves during the transaction re-runs it on the new map (no KEY_NOT_IN_TRANSACTION)', async () => {
    const { source, target, third } = balancedMove();
    const k2 = keyOn(router, source, 'moving-');
    const k1 = keyOn(router, third, 'staying-');
    const bucket = router.bucketFor(k2);
    let attempts = 0;
    const result = await router.transaction([k1, k2], async (tx) => {
      attempts++;
      await tx.execute(k1, `INSERT INTO ${accounts} (id, note) VALUES ($1, $2)`, [k1, `attempt ${attempts}`]);
      if (attempts === 1) {
        // Moves k2's bucket and refreshes this router's map, while the transaction is open on k1's shard only.
        await router.rebalancer().moveBucket(bucket, target);
        expect(router.shardFor(k2)).toBe(target);
      }
      await tx.execute(k2, `INSERT INTO ${accounts} (id, note) VALUES ($1, $2)`, [k2, `attempt ${attempts}`]);
      return 'committed';
    });
    expect(result).toBe('committed');
    expect(attempts).toBe(2);
    const shardIndex = (shardId: string) => Number(shardId.slice(1));
    expect(await countOn(shardIndex(third), accounts, 'id = $1', [k1])).toBe(1);
    expect(await countOn(shardIndex(target), accounts, 'id = $1', [k2])).toBe(1);
    expect(await countOn(shardIndex(source), accounts, 'id = $1', [k2])).toBe(0);
    expect((await router.execute(k2, `SELECT note FROM ${accounts} WHERE id = $1`, [k2])).rows).toEqual([{ note: 'attempt 2' }]);
    expect((await router.execute(k1, `SELECT note FROM ${accounts} WHERE id = $1`, [k1])).rows).toEqual([{ note: 'attempt 2' }]);
  });

  it('regression: a move reports every step to onProgress, with resumed false', async () => {
    const { source, target } = balancedMove();
    const key = keyOn(router, source, 'progress-');
    await router.execute(key, `INSERT INTO ${accounts} (id) VALUES ($1)`, [key]);
    const events: RebalanceProgress[] = [];
    const report = await router.rebalancer({ onProgress: (progress) => events.push(progress) }).moveBucket(router.bucketFor(key), target);
    expect(report.moves).toHaveLength(1);
    const moveId = report.moves[0]!.moveId;
    const steps = events.map((event) => event.current.step);
    for (const step of ['started', 'copying', 'copied', 'caught-up', 'paused', 'before-switch', 'switched', 'drained', 'cleaned', 'done']) {
      expect(steps).toContain(step);
    }
    expect(
      events.map((event) => [event.current.moveId, event.current.resumed]).filter(([id, resumed]) => id !== moveId || resumed !== false),
    ).toEqual([]);
    // In the order the move takes them, each once.
    const milestones = steps.filter((step) => step !== 'copying' && step !== 'catching-up');
    expect(milestones).toEqual(['started', 'copied', 'caught-up', 'paused', 'before-switch', 'switched', 'drained', 'cleaned', 'done']);
    expect(router.shardFor(key)).toBe(target);
  });

  it('regression: rebalance({ resume: true }) reports the resumed move (report.resumed) and its steps to onProgress', async () => {
    const { source, target } = balancedMove();
    const key = keyOn(router, source, 'resume-');
    const bucket = router.bucketFor(key);
    await router.execute(key, `INSERT INTO ${accounts} (id) VALUES ($1)`, [key]);
    let stoppedMove: string | undefined;
    rebalanceHooks.step = async (step, moveId) => {
      if (step === 'switched') {
        stoppedMove = moveId;
        throw new Error('stop here');
      }
    };
    let stopped: unknown;
    try {
      stopped = await rejectionOf(router.rebalancer().moveBucket(bucket, target));
    } finally {
      rebalanceHooks.step = undefined;
    }
    expect((stopped as Error).message).toBe('stop here');
    expect(stoppedMove).toBeDefined();
    // Left open: a plain rebalance refuses to run past it.
    const refused = await rejectionOf(router.rebalancer().rebalance());
    expect((refused as ShardRouterError).code).toBe('REBALANCE_CONFLICT');

    const events: RebalanceProgress[] = [];
    const report = await router.rebalancer({ onProgress: (progress) => events.push(progress) }).rebalance({ resume: true });
    expect(report.resumed).toBeDefined();
    expect(report.resumed!.finished).toEqual([stoppedMove]);
    expect(report.resumed!.restarted).toEqual([]);
    expect(report.resumed!.undone).toEqual([]);
    const resumedEvents = events.filter((event) => event.current.moveId === stoppedMove);
    const steps = resumedEvents.map((event) => event.current.step);
    for (const step of ['switched', 'drained', 'cleaned', 'done']) expect(steps).toContain(step);
    expect(resumedEvents.filter((event) => event.current.resumed !== true)).toEqual([]);
    expect(steps.at(-1)).toBe('done');

    expect(router.shardFor(key)).toBe(target);
    expect(await countOn(Number(target.slice(1)), accounts, 'id = $1', [key])).toBe(1);
    expect(await countOn(Number(source.slice(1)), accounts, 'id = $1', [key])).toBe(0);
    const verify = await router.rebalancer().verify();
    expect(verify.openMoves).toBe(0);
    expect(verify.ok).toBe(true);
  });
});
