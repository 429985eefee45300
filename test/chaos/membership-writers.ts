import { ShardRouterError } from '../../src/index.js';
import type { ShardRouter } from '../../src/index.js';
import { seededRandom } from '../support/random.js';

/**
 * Writers of rebalance-membership.test.ts, shared by the parent and its application child (so
 * no vitest here). Sharded writes go through `execute`: insert, update or delete of one account,
 * each appending to the ledger (no primary key, so a row copied twice would show) in the same
 * statement. Reference writes go through `broadcast`: insert of a code with v = 1, then
 * `v = v + 1` updates (relative, so one missed on some shard stays visible there for good).
 *
 * Every loop owns its keys or codes, so the acknowledged writes to one key are ordered, and each
 * acknowledged write is reported, in order, through `events`.
 */

export interface MembershipTables {
  readonly accounts: string;
  readonly ledger: string;
  readonly reference: string;
}

export interface WriterEvents {
  /** A sharded write was acknowledged: the key's balance after it, -1 for a delete. */
  ack(key: string, after: number): void;
  /** A sharded write whose outcome could not be learned: the key holds `before` or `after` (-1: absent); no more writes to it. */
  pending(key: string, before: number, after: number): void;
  /** A reference write was acknowledged: the code's v after it, and the broadcast's rowCount (summed over the shards it wrote). */
  ref(code: string, v: number, rowCount: number): void;
  /** A reference write whose outcome is unknown: the code holds `before` or `after` (-1: absent); no more writes to it. */
  refPending(code: string, before: number, after: number): void;
  /** A write failed in a way no writer should see; its loop stops. */
  failure(error: unknown): void;
}

export interface WriterPlan {
  readonly keys: readonly string[];
  readonly codes: readonly string[];
  readonly shardedLoops: number;
  readonly referenceLoops: number;
  readonly seed: number;
  /**
   * Pause of each loop after each write: enough writes stay in flight at every map switch, and
   * the rebalancer and the child processes still get CPU time on a 2-core machine.
   */
  readonly pauseMillis: number;
}

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis));

/** One statement per sharded write, appending `<id>:<balance after>` (or `<id>:-1`) to the ledger. */
export function writeSql(tables: MembershipTables, op: 'insert' | 'update' | 'delete'): string {
  const { accounts, ledger } = tables;
  if (op === 'insert') {
    return `WITH w AS (INSERT INTO ${accounts} (id, balance) VALUES ($1, 1) RETURNING id, balance) INSERT INTO ${ledger} (account_id, balance) SELECT id, balance FROM w`;
  }
  if (op === 'update') {
    return `WITH w AS (UPDATE ${accounts} SET balance = balance + 1 WHERE id = $1 RETURNING id, balance) INSERT INTO ${ledger} (account_id, balance) SELECT id, balance FROM w`;
  }
  return `WITH w AS (DELETE FROM ${accounts} WHERE id = $1 RETURNING id) INSERT INTO ${ledger} (account_id, balance) SELECT id, -1 FROM w`;
}

/** Outcome unknown: the connection broke while the statement ran. */
function outcomeUnknown(error: unknown): boolean {
  return (
    error instanceof ShardRouterError &&
    (error.code === 'CONNECTION_LOST' || error.code === 'SHARD_UNAVAILABLE' || error.code === 'IN_DOUBT')
  );
}

