import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/index.js';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, eventually, rejectionOf, shardUrls, withServer } from '../support/cluster.js';

/**
 * Timeouts and cancellation: a statement stopped by a signal or a timeout is cancelled on the
 * server (pg_stat_activity shows it gone), not just abandoned by the router.
 */

let router: ShardRouter;

/** A pg_sleep(600) statement whose text is unique to this call (found in pg_stat_activity by it). */
function sleeper(): { sql: string; tag: string } {
  const tag = `sleeper_${randomBytes(5).toString('hex')}`;
  return { sql: `SELECT pg_sleep(600) /* ${tag} */`, tag };
}

/** Backends on any server running a statement with `tag`, and whether they are active. */
async function running(tag: string): Promise<{ pid: number; state: string }[]> {
  const all = await Promise.all(
    shardUrls().map((url) =>
      withServer(url, async (client) => {
        const { rows } = await client.query<{ pid: number; state: string }>(
          `SELECT pid, state FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() AND state = 'active'`,
          [tag],
        );
        return rows;
      }),
    ),
  );
  return all.flat();
}

async function startedOnServer(tag: string): Promise<void> {
  await eventually(`${tag} runs on a server`, async () => (await running(tag)).length === 1);
}

beforeAll(async () => {
  router = await connectFreshRouter({ recovery: { intervalMillis: 0, atConnect: false } });
});

afterAll(() => router.close());

describe('execute with a signal or a timeout', () => {
  it('an AbortSignal cancels SELECT pg_sleep(600) on the server and rejects with STATEMENT_CANCELLED (retryable)', async () => {
    const { sql, tag } = sleeper();
    const controller = new AbortController();
    const call = router.execute('sleepy-user', sql, [], { signal: controller.signal });
    call.catch(() => undefined);
    await startedOnServer(tag);
    controller.abort(new Error('the user went away'));
    const error = await rejectionOf(call);
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('STATEMENT_CANCELLED');
    expect((error as ShardRouterError).retryable).toBe(true);
    expect(((error as Error).cause as Error).message).toBe('the user went away');
    // The call settles only once the server stopped the statement.
    expect(await running(tag)).toEqual([]);
    // The router is fine afterwards, and nothing is left borrowed.
    expect((await router.execute('sleepy-user', 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect(router.poolStats()[router.shardFor('sleepy-user')]!.borrowed).toBe(0);
  });

  it('a per-call timeoutMillis cancels it on the server with STATEMENT_TIMEOUT', async () => {
    const { sql, tag } = sleeper();
    const error = await rejectionOf(router.execute('sleepy-user', sql, [], { timeoutMillis: 300 }));
    expect((error as ShardRouterError).code).toBe('STATEMENT_TIMEOUT');
    expect((error as ShardRouterError).retryable).toBe(true);
    expect(await running(tag)).toEqual([]);
  });

  it('a signal that already aborted sends nothing; bad options are INVALID_ARGUMENT', async () => {
    const aborted = AbortSignal.abort();
    const error = await rejectionOf(router.execute('k', 'SELECT 1', [], { signal: aborted }));
    expect((error as ShardRouterError).code).toBe('STATEMENT_CANCELLED');
    for (const options of [{ timeoutMillis: 0 }, { timeoutMillis: 1.5 }, { signal: 'stop' }, 'fast']) {
      const invalid = await rejectionOf(router.execute('k', 'SELECT 1', [], options as never));
      expect((invalid as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('broadcast with a signal', () => {
  it('cancels the shard queries on the servers and rejects with STATEMENT_CANCELLED', async () => {
    const { sql, tag } = sleeper();
    const controller = new AbortController();
    const call = router.broadcast(sql, [], { signal: controller.signal });
    call.catch(() => undefined);
    await startedOnServer(tag);
    controller.abort();
    expect(((await rejectionOf(call)) as ShardRouterError).code).toBe('STATEMENT_CANCELLED');
    await eventually(`${tag} cancelled on the server`, async () => (await running(tag)).length === 0);
  });
});

describe('statementTimeoutMillis in the config', () => {
  let bounded: ShardRouter;
  beforeAll(async () => {
    bounded = await connectFreshRouter({ statementTimeoutMillis: 400, recovery: { intervalMillis: 0, atConnect: false } });
  });
  afterAll(() => bounded.close());

  it('is the statement_timeout of the connections, and ends execute, poolFor and broadcast statements on the server', async () => {
    expect((await bounded.execute('k', 'SHOW statement_timeout')).rows).toEqual([{ statement_timeout: '400ms' }]);
    const first = sleeper();
    const viaExecute = await rejectionOf(bounded.execute('k', first.sql));
    expect((viaExecute as ShardRouterError).code).toBe('STATEMENT_TIMEOUT');
    expect(await running(first.tag)).toEqual([]);
    // poolFor passes PostgreSQL's own error through (57014, statement timeout).
    const second = sleeper();
    const viaPool = await rejectionOf(bounded.poolFor('k').query(second.sql));
    expect((viaPool as { code?: string }).code).toBe('57014');
    const third = sleeper();
    const viaBroadcast = await rejectionOf(bounded.broadcast(third.sql));
    expect((viaBroadcast as ShardRouterError).code).toBe('STATEMENT_TIMEOUT');
    await eventually('no sleeper left', async () => (await running(second.tag)).length + (await running(third.tag)).length === 0);
  });

  it('leaves transactions to their own timeoutMillis', async () => {
    // Longer than statementTimeoutMillis: a transaction bounds its statements by its own deadline.
    const slept = await bounded.transaction(['k'], (tx) => tx.execute('k', 'SELECT 1 AS done FROM pg_sleep(0.6)'));
    expect(slept.rows).toEqual([{ done: 1 }]);
  });
});
