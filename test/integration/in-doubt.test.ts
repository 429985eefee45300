import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, ShardRouterError } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { LocalCluster } from '../../src/local.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import { dropSchemas, rejectionOf, shardConfigs, uniqueName, withServer } from '../support/cluster.js';
import { keyOn } from '../support/keys.js';
import { TcpProxy } from '../support/tcp-proxy.js';

describe('the decision shard unreachable at the commit point', () => {
  const data = uniqueName('doubt');
  const catalog = uniqueName('cat');
  let proxy: TcpProxy;
  let router: ShardRouter;

  beforeAll(async () => {
    const shards = shardConfigs(2);
    proxy = await TcpProxy.start(shards[0]!.connectionString);
    router = await ShardRouter.connect({
      shards: [{ id: 's0', connectionString: proxy.urlFor(shards[0]!.connectionString) }, shards[1]!],
      catalogSchema: catalog,
      pool: { acquireTimeoutMillis: 1_000, connectTimeoutMillis: 1_000 },
      recovery: { intervalMillis: 0, atConnect: false },
    });
    for (const shardId of router.shardIds) {
      await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
      await router.executeOn(shardId, `CREATE TABLE ${data}.items (id text PRIMARY KEY)`);
    }
  });

  afterAll(async () => {
    testHooks.fault = undefined;
    await router.close();
    await proxy.cut();
    await dropSchemas(data, catalog);
  });

  it('raises IN_DOUBT carrying the gid, never a guess; recovery later settles it on every shard', async () => {
    const onDecider = keyOn(router, 's0', 'd');
    const onVoter = keyOn(router, 's1', 'v');
    testHooks.fault = async (context) => {
      if (context.point === 'before-decision') await proxy.cut();
    };
    const error = await rejectionOf(
      router.transaction([onDecider, onVoter], async (tx) => {
        await tx.execute(onDecider, `INSERT INTO ${data}.items VALUES ($1)`, [onDecider]);
        await tx.execute(onVoter, `INSERT INTO ${data}.items VALUES ($1)`, [onVoter]);
      }),
    );
    testHooks.fault = undefined;
    expect(error).toBeInstanceOf(ShardRouterError);
    expect(error).toMatchObject({ code: 'IN_DOUBT', shardId: 's0' });
    const gid = (error as ShardRouterError).gid!;
    expect(gid).toMatch(new RegExp(`^psr:${router.clusterId}:s0:`));

    // The voter is still prepared, waiting for the decision.
    const voterUrl = shardConfigs(2)[1]!.connectionString;
    const prepared = () =>
      withServer(
        voterUrl,
        async (client) => (await client.query('SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [gid])).rows,
      );
    // Prepared under its participant's own name (two shards may share one server).
    expect(await prepared()).toEqual([{ gid: `${gid}:s1` }]);
    const whileDown = await router.recover({ graceMillis: 0 });
    expect(whileDown.inDoubt).toEqual([expect.objectContaining({ gid, shardId: 's1' })]);
    expect(whileDown.shards.s0?.error).toMatch(/SHARD_UNAVAILABLE|POOL_TIMEOUT/);

    await proxy.open();
    const report = await router.recover({ graceMillis: 0 });
    // The decision shard's connection died before COMMIT arrived, so its side rolled back:
    // recovery's tie-break records 'abort' and rolls the voter back.
    expect(report.rolledBack).toEqual([expect.objectContaining({ gid, shardId: 's1' })]);
    expect(await prepared()).toEqual([]);
    for (const [key, shardId] of [
      [onDecider, 's0'],
      [onVoter, 's1'],
    ] as const) {
      const { rows } = await router.executeOn(shardId, `SELECT id FROM ${data}.items WHERE id = $1`, [key]);
      expect(rows).toEqual([]);
    }
  });
});

describe('a shard with max_prepared_transactions = 0', () => {
  let local: LocalCluster;
  let router: ShardRouter;
  const catalog = uniqueName('cat');

  beforeAll(async () => {
    local = await startLocalCluster({ shards: 1, maxPreparedTransactions: 0 });
    router = await ShardRouter.connect({
      shards: [
        { id: 'plain', connectionString: local.connectionStrings[0]! },
        { id: 'twopc', connectionString: shardConfigs(2)[1]!.connectionString },
      ],
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
    });
  });

  afterAll(async () => {
    await router?.close();
    await local?.stop();
    await dropSchemas(catalog);
  });

  it('fails a cross-shard transaction at first use with a clear, typed error saying how to fix it', async () => {
    const keys = [keyOn(router, 'plain', 'p'), keyOn(router, 'twopc', 't')];
    let ran = false;
    const error = await rejectionOf(
      router.transaction(keys, async () => {
        ran = true;
      }),
    );
    expect(ran).toBe(false);
    expect(error).toMatchObject({ code: 'PREPARED_TRANSACTIONS_DISABLED', shardId: 'plain' });
    expect((error as Error).message).toMatch(/max_prepared_transactions/);
    // What needs no PREPARE still works: one-shard and read-only transactions.
    expect(await router.transaction([keys[0]!], async (tx) => (await tx.execute(keys[0]!, 'SELECT 1 AS one')).rows)).toEqual([{ one: 1 }]);
    expect(await router.transaction(keys, async (tx) => (await tx.execute(keys[1]!, 'SELECT 2 AS two')).rows, { readOnly: true })).toEqual([
      { two: 2 },
    ]);
    const status = await router.status();
    expect(status.shards.map((shard) => [shard.shardId, shard.maxPreparedTransactions])).toEqual([
      ['plain', 0],
      ['twopc', 64],
    ]);
  });
});