export function describeError(error: unknown): string {
  if (error instanceof ShardRouterError) {
    const cause = error.cause instanceof Error ? ` (cause: ${error.cause.message})` : '';
    return `${error.code}: ${error.message}${cause}`;
  }
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

export function startMembershipWriters(router: ShardRouter, tables: MembershipTables, plan: WriterPlan, events: WriterEvents) {
  let stop = false;
  const random = seededRandom(plan.seed);
  const counts = { acknowledged: 0, referenceAcknowledged: 0, retried: 0 };

  /** The key's balance now, read on its owner by a freshly refreshed map (a stale router reads the old owner). */
  async function balanceOf(key: string): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      try {
        await router.refreshMap();
        const { rows } = await router.execute<{ balance: string }>(key, `SELECT balance FROM ${tables.accounts} WHERE id = $1`, [key]);
        return rows[0] === undefined ? -1 : Number(rows[0].balance);
      } catch (error) {
        if (attempt >= 20) throw error;
        await sleep(50);
      }
    }
  }

  /** Runs one sharded write to its end: 'done', 'nothing' (settled as not applied) or 'unknown'. */
  async function shardedWrite(
    key: string,
    op: 'insert' | 'update' | 'delete',
    before: number,
    after: number,
  ): Promise<'done' | 'nothing' | 'unknown'> {
    for (;;) {
      try {
        const result = await router.execute(key, writeSql(tables, op), [key]);
        if (result.rowCount !== 1) throw new Error(`${op} of ${key} (model balance ${before}) changed ${result.rowCount} rows`);
        return 'done';
      } catch (error) {
        if (error instanceof ShardRouterError && error.retryable) {
          counts.retried++;
          await sleep(20);
          continue;
        }
        if (!outcomeUnknown(error)) throw error;
        try {
          const now = await balanceOf(key);
          if (now === after) return 'done';
          if (now === before) return 'nothing';
          throw new Error(
            `after a write of unknown outcome (${describeError(error)}), ${key} holds ${now}, expected ${before} or ${after}`,
          );
        } catch (settle) {
          if (outcomeUnknown(settle)) return 'unknown';
          throw settle;
        }
      }
    }
  }

  async function referenceWrite(code: string, before: number): Promise<{ rowCount: number } | 'unknown'> {
    const sql =
      before === -1
        ? `INSERT INTO ${tables.reference} (code, v) VALUES ($1, 1)`
        : `UPDATE ${tables.reference} SET v = v + 1 WHERE code = $1`;
    for (;;) {
      try {
        const result = await router.broadcast(sql, [code]);
        if (result.rowCount < 1) throw new Error(`${sql} for ${code} (model v ${before}) changed ${result.rowCount} rows`);
        return { rowCount: result.rowCount };
      } catch (error) {
        // Retryable includes a 2PC that a resume's recovery (grace 0) aborted while it was prepared.
        if (error instanceof ShardRouterError && error.retryable) {
          counts.retried++;
          await sleep(20);
          continue;
        }
        if (outcomeUnknown(error)) return 'unknown';
        throw error;
      }
    }
  }

  const shardedLoops = Array.from({ length: plan.shardedLoops }, async (_, loop) => {
    const mine = plan.keys.filter((_, index) => index % plan.shardedLoops === loop);
    const balances = new Map<string, number>();
    while (!stop && mine.length > 0) {
      const index = Math.floor(random() * mine.length);
      const key = mine[index]!;
      const before = balances.get(key) ?? -1;
      const op = before === -1 ? 'insert' : random() < 0.2 ? 'delete' : 'update';
      const after = op === 'insert' ? 1 : op === 'update' ? before + 1 : -1;
      try {
        const outcome = await shardedWrite(key, op, before, after);
        if (outcome === 'done') {
          balances.set(key, after);
          counts.acknowledged++;
          events.ack(key, after);
        } else if (outcome === 'unknown') {
          events.pending(key, before, after);
          mine.splice(index, 1);
        }
      } catch (error) {
        events.failure(error);
        return;
      }
      await sleep(plan.pauseMillis);
    }
  });

  const referenceLoops = Array.from({ length: plan.referenceLoops }, async (_, loop) => {
    const mine = plan.codes.filter((_, index) => index % plan.referenceLoops === loop);
    const values = new Map<string, number>();
    while (!stop && mine.length > 0) {
      const index = Math.floor(random() * mine.length);
      const code = mine[index]!;
      const before = values.get(code) ?? -1;
      const after = before === -1 ? 1 : before + 1;
      try {
        const outcome = await referenceWrite(code, before);
        if (outcome === 'unknown') {
          events.refPending(code, before, after);
          mine.splice(index, 1);
        } else {
          values.set(code, after);
          counts.referenceAcknowledged++;
          events.ref(code, after, outcome.rowCount);
        }
      } catch (error) {
        events.failure(error);
        return;
      }
      await sleep(plan.pauseMillis);
    }
  });

  const all = [...shardedLoops, ...referenceLoops];
  return {
    counts,
    async stop(): Promise<void> {
      stop = true;
      await Promise.all(all);
    },
  };
}
