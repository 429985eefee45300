import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { Logger } from '../../src/index.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import { dropSchemas, eventually, rejectionOf, shardConfigs, uniqueName } from '../support/cluster.js';
import { keyOn, keysOn } from '../support/keys.js';
import { TcpProxy } from '../support/tcp-proxy.js';

/**
 * The logger, against real shards: moves and map changes, stale-map retries, recovery, a shard
 * going down and up. Every entry is checked for passwords and parameter values.
 */

interface Entry {
  readonly level: keyof Logger;
  readonly obj: Record<string, unknown>;
  readonly msg: string;
}

function recordingLogger(): Logger & { entries: Entry[]; events(name: string): Entry[] } {
  const entries: Entry[] = [];
  const record = (level: keyof Logger) => (obj: Record<string, unknown>, msg: string) => entries.push({ level, obj, msg });
  return {
    entries,
    events: (name) => entries.filter((entry) => entry.obj.event === name),
    debug: record('debug'),
    info: record('info'),
    warn: record('warn'),
    error: record('error'),
  };
}

const SECRET = 'param-value-91c2';
const data = uniqueName('log');
const catalogSchema = uniqueName('cat');
const log = recordingLogger();
const staleLog = recordingLogger();
let proxy: TcpProxy;
let router: ShardRouter;
let stale: ShardRouter;

beforeAll(async () => {
  const shards = shardConfigs();
  // s3 is reached through a proxy the last test cuts and restores.
  proxy = await TcpProxy.start(shards[3]!.connectionString);
  shards[3] = { id: 's3', connectionString: proxy.urlFor(shards[3]!.connectionString) };
  const config = { shards, catalogSchema, recovery: { intervalMillis: 0, atConnect: false }, pool: { connectTimeoutMillis: 2000 } };
  router = await ShardRouter.connect({ ...config, logger: log });
  // Learns of new maps only when a fence refuses it.
  stale = await ShardRouter.connect({ ...config, logger: staleLog, mapRefresh: { listen: false, intervalMillis: 0 } });
  await router.broadcast(`CREATE SCHEMA ${data}`);
  await router.broadcast(`CREATE TABLE ${data}.items (id text PRIMARY KEY, n int NOT NULL)`);
  await router.registerShardedTable(`${data}.items`, 'id');
  await stale.refreshMap();
});

afterAll(async () => {
  testHooks.fault = undefined;
  await stale?.close();
  await router?.close();
  await proxy?.cut();
  await dropSchemas(data, catalogSchema);
  const everything = JSON.stringify([...log.entries, ...staleLog.entries]);
  expect(everything).not.toContain(SECRET);
  for (const { connectionString } of shardConfigs()) {
    const password = decodeURIComponent(new URL(connectionString).password);
    if (password !== '') expect(everything).not.toContain(password);
  }
});

describe('logger', () => {
  it('logs a bucket move, the map change, and a stale-map retry on the router that missed it', async () => {
    const key = keyOn(router, 's0', 'moved');
    await router.execute(key, `INSERT INTO ${data}.items (id, n) VALUES ($1, 1)`, [key]);
    const versionBefore = router.bucketMap.version;
    await router.rebalancer().moveBucket(router.bucketFor(key), 's2');
    const [started] = log.events('move.started');
    expect(started).toMatchObject({ level: 'info', obj: { source: 's0', target: 's2', buckets: 1 } });
    const [finished] = log.events('move.finished');
    expect(finished!.obj).toMatchObject({ source: 's0', target: 's2', rowsCopied: 1, mapVersion: router.bucketMap.version });
    expect(log.events('map.changed').at(-1)!.obj).toMatchObject({ to: router.bucketMap.version });
    const moves = router.metrics().moves;
    expect(moves).toMatchObject({ completed: 1, failed: 0, bucketsMoved: 1, rowsCopied: 1 });

    // `stale` still routes the key to s0, whose fence refuses the write; it refreshes and retries.
    expect(stale.bucketMap.version).toBe(versionBefore);
    await stale.execute(key, `UPDATE ${data}.items SET n = n + 1 WHERE id = $1 AND $2::text IS NOT NULL`, [key, SECRET]);
    expect(staleLog.events('map.stale_retry')).toHaveLength(1);
    expect(staleLog.events('map.stale_retry')[0]!.obj).toMatchObject({ mapVersion: versionBefore, shardId: 's0' });
    expect(staleLog.events('map.changed')[0]!.obj).toEqual({ event: 'map.changed', from: versionBefore, to: router.bucketMap.version });
    expect(stale.metrics().staleMapRetries).toBe(1);
  });

  it('logs a 2PC left prepared and the recovery that commits it', async () => {
    const [a, b] = keysOn(router, ['s0', 's1'], 'left');
    testHooks.fault = (context) => {
      if (context.point === 'before-commit-prepared') throw new Error('injected: the voter is unreachable');
    };
    try {
      await router.transaction([a!, b!], async (tx) => {
        await tx.execute(a!, `INSERT INTO ${data}.items (id, n) VALUES ($1, 1)`, [a]);
        await tx.execute(b!, `INSERT INTO ${data}.items (id, n) VALUES ($1, 1)`, [b]);
      });
    } finally {
      testHooks.fault = undefined;
    }
    const [left] = log.events('twopc.left_prepared');
    expect(left!.level).toBe('warn');
    await router.recover({ graceMillis: 0 });
    const committed = log.events('recovery.committed');
    expect(committed.map((entry) => entry.obj)).toEqual([{ event: 'recovery.committed', gid: left!.obj.gid, shardId: 's1' }]);
  });

  it('logs a shard going down and coming back up, and the router keeps working with a logger that throws', async () => {
    const key = keyOn(router, 's3', 'down');
    await router.execute(key, 'SELECT 1');
    await proxy.cut();
    await eventually('s3 reported down', async () => {
      await rejectionOf(router.execute(key, 'SELECT 1'));
      return log.events('shard.down').length > 0;
    });
    expect(log.events('shard.down')[0]).toMatchObject({ level: 'error', obj: { shardId: 's3' } });
    expect(router.metrics().pools.s3!.up).toBe(false);
    await proxy.open();
    await eventually('s3 back', async () => {
      try {
        await router.execute(key, 'SELECT 1');
        return true;
      } catch {
        return false;
      }
    });
    expect(log.events('shard.up')[0]).toMatchObject({ level: 'info', obj: { shardId: 's3' } });
    expect(router.metrics().pools.s3!.up).toBe(true);

    const throwing = { debug: boom, info: boom, warn: boom, error: boom };
    const other = await ShardRouter.connect({ shards: shardConfigs(2), catalogSchema: uniqueName('cat'), logger: throwing });
    try {
      expect((await other.execute('k', 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await other.close();
    }
  });

  it('refuses a logger without the four methods with INVALID_CONFIG', async () => {
    const error = await rejectionOf(ShardRouter.connect({ shards: shardConfigs(1), logger: { info() {} } as unknown as Logger }));
    expect(error).toMatchObject({ code: 'INVALID_CONFIG' });
    expect((error as Error).message).toContain('logger');
  });
});

function boom(): never {
  throw new Error('a broken logger');
}
