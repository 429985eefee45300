import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QueryError, ShardRouter, ShardRouterError } from '../../src/index.js';
import { testHooks } from '../../src/twopc/test-hooks.js';
import { connectFreshRouter, dropSchemas, rejectionOf, shardConfigs, uniqueName, withServer } from '../support/cluster.js';
import { keyOn, keysOn } from '../support/keys.js';

const data = uniqueName('tx');
let router: ShardRouter;
let catalog: string;
let serial = 0;

/** Keys never used before in this file, one per listed shard. */
function freshKeys(...shardIds: string[]): string[] {
  return keysOn(router, shardIds, `acct${serial++}`);
}

async function balances(keys: readonly string[]): Promise<(number | null)[]> {
  return Promise.all(
    keys.map(async (key) => {
      const { rows } = await router.execute<{ balance: string }>(key, `SELECT balance FROM ${data}.accounts WHERE id = $1`, [key]);
      return rows[0] ? Number(rows[0].balance) : null;
    }),
  );
}

/** This cluster's prepared transactions on every server, read directly. */
async function preparedEverywhere(): Promise<string[]> {
  const prefix = `psr:${router.clusterId}:`;
  const lists = await Promise.all(
    shardConfigs().map(({ connectionString }) =>
      withServer(
        connectionString,
        async (client) =>
          (await client.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [prefix])).rows,
      ),
    ),
  );
  return lists.flat().map((row) => row.gid);
}

async function terminate(shardId: string, pid: number | undefined): Promise<void> {
  const url = shardConfigs().find((shard) => shard.id === shardId)!.connectionString;
  await withServer(url, (client) => client.query('SELECT pg_terminate_backend($1)', [pid]));
}

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.accounts (id text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0))`);
  }
});

afterEach(() => {
  testHooks.fault = undefined;
  testHooks.statement = undefined;
});

afterAll(async () => {
  await router.close();
  await dropSchemas(data, catalog);
});

/** Inserts the keys with a balance of 100 each, in one cross-shard transaction. */
async function open(keys: readonly string[]): Promise<void> {
  await router.transaction(keys, async (tx) => {
    for (const key of keys) await tx.execute(key, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 100)`, [key]);
  });
}

function transfer(from: string, to: string, amount: number) {
  return router.transaction([from, to], async (tx) => {
    await tx.execute(from, `UPDATE ${data}.accounts SET balance = balance - $2 WHERE id = $1`, [from, amount]);
    await tx.execute(to, `UPDATE ${data}.accounts SET balance = balance + $2 WHERE id = $1`, [to, amount]);
    return 'done';
  });
}

