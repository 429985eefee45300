import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCK_CLASS_ID, ShardRouter, ShardRouterError, hashKey } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, eventually, rejectionOf, shardUrls, uniqueName, withServer } from '../support/cluster.js';

/**
 * withLock on real shards (docs/locks.md): tokens, waits, a terminated lock connection, fenced
 * writes, bad input, status. The multi-process counter and the move are in test/chaos/locks.test.ts.
 */

let router: ShardRouter;
let schema: string;
const data = uniqueName('lockdata');

beforeAll(async () => {
  schema = uniqueName('cat');
  router = await connectFreshRouter({
    catalogSchema: schema,
    recovery: { intervalMillis: 0, atConnect: false },
    pool: { connectTimeoutMillis: 30_000, acquireTimeoutMillis: 30_000 },
  });
  for (const id of router.shardIds)
    await router.executeOn(id, `CREATE TABLE ${data} (id text PRIMARY KEY, n integer NOT NULL, token bigint NOT NULL DEFAULT 0)`);
  await router.registerShardedTable(data, 'id');
});

afterAll(async () => {
  await router?.close();
  await dropSchemas(schema);
  await Promise.all(shardUrls().map((url) => withServer(url, (client) => client.query(`DROP TABLE IF EXISTS ${data}`))));
});

/** How many rows the lock tokens table has on every server, summed (nothing written means unchanged). */
async function tokenRows(): Promise<number> {
  let total = 0;
  for (const url of shardUrls().slice(0, 4)) {
    total += await withServer(url, async (client) => {
      const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".lock_tokens`);
      return rows[0]!.n;
    });
  }
  return total;
}

