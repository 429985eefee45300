import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter, ShardRouterError } from '../../src/index.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import { dropSchemas, rejectionOf, shardConfigs, uniqueName } from '../support/cluster.js';
import { keyOn } from '../support/keys.js';
import { TcpProxy } from '../support/tcp-proxy.js';

/**
 * The retry contract while the first attempt is in doubt (docs/idempotency.md): with the
 * decision shard unreachable, a retry with the same idempotency key fails with a retryable
 * error and runs nothing; once the shard is back and recovery has settled the first attempt,
 * the retry takes effect exactly once.
 */
describe('an idempotent transaction in doubt, its decision shard unreachable', () => {
  const data = uniqueName('idemdoubt');
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
      transactions: { lockTimeoutMillis: 500 },
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

  it('retries fail retryable (never a guess) until the shard is back, then the work takes effect once', async () => {
    const onDecider = keyOn(router, 's0', 'd');
    const onVoter = keyOn(router, 's1', 'v');
    let runs = 0;
    const call = () =>
      router.transaction(
        [onDecider, onVoter],
        async (tx) => {
          runs++;
          await tx.execute(onDecider, `INSERT INTO ${data}.items VALUES ($1)`, [onDecider]);
          await tx.execute(onVoter, `INSERT INTO ${data}.items VALUES ($1)`, [onVoter]);
          return 'stored';
        },
        { idempotencyKey: 'doubt-1' },
      );
    testHooks.fault = async (context) => {
      if (context.point === 'before-decision') await proxy.cut();
    };
    const inDoubt = await rejectionOf(call());
    testHooks.fault = undefined;
    expect(inDoubt).toBeInstanceOf(ShardRouterError);
    expect(inDoubt).toMatchObject({ code: 'IN_DOUBT', shardId: 's0', retryable: true });
    expect(runs).toBe(1);

    // The decision shard is still down: the retry cannot read the record, so it fails, retryable, and runs nothing.
    for (let attempt = 0; attempt < 2; attempt++) {
      const whileDown = await rejectionOf(call());
      expect(whileDown).toBeInstanceOf(ShardRouterError);
      expect((whileDown as ShardRouterError).code).toMatch(/^(SHARD_UNAVAILABLE|POOL_TIMEOUT|CONNECTION_LOST)$/);
      expect((whileDown as ShardRouterError).retryable).toBe(true);
    }
    expect(runs).toBe(1);

    // Back, but the first attempt's voter is still prepared (its row locked): the retry waits, then fails retryable.
    await proxy.open();
    const whilePrepared = await rejectionOf(call());
    expect(whilePrepared).toMatchObject({ retryable: true });
    // Recovery settles the first attempt (its decision shard never got COMMIT: abort); the retry now runs, once.
    await router.recover({ graceMillis: 0 });
    expect(await call()).toBe('stored');
    expect(await call()).toBe('stored');
    for (const key of [onDecider, onVoter]) {
      const { rows } = await router.execute(key, `SELECT id FROM ${data}.items WHERE id = $1`, [key]);
      expect(rows).toEqual([{ id: key }]);
    }
  });
});
