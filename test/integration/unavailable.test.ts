import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import { dropSchemas, rejectionOf, shardConfigs, uniqueName } from '../support/cluster.js';
import { TcpProxy } from '../support/tcp-proxy.js';

const catalogSchema = uniqueName('cat');
let proxy: TcpProxy;
let router: ShardRouter;
let keyOn: (shardId: string) => string;

beforeAll(async () => {
  const shards = shardConfigs();
  // s1 is reached through a proxy that the tests cut and restore.
  proxy = await TcpProxy.start(shards[1]!.connectionString);
  shards[1] = { id: 's1', connectionString: proxy.urlFor(shards[1]!.connectionString) };
  router = await ShardRouter.connect({ shards, catalogSchema, pool: { max: 3, acquireTimeoutMillis: 5000, connectTimeoutMillis: 2000 } });
  keyOn = (shardId) => Array.from({ length: 200 }, (_, i) => `key-${i}`).find((key) => router.shardFor(key) === shardId)!;
});

afterAll(async () => {
  await router.close();
  await proxy.cut();
  await dropSchemas(catalogSchema);
});

describe('an unreachable shard', () => {
  it('fails connect with SHARD_UNAVAILABLE naming the shard, without the password', async () => {
    const shards = shardConfigs(2);
    const closed = new URL(shards[1]!.connectionString);
    closed.port = '1';
    const error = await rejectionOf(
      ShardRouter.connect({ shards: [shards[0]!, { id: 's1', connectionString: closed.toString() }], catalogSchema: uniqueName('cat') }),
    );
    expect(error).toMatchObject({ code: 'SHARD_UNAVAILABLE', shardId: 's1' });
    if (closed.password !== '') expect((error as Error).message).not.toContain(closed.password);
  });

  it('fails connect with SHARD_UNAVAILABLE, not a hang, when pg cannot even build the client', async () => {
    // pg reads sslrootcert while constructing the client, so this throws before any connect.
    const shards = shardConfigs(2);
    const broken = new URL(shards[1]!.connectionString);
    broken.searchParams.set('sslrootcert', '/nonexistent/pg-shard-router-test-ca.pem');
    const error = await rejectionOf(
      ShardRouter.connect({ shards: [shards[0]!, { id: 's1', connectionString: broken.toString() }], catalogSchema: uniqueName('cat') }),
    );
    expect(error).toMatchObject({ code: 'SHARD_UNAVAILABLE', shardId: 's1' });
  });

  it('fails statements for that shard fast with SHARD_UNAVAILABLE while other shards keep working, and recovers', async () => {
    expect((await router.execute(keyOn('s1'), 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await proxy.cut();

    // Pooled connections were cut: at most the ones already open report CONNECTION_LOST;
    // after that every attempt is SHARD_UNAVAILABLE, never a wait for POOL_TIMEOUT.
    const codes: string[] = [];
    for (let i = 0; i < 6; i++) {
      const error = await rejectionOf(router.execute(keyOn('s1'), 'SELECT 1'));
      codes.push((error as { code: string }).code);
    }
    expect(codes.every((code) => code === 'SHARD_UNAVAILABLE' || code === 'CONNECTION_LOST')).toBe(true);
    expect(codes.slice(-3)).toEqual(['SHARD_UNAVAILABLE', 'SHARD_UNAVAILABLE', 'SHARD_UNAVAILABLE']);

    // Several callers at once all get the error too (none left waiting).
    const concurrent = await Promise.all(Array.from({ length: 8 }, () => rejectionOf(router.execute(keyOn('s1'), 'SELECT 1'))));
    expect(concurrent.map((error) => (error as { code: string }).code)).toEqual(Array(8).fill('SHARD_UNAVAILABLE'));

    for (const shardId of ['s0', 's2', 's3']) {
      expect((await router.execute(keyOn(shardId), 'SELECT 1 AS one')).shardId).toBe(shardId);
    }

    await proxy.open();
    // The pool retries connecting; the shard is usable again without a new router.
    let recovered = false;
    for (let attempt = 0; attempt < 100 && !recovered; attempt++) {
      try {
        recovered = (await router.execute(keyOn('s1'), 'SELECT 1 AS one')).rows[0]?.one === 1;
      } catch (error) {
        expect((error as { code: string }).code).toBe('SHARD_UNAVAILABLE');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    expect(recovered).toBe(true);
  });
});