describe('withLock', () => {
  it('runs fn under the lock, returns its value, and the token grows with every acquisition', async () => {
    const key = uniqueName('job');
    const first = await router.withLock(key, async (signal, lock) => {
      expect(signal.aborted).toBe(false);
      expect(lock.shardId).toBe(router.shardFor(key));
      return lock.token;
    });
    const second = await router.withLock(key, (_signal, lock) => lock.token);
    expect(first).toBe(1);
    expect(second).toBe(2);
    // The lock is really an advisory lock in our namespace on the owner, and is released after.
    const seen = await router.withLock(key, () =>
      withServer(shardUrls()[Number(router.shardFor(key).slice(1))]!, async (client) => {
        const { rows } = await client.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2 AND granted",
          [LOCK_CLASS_ID],
        );
        return rows[0]!.n;
      }),
    );
    expect(seen).toBeGreaterThanOrEqual(1);
  });

  it('waitMillis: 0 tries once, waitMillis times out with LOCK_NOT_ACQUIRED (retryable), and the lock is free again afterwards', async () => {
    const key = uniqueName('busy');
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const holding = new Promise<void>((resolve) => (entered = resolve));
    const holder = router.withLock(key, async () => {
      entered();
      await released;
    });
    await holding;
    const once = (await rejectionOf(router.withLock(key, () => 'never', { waitMillis: 0 }))) as ShardRouterError;
    expect(once.code).toBe('LOCK_NOT_ACQUIRED');
    expect(once.retryable).toBe(true);
    const waited = (await rejectionOf(router.withLock(key, () => 'never', { waitMillis: 200 }))) as ShardRouterError;
    expect(waited.code).toBe('LOCK_NOT_ACQUIRED');
    const status = await router.status();
    expect(status.locks.held.filter((lock) => lock.key === key)).toEqual([
      { key, shardId: router.shardFor(key), token: 1, heldMillis: expect.any(Number) },
    ]);
    // Every process's locks per shard, from pg_locks: ours is among them on the owner.
    expect(status.shards.find((shard) => shard.shardId === router.shardFor(key))!.locks.held).toBeGreaterThanOrEqual(1);
    release();
    await holder;
    expect(await router.withLock(key, (_signal, lock) => lock.token, { waitMillis: 0 })).toBe(2);
  });

  it('a waiter gets the lock when the holder releases it', async () => {
    const key = uniqueName('queue');
    const order: string[] = [];
    let entered!: () => void;
    const holding = new Promise<void>((resolve) => (entered = resolve));
    const first = router.withLock(key, async () => {
      entered();
      order.push('first-in');
      await new Promise((resolve) => setTimeout(resolve, 200));
      order.push('first-out');
    });
    await holding;
    const second = router.withLock(key, async () => order.push('second-in'), { waitMillis: 10_000 });
    await eventually('the second caller waits', async () => (await router.status()).locks.waiting.some((lock) => lock.key === key));
    await Promise.all([first, second]);
    expect(order).toEqual(['first-in', 'first-out', 'second-in']);
  });

  it('a terminated lock connection fires the signal; the next holder gets a higher token; the stale holder is fenced', async () => {
    const key = uniqueName('victim');
    // The guarded row lives with the lock: lock.execute runs on the lock key's shard.
    const row = key;
    await router.execute(row, `INSERT INTO ${data} (id, n) VALUES ($1, 0)`, [row]);
    const server = shardUrls()[Number(router.shardFor(key).slice(1))]!;
    let staleLock: Parameters<Parameters<ShardRouter['withLock']>[1]>[1] | undefined;
    const outcome = await rejectionOf(
      router.withLock(key, async (signal, lock) => {
        staleLock = lock;
        // Kill our own lock's backend, found the way an operator would: pg_locks in our namespace.
        await terminateLockOf(server, key);
        await aborted(signal);
        expect((signal.reason as ShardRouterError).code).toBe('LOCK_LOST');
        throw signal.reason;
      }),
    );
    expect((outcome as ShardRouterError).code).toBe('LOCK_LOST');
    const staleToken = staleLock!.token;
    // The next holder: a higher token, and its fenced write goes through.
    const next = await router.withLock(key, async (_signal, lock) => {
      await lock.execute(`UPDATE ${data} SET n = n + 1, token = $2 WHERE id = $1`, [row, lock.token]);
      return lock.token;
    });
    expect(next).toBeGreaterThan(staleToken);
    // The stale holder's late write is refused and changes nothing.
    const refused = (await rejectionOf(staleLock!.execute(`UPDATE ${data} SET n = n + 100 WHERE id = $1`, [row]))) as ShardRouterError;
    expect(refused.code).toBe('LOCK_FENCED');
    const { rows } = await router.execute<{ n: number; token: string }>(row, `SELECT n, token::text FROM ${data} WHERE id = $1`, [row]);
    expect(rows[0]).toEqual({ n: 1, token: String(next) });
  });

  it('fn that resolves after the lock was lost gets LOCK_LOST instead of its value', async () => {
    const key = uniqueName('ignored');
    const server = shardUrls()[Number(router.shardFor(key).slice(1))]!;
    const error = (await rejectionOf(
      router.withLock(key, async (signal) => {
        await terminateLockOf(server, key);
        await aborted(signal);
        return 'done anyway';
      }),
    )) as ShardRouterError;
    expect(error.code).toBe('LOCK_LOST');
    expect((await router.status()).locks.held).toEqual([]);
  });

  it('a bucket move waits for the lock holder on the old owner: no second holder on the new owner until it releases', async () => {
    const key = uniqueName('pinned');
    const bucket = router.bucketFor(key);
    const home = router.shardFor(key);
    const away = router.shardIds.find((id) => id !== home)!;
    const other = await ShardRouter.connect({
      shards: router.shardIds.map((id) => ({ id, connectionString: shardUrls()[Number(id.slice(1))]! })),
      catalogSchema: schema,
      recovery: { intervalMillis: 0, atConnect: false },
    });
    try {
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let entered!: (token: number) => void;
      const holding = new Promise<number>((resolve) => (entered = resolve));
      const holder = router.withLock(key, async (_signal, lock) => {
        entered(lock.token);
        await released;
      });
      const heldToken = await holding;
      const move = router.rebalancer().moveBucket(bucket, away);
      // While the first holder holds on the old owner, the move must not let anyone take the lock,
      // on either shard, whatever map the other router has (without the cutover's gate the switch
      // commits within a second here and the other router then takes the lock on the new owner).
      const attempts: string[] = [];
      for (let i = 0; i < 15; i++) {
        await new Promise((resolve) => setTimeout(resolve, 150));
        await other.refreshMap();
        attempts.push(
          await other
            .withLock(key, (_signal, lock) => `acquired on ${lock.shardId}`, { waitMillis: 0 })
            .catch((error: ShardRouterError) => error.code),
        );
      }
      expect(new Set(attempts)).toEqual(new Set(['LOCK_NOT_ACQUIRED']));
      expect(router.shardFor(key)).toBe(home);
      release();
      await holder;
      await move;
      await other.refreshMap();
      const after = await other.withLock(key, (_signal, lock) => lock, { waitMillis: 5_000 });
      expect(after.shardId).toBe(away);
      expect(after.token).toBeGreaterThan(heldToken);
    } finally {
      await other.close();
    }
  });

  it('a move whose cutover cannot get past a long-held lock fails with LOCK_TIMEOUT and leaves the bucket where it was', async () => {
    const key = uniqueName('long');
    const bucket = router.bucketFor(key);
    const home = router.shardFor(key);
    const away = router.shardIds.find((id) => id !== home)!;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const holding = new Promise<void>((resolve) => (entered = resolve));
    const holder = router.withLock(key, async () => {
      entered();
      await released;
    });
    await holding;
    const error = (await rejectionOf(router.rebalancer({ cutoverLockTimeoutMillis: 50 }).moveBucket(bucket, away))) as ShardRouterError;
    expect(error.code).toBe('LOCK_TIMEOUT');
    release();
    await holder;
    await router.rebalancer().resume({ undo: true });
    await router.refreshMap();
    expect(router.shardFor(key)).toBe(home);
    expect(await router.withLock(key, (_signal, lock) => lock.shardId)).toBe(home);
  });

  it('bad lock keys and options are typed errors before anything is written, and the router stays usable', async () => {
    const before = await tokenRows();
    const cases: [unknown, unknown, unknown, string][] = [
      ['', () => 1, undefined, 'INVALID_KEY'],
      [null, () => 1, undefined, 'INVALID_KEY'],
      [1.5, () => 1, undefined, 'INVALID_KEY'],
      [{ key: 'x' }, () => 1, undefined, 'INVALID_KEY'],
      ['x'.repeat(513), () => 1, undefined, 'INVALID_KEY'],
      ['k', 'not a function', undefined, 'INVALID_ARGUMENT'],
      ['k', () => 1, { waitMillis: -1 }, 'INVALID_ARGUMENT'],
      ['k', () => 1, { waitMillis: 1.5 }, 'INVALID_ARGUMENT'],
      ['k', () => 1, { waitMillis: Number.POSITIVE_INFINITY }, 'INVALID_ARGUMENT'],
      ['k', () => 1, { leaseMillis: 10 }, 'INVALID_ARGUMENT'],
      ['k', () => 1, { leaseMillis: '1000' }, 'INVALID_ARGUMENT'],
      ['k', () => 1, { waitMilis: 10 }, 'INVALID_ARGUMENT'],
      ['k', () => 1, 'fast', 'INVALID_ARGUMENT'],
      ['k', () => 1, null, 'INVALID_ARGUMENT'],
    ];
    for (const [key, fn, options, code] of cases) {
      // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong argument types
      const error = await rejectionOf(() => router.withLock(key as any, fn as any, options as any));
      expect(error, `${String(key).slice(0, 10)} ${JSON.stringify(options)}`).toBeInstanceOf(ShardRouterError);
      expect((error as ShardRouterError).code).toBe(code);
    }
    expect(await tokenRows()).toBe(before);
    expect(await router.withLock('still-usable', () => 'ok')).toBe('ok');
  });
});

/** Terminates the backend holding lock `key` on a server (found in pg_locks by our classid and the key's hash). */
async function terminateLockOf(server: string, key: string): Promise<void> {
  const killed = await withServer(server, (client) =>
    client.query(
      "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2::oid AND objsubid = 2 AND granted",
      [LOCK_CLASS_ID, hashKey(key)],
    ),
  );
  expect(killed.rowCount).toBe(1);
}

/** Resolves once `signal` has aborted (at once if it already has). */
function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