describe('router.transaction: commit and rollback', () => {
  it('commits on three shards, returns the callback value, leaves nothing prepared and a commit decision on the decision shard', async () => {
    const keys = freshKeys('s0', 's1', 's2');
    let gid: string | undefined;
    testHooks.fault = (context) => {
      if (context.point === 'before-decision') gid = context.gid;
    };
    await open(keys);
    expect(await balances(keys)).toEqual([100, 100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
    // The decision shard is the first key's: s0.
    expect(gid).toMatch(new RegExp(`^psr:${router.clusterId}:s0:`));
    const decision = await router.executeOn('s0', `SELECT outcome FROM ${catalog}.twopc_decisions WHERE gid = $1`, [gid]);
    expect(decision.rows).toEqual([{ outcome: 'commit' }]);
  });

  it('rolls back every shard and rethrows the very error when the callback throws', async () => {
    const keys = freshKeys('s0', 's1');
    await open(keys);
    const failure = new Error('changed my mind');
    const thrown = await rejectionOf(
      router.transaction(keys, async (tx) => {
        await tx.execute(keys[0]!, `UPDATE ${data}.accounts SET balance = 0 WHERE id = $1`, [keys[0]]);
        await tx.execute(keys[1]!, `UPDATE ${data}.accounts SET balance = 0 WHERE id = $1`, [keys[1]]);
        throw failure;
      }),
    );
    expect(thrown).toBe(failure);
    expect(await balances(keys)).toEqual([100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('treats a participant whose transaction already failed as a no vote: TRANSACTION_ABORTED, nothing committed anywhere', async () => {
    const keys = freshKeys('s1', 's2');
    await open(keys);
    const error = await rejectionOf(
      router.transaction(keys, async (tx) => {
        await tx.execute(keys[0]!, `UPDATE ${data}.accounts SET balance = 1 WHERE id = $1`, [keys[0]]);
        // The CHECK fails on the second shard; the callback swallows the error and returns.
        await tx.execute(keys[1]!, `UPDATE ${data}.accounts SET balance = -1 WHERE id = $1`, [keys[1]]).catch(() => undefined);
      }),
    );
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('TRANSACTION_ABORTED');
    expect((error as ShardRouterError).shardId).toBe('s2');
    expect((error as Error).cause).toBeInstanceOf(QueryError);
    expect(((error as Error).cause as QueryError).sqlState).toBe('23514');
    expect(await balances(keys)).toEqual([100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('a failed statement on the decision shard is a no vote too', async () => {
    const keys = freshKeys('s3', 's0');
    await open(keys);
    const error = await rejectionOf(
      router.transaction(keys, async (tx) => {
        await tx.execute(keys[0]!, `UPDATE ${data}.accounts SET balance = -5 WHERE id = $1`, [keys[0]]).catch(() => undefined);
        await tx.execute(keys[1]!, `UPDATE ${data}.accounts SET balance = 7 WHERE id = $1`, [keys[1]]);
      }),
    );
    expect((error as ShardRouterError).code).toBe('TRANSACTION_ABORTED');
    expect(await balances(keys)).toEqual([100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('a one-shard transaction is BEGIN ... COMMIT on that shard: no PREPARE, no decision row', async () => {
    const [a] = freshKeys('s1');
    const b = keyOn(router, 's1', `other${serial++}`);
    const sent: string[] = [];
    testHooks.statement = (shardId, sql) => sent.push(`${shardId}: ${sql.split(' ')[0]}`);
    await router.transaction([a!, b], async (tx) => {
      await tx.execute(a!, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 5)`, [a]);
      await tx.execute(b, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 6)`, [b]);
    });
    expect(sent).toEqual(['s1: BEGIN', 's1: INSERT', 's1: INSERT', 's1: COMMIT']);
    expect(await balances([a!, b])).toEqual([5, 6]);
  });

  it('keys declared on several shards but work on one commits in one phase; an unused shard gets no statement', async () => {
    const keys = freshKeys('s0', 's2');
    const sent: string[] = [];
    testHooks.statement = (shardId, sql) => sent.push(`${shardId}: ${sql.split(' ')[0]}`);
    await router.transaction(keys, async (tx) => {
      await tx.execute(keys[1]!, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 9)`, [keys[1]]);
    });
    expect(sent).toEqual(['s2: BEGIN', 's2: INSERT', 's2: COMMIT']);
  });

  it('a two-shard transaction sends PREPARE to every participant but the decision shard, and COMMIT PREPARED only after its decision commit', async () => {
    const keys = freshKeys('s2', 's0', 's3');
    await open(keys);
    const sent: string[] = [];
    testHooks.statement = (shardId, sql) => sent.push(`${shardId}: ${sql.split(' ').slice(0, 2).join(' ')}`);
    await router.transaction(keys, async (tx) => {
      for (const key of keys) await tx.execute(key, `UPDATE ${data}.accounts SET balance = balance + 1 WHERE id = $1`, [key]);
    });
    const prepares = sent.filter((line) => line.includes('PREPARE TRANSACTION'));
    expect(prepares.sort()).toEqual(['s0: PREPARE TRANSACTION', 's3: PREPARE TRANSACTION']);
    const commitAt = sent.indexOf('s2: INSERT INTO');
    expect(commitAt).toBeGreaterThan(Math.max(...prepares.map((line) => sent.indexOf(line))));
    const finishes = sent.filter((line) => line.includes('COMMIT PREPARED'));
    expect(finishes.sort()).toEqual(['s0: COMMIT PREPARED', 's3: COMMIT PREPARED']);
    for (const line of finishes) expect(sent.indexOf(line)).toBeGreaterThan(commitAt);
    expect(await balances(keys)).toEqual([101, 101, 101]);
  });
});

describe('router.transaction: misuse gets typed errors and leaves the router usable', () => {
  it('rejects a key whose shard was not declared (no silent widening), and the transaction rolls back', async () => {
    const keys = freshKeys('s0', 's1');
    const outsider = keyOn(router, 's3', `out${serial++}`);
    const error = await rejectionOf(
      router.transaction(keys, async (tx) => {
        await tx.execute(keys[0]!, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 1)`, [keys[0]]);
        await tx.execute(outsider, 'SELECT 1');
      }),
    );
    expect((error as ShardRouterError).code).toBe('KEY_NOT_IN_TRANSACTION');
    expect((error as ShardRouterError).shardId).toBe('s3');
    expect(await balances([keys[0]!])).toEqual([null]);
    expect((await router.execute(outsider, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('a parameter pg cannot send on the first statement is INVALID_ARGUMENT, and the transaction stays usable', async () => {
    const keys = freshKeys('s1', 's2');
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await router.transaction(keys, async (tx) => {
      // The first statement rides with BEGIN in one pipeline; its bind fails on the client.
      const error = await rejectionOf(tx.execute(keys[0]!, 'SELECT $1::jsonb', [circular]));
      expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', shardId: 's1' });
      for (const key of keys) await tx.execute(key, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 3)`, [key]);
    });
    expect(await balances(keys)).toEqual([3, 3]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('refuses tx use after the callback settled', async () => {
    const [key] = freshKeys('s2');
    let leaked: { execute: (key: string, sql: string) => Promise<unknown> } | undefined;
    await router.transaction([key!], async (tx) => {
      leaked = tx;
    });
    const error = await rejectionOf(leaked!.execute(key!, 'SELECT 1'));
    expect((error as ShardRouterError).code).toBe('TRANSACTION_CLOSED');
  });

  it('validates keys, callback and options before touching a shard', async () => {
    expect((await rejectionOf(router.transaction([], async () => 1))) as ShardRouterError).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((await rejectionOf(router.transaction([''], async () => 1))) as ShardRouterError).toMatchObject({ code: 'INVALID_KEY' });
    expect((await rejectionOf(router.transaction(['a'], 'nope' as never))) as ShardRouterError).toMatchObject({ code: 'INVALID_ARGUMENT' });
    for (const options of [{ isolation: 'chaos' }, { timeoutMillis: 0 }, { lockTimeoutMillis: 1.5 }, { readOnly: 'yes' }, { retries: 3 }]) {
      const error = await rejectionOf(router.transaction(['a'], async () => 1, options as never));
      expect(error).toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    expect(router.poolStats().s0!.borrowed).toBe(0);
  });

  it('applies isolation and read-only on every participant', async () => {
    const keys = freshKeys('s0', 's1');
    const seen = await router.transaction(
      keys,
      async (tx) =>
        Promise.all(
          keys.map(
            async (key) =>
              (await tx.execute<{ level: string }>(key, 'SELECT current_setting($1) AS level', ['transaction_isolation'])).rows[0]!.level,
          ),
        ),
      { isolation: 'serializable' },
    );
    expect(seen).toEqual(['serializable', 'serializable']);
    const error = await rejectionOf(
      router.transaction(keys, (tx) => tx.execute(keys[1]!, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 1)`, [keys[1]]), {
        readOnly: true,
      }),
    );
    expect((error as QueryError).sqlState).toBe('25006');
  });
});

describe('router.transaction: timeouts and lock cycles', () => {
  it('ends a callback that outlives timeoutMillis with TRANSACTION_TIMEOUT and rolls it back', async () => {
    const keys = freshKeys('s1', 's3');
    const error = await rejectionOf(
      router.transaction(
        keys,
        async (tx) => {
          await tx.execute(keys[0]!, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 1)`, [keys[0]]);
          await new Promise((resolve) => setTimeout(resolve, 1_500));
          await tx.execute(keys[1]!, `INSERT INTO ${data}.accounts (id, balance) VALUES ($1, 1)`, [keys[1]]);
        },
        { timeoutMillis: 300 },
      ),
    );
    expect(error).toMatchObject({ code: 'TRANSACTION_TIMEOUT', retryable: true });
    expect(await balances(keys)).toEqual([null, null]);
  });

  it('ends a statement that runs past the deadline with TRANSACTION_TIMEOUT (server-side statement_timeout)', async () => {
    const keys = freshKeys('s2', 's0');
    const error = await rejectionOf(router.transaction(keys, (tx) => tx.execute(keys[0]!, 'SELECT pg_sleep(5)'), { timeoutMillis: 400 }));
    expect(error).toMatchObject({ code: 'TRANSACTION_TIMEOUT' });
  });

  it('breaks a lock cycle across two shards with a retryable LOCK_TIMEOUT; the other transaction commits', async () => {
    const [a, b] = freshKeys('s0', 's1');
    await open([a!, b!]);
    let arrived = 0;
    let release: () => void = () => undefined;
    const bothHoldFirstLock = new Promise<void>((resolve) => (release = resolve));
    const cross = (first: string, second: string) =>
      router.transaction(
        [first, second],
        async (tx) => {
          await tx.execute(first, `UPDATE ${data}.accounts SET balance = balance + 1 WHERE id = $1`, [first]);
          if (++arrived === 2) release();
          await bothHoldFirstLock;
          await tx.execute(second, `UPDATE ${data}.accounts SET balance = balance + 1 WHERE id = $1`, [second]);
        },
        { lockTimeoutMillis: 300, timeoutMillis: 30_000 },
      );
    const outcomes = await Promise.allSettled([cross(a!, b!), cross(b!, a!)]);
    const failures = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as ShardRouterError] : []));
    expect(failures.length).toBeGreaterThanOrEqual(1);
    for (const failure of failures) expect(failure).toMatchObject({ code: 'LOCK_TIMEOUT', retryable: true });
    // Whatever committed did so on both shards: the two balances moved together.
    const [balanceA, balanceB] = await balances([a!, b!]);
    expect(balanceA).toBe(balanceB);
    expect(balanceA).toBe(100 + (2 - failures.length));
  });
});

describe('router.transaction: participant failures', () => {
  it('a backend terminated before its PREPARE means rollback everywhere', async () => {
    const keys = freshKeys('s0', 's1', 's2');
    await open(keys);
    testHooks.fault = async (context) => {
      if (context.point === 'before-prepare' && context.shardId === 's2') await terminate('s2', context.backendPid);
    };
    const error = await rejectionOf(transfer(keys[0]!, keys[2]!, 10));
    expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED', shardId: 's2' });
    testHooks.fault = undefined;
    expect(await balances(keys)).toEqual([100, 100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('a backend terminated right after its PREPARE (outcome unknown to the coordinator) still rolls back everywhere', async () => {
    const keys = freshKeys('s1', 's3');
    await open(keys);
    testHooks.fault = async (context) => {
      if (context.point === 'after-prepare') throw new Error('injected: lost the answer to PREPARE');
    };
    const error = await rejectionOf(transfer(keys[0]!, keys[1]!, 10));
    expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED' });
    testHooks.fault = undefined;
    expect(await balances(keys)).toEqual([100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('a backend terminated during COMMIT PREPARED: success, and the coordinator finishes it on a fresh connection', async () => {
    const keys = freshKeys('s2', 's3');
    await open(keys);
    testHooks.fault = async (context) => {
      if (context.point === 'before-commit-prepared' && context.attempt === 1) await terminate(context.shardId, context.backendPid);
    };
    expect(await transfer(keys[0]!, keys[1]!, 30)).toBe('done');
    expect(await balances(keys)).toEqual([70, 130]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('COMMIT PREPARED failing twice: success is still returned and recovery completes the commit', async () => {
    const keys = freshKeys('s0', 's3');
    await open(keys);
    testHooks.fault = async (context) => {
      if (context.point !== 'before-commit-prepared') return;
      if (context.attempt === 1) await terminate(context.shardId, context.backendPid);
      else throw new Error('injected: participant still unreachable');
    };
    expect(await transfer(keys[0]!, keys[1]!, 40)).toBe('done');
    testHooks.fault = undefined;
    const left = await preparedEverywhere();
    expect(left).toHaveLength(1);
    // The participant's half is prepared, not visible yet; recovery commits it from the decision.
    const report = await router.recover({ graceMillis: 0 });
    // Prepared under `<gid>:<participant>`; the report names the transaction's gid.
    expect(left).toEqual([`${report.committed[0]?.gid}:s3`]);
    expect(report.committed).toHaveLength(1);
    expect(report.shards.s3).toMatchObject({ committed: 1, inDoubt: 0 });
    expect(await balances(keys)).toEqual([60, 140]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('a lost connection at the commit point is resolved by asking the decision shard: committed means success', async () => {
    const keys = freshKeys('s1', 's2');
    await open(keys);
    testHooks.fault = (context) => {
      if (context.point === 'after-decision') throw new Error('injected: the answer to COMMIT was lost');
    };
    expect(await transfer(keys[0]!, keys[1]!, 5)).toBe('done');
    expect(await balances(keys)).toEqual([95, 105]);
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('recovery aborts a transaction prepared but not yet decided: TRANSACTION_ABORTED, retryable, nothing committed', async () => {
    const keys = freshKeys('s2', 's0');
    await open(keys);
    testHooks.fault = async (context) => {
      // Between the PREPAREs and the decision: recovery (grace 0) sees the voter prepared,
      // writes 'abort' on the decision shard and rolls the voter back.
      if (context.point === 'before-decision') await router.recover({ graceMillis: 0 });
    };
    const error = await rejectionOf(transfer(keys[0]!, keys[1]!, 5));
    testHooks.fault = undefined;
    expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED', retryable: true });
    expect((error as Error).message).toContain('recovery had already decided to abort it');
    expect(await balances(keys)).toEqual([100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
    // Run again, it commits.
    expect(await transfer(keys[0]!, keys[1]!, 5)).toBe('done');
    expect(await balances(keys)).toEqual([95, 105]);
  });

  it('the decision shard killed before its COMMIT: the outcome is learned (abort), the prepared side is rolled back', async () => {
    const keys = freshKeys('s3', 's1');
    await open(keys);
    testHooks.fault = async (context) => {
      if (context.point === 'before-decision') await terminate(context.shardId, context.backendPid);
    };
    const error = await rejectionOf(transfer(keys[0]!, keys[1]!, 5));
    expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED', shardId: 's3' });
    testHooks.fault = undefined;
    expect(await balances(keys)).toEqual([100, 100]);
    expect(await preparedEverywhere()).toEqual([]);
  });
});

describe('recovery', () => {
  it('settles orphans from the durable decision and collects decision rows only when no one can need them', async () => {
    const [key0, key1] = freshKeys('s0', 's1');
    await open([key0!, key1!]);
    const prefix = `psr:${router.clusterId}`;
    const gid = (tag: string) => `${prefix}:s0:${tag}-${'0'.repeat(16)}`;
    const s1 = shardConfigs()[1]!.connectionString;
    const s0 = shardConfigs()[0]!.connectionString;
    // Orphans on s1 decided by s0: one with a commit row, one without any row.
    await withServer(s1, async (client) => {
      await client.query('BEGIN');
      await client.query(`UPDATE ${data}.accounts SET balance = 1 WHERE id = $1`, [key1]);
      await client.query(`PREPARE TRANSACTION '${gid('committed')}'`);
      await client.query('BEGIN');
      await client.query(`INSERT INTO ${data}.accounts (id, balance) VALUES ('orphan-${serial++}', 2)`);
      await client.query(`PREPARE TRANSACTION '${gid('undecided')}'`);
    });
    await withServer(s0, async (client) => {
      await client.query(
        `INSERT INTO ${catalog}.twopc_decisions (gid, outcome, created_at, keep_until) VALUES ($1, 'commit', now() - interval '10 minutes', now() - interval '1 minute')`,
        [gid('committed')],
      );
      // Old rows of finished transactions: a commit row (nothing prepared) and an abort row past retention.
      await client.query(
        `INSERT INTO ${catalog}.twopc_decisions (gid, outcome, created_at, keep_until) VALUES ($1, 'commit', now() - interval '10 minutes', now() - interval '1 minute')`,
        [gid('finished')],
      );
      await client.query(
        `INSERT INTO ${catalog}.twopc_decisions (gid, outcome, created_at) VALUES ($1, 'abort', now() - interval '25 hours')`,
        [gid('ancient')],
      );
      // A commit row still inside its keep window (its coordinator may yet settle): kept.
      await client.query(
        `INSERT INTO ${catalog}.twopc_decisions (gid, outcome, created_at, keep_until) VALUES ($1, 'commit', now() - interval '10 minutes', now() + interval '1 hour')`,
        [gid('kept')],
      );
      await client.query(
        `INSERT INTO ${catalog}.twopc_decisions (gid, outcome, created_at) VALUES ($1, 'abort', now() - interval '1 hour')`,
        [gid('recent')],
      );
    });

    const report = await router.recover({ graceMillis: 0 });
    expect(report.committed.map((settled) => settled.gid)).toEqual([gid('committed')]);
    expect(report.rolledBack.map((settled) => settled.gid)).toEqual([gid('undecided')]);
    expect(report.inDoubt).toEqual([]);
    expect(report.shards.s1).toMatchObject({ prepared: 2, committed: 1, rolledBack: 1 });
    // 'finished' and 'ancient' went, and 'committed' too: it was read before the listing and this
    // pass finished every listed participant of it.
    expect(report.decisionsCollected).toBe(3);
    expect(await balances([key1!])).toEqual([1]);
    const rows = async () =>
      (
        await withServer(s0, (client) =>
          client.query<{ gid: string; outcome: string }>(
            `SELECT gid, outcome FROM ${catalog}.twopc_decisions WHERE gid LIKE $1 ORDER BY gid`,
            [`${prefix}:s0:%-0000000000000000`],
          ),
        )
      ).rows;
    expect(await rows()).toEqual([
      { gid: gid('kept'), outcome: 'commit' },
      { gid: gid('recent'), outcome: 'abort' },
      { gid: gid('undecided'), outcome: 'abort' },
    ]);
    const second = await router.recover({ graceMillis: 0 });
    expect(second.decisionsCollected).toBe(0);
    expect((await rows()).map((row) => row.gid)).toEqual([gid('kept'), gid('recent'), gid('undecided')]);
  });

  it('leaves prepared transactions younger than the grace age to their coordinator', async () => {
    const s2 = shardConfigs()[2]!.connectionString;
    const gid = `psr:${router.clusterId}:s0:young-${'1'.repeat(16)}`;
    await withServer(s2, async (client) => {
      await client.query('BEGIN');
      await client.query(`PREPARE TRANSACTION '${gid}'`);
    });
    const report = await router.recover({ graceMillis: 60_000 });
    expect(report.shards.s2).toMatchObject({ prepared: 1, tooYoung: 1, committed: 0, rolledBack: 0 });
    const status = await router.status();
    const listed = status.shards.find((shard) => shard.shardId === 's2')!.preparedTransactions;
    expect(listed).toEqual([expect.objectContaining({ gid, ours: true })]);
    expect(status.shards.every((shard) => shard.reachable && shard.maxPreparedTransactions > 0)).toBe(true);
    await router.recover({ graceMillis: 0 });
    expect(await preparedEverywhere()).toEqual([]);
  });

  it('ignores prepared transactions of other clusters and look-alike gids (exact prefix, not LIKE)', async () => {
    const s3 = shardConfigs()[3]!.connectionString;
    // `_` would match any character in LIKE; this gid differs from our prefix only there.
    const lookalike = `psr:${router.clusterId.replace(/-/g, '_')}:s0:x-${'2'.repeat(16)}`;
    await withServer(s3, async (client) => {
      await client.query('BEGIN');
      await client.query(`PREPARE TRANSACTION '${lookalike}'`);
    });
    try {
      const report = await router.recover({ graceMillis: 0 });
      expect(report.shards.s3).toMatchObject({ prepared: 0 });
      const status = await router.status();
      expect(status.shards.find((shard) => shard.shardId === 's3')!.preparedTransactions).toEqual([
        expect.objectContaining({ gid: lookalike, ours: false }),
      ]);
    } finally {
      await withServer(s3, (client) => client.query(`ROLLBACK PREPARED '${lookalike}'`));
    }
  });
});

describe('two routers recovering concurrently while transactions run', () => {
  it('never produces a wrong outcome: acknowledged transfers are on both shards, failed ones on neither', async () => {
    const other = await ShardRouter.connect({
      shards: shardConfigs(),
      catalogSchema: catalog,
      recovery: { intervalMillis: 0, atConnect: false },
    });
    const accounts = Array.from({ length: 8 }, (_, i) => keyOn(router, `s${i % 4}`, `race${serial++}`));
    await open(accounts);
    await router.executeOn('s0', `CREATE TABLE IF NOT EXISTS ${data}.transfers (id text PRIMARY KEY)`);
    for (const shardId of router.shardIds)
      await router.executeOn(shardId, `CREATE TABLE IF NOT EXISTS ${data}.legs (transfer text, account text, delta bigint)`);
    let running = true;
    const recoverers = [router, other].map(async (r) => {
      let passes = 0;
      while (running) {
        await r.recover({ graceMillis: 0 });
        passes++;
      }
      return passes;
    });
    const acknowledged: string[] = [];
    const failed: string[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async (_, worker) => {
        for (let i = 0; i < 15; i++) {
          const from = accounts[(worker + i) % 8]!;
          const to = accounts[(worker + i + 1) % 8]!;
          const id = `w${worker}-${i}`;
          try {
            await router.transaction([from, to], async (tx) => {
              await tx.execute(from, `UPDATE ${data}.accounts SET balance = balance - 1 WHERE id = $1`, [from]);
              await tx.execute(from, `INSERT INTO ${data}.legs VALUES ($1, $2, -1)`, [id, from]);
              await tx.execute(to, `UPDATE ${data}.accounts SET balance = balance + 1 WHERE id = $1`, [to]);
              await tx.execute(to, `INSERT INTO ${data}.legs VALUES ($1, $2, 1)`, [id, to]);
            });
            acknowledged.push(id);
          } catch (error) {
            expect(error).toMatchObject({ code: 'TRANSACTION_ABORTED' });
            failed.push(id);
          }
        }
      }),
    );
    running = false;
    expect(Math.min(...(await Promise.all(recoverers)))).toBeGreaterThan(0);
    await router.recover({ graceMillis: 0 });
    await other.close();
    expect(await preparedEverywhere()).toEqual([]);
    const legs = new Map<string, number>();
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ transfer: string; n: string }>(
        shardId,
        `SELECT transfer, count(*)::text AS n FROM ${data}.legs GROUP BY transfer`,
      );
      for (const row of rows) legs.set(row.transfer, (legs.get(row.transfer) ?? 0) + Number(row.n));
    }
    for (const id of acknowledged) expect(legs.get(id), id).toBe(2);
    for (const id of failed) expect(legs.get(id), id).toBeUndefined();
    expect(acknowledged.length + failed.length).toBe(60);
    const total = (await balances(accounts)).reduce((sum, balance) => sum! + balance!, 0);
    expect(total).toBe(800);
  });
});
