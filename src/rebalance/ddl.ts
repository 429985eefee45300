import type { DedicatedConnection } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import type { TableCopy } from './copy.js';
import { captureFunctionName, captureTriggerName } from './schema.js';

/**
 * The rebalancer's lock-taking statements on the source: capture triggers created and dropped
 * one table per transaction with short, retried lock requests, and the drain before clean-up.
 * The rebalancer must never be the reason an application transaction dies.
 */

/** How long the rebalancer keeps trying to take its table locks before it gives up. */
const DDL_RETRY_BUDGET_MS = 60_000;
/** The longest a lock request of the rebalancer waits (shorter when the server's deadlock_timeout is short). */
const DDL_LOCK_TIMEOUT_MS = 200;

/**
 * Installs the capture trigger on every sharded table of the source (idempotent), one table per
 * transaction: the rebalancer then never holds one table's lock while it waits for another's,
 * so it can never close a lock cycle with an application transaction. All of them commit
 * before the snapshot copy starts, which is all the copy needs (I3).
 */
export async function installCaptureTriggers(client: DedicatedConnection, schema: string, tables: readonly TableCopy[]): Promise<void> {
  for (const table of tables) {
    await withDdlRetries(client, async () => {
      await client.query(
        `CREATE OR REPLACE TRIGGER ${captureTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE ON ${table.shape.name}
           FOR EACH ROW EXECUTE FUNCTION ${captureFunctionName(schema, table.shape.oid)}()`,
      );
    });
  }
}

/** Drops the capture trigger of every sharded table of the source, each in a transaction of its own (DROP TRIGGER takes ACCESS EXCLUSIVE on its table and nothing else). */
export async function dropCaptureTriggers(client: DedicatedConnection, schema: string, tables: readonly TableCopy[]): Promise<void> {
  for (const table of tables) {
    await withDdlRetries(client, async () => {
      await client.query(`DROP TRIGGER IF EXISTS ${captureTriggerName(schema)} ON ${table.shape.name}`);
    });
  }
}

/**
 * Runs `work` (one lock-taking statement, such as DDL on one busy table) in a transaction whose
 * lock request gives up quickly, and retries it until DDL_RETRY_BUDGET_MS has passed. The
 * rebalancer must never be the reason an application transaction dies: `work` holds no other
 * lock while it waits, so it cannot be part of a lock cycle, and its queued request (which holds
 * up the table's writers) is withdrawn within half the server's deadlock_timeout.
 */
export async function withDdlRetries(client: DedicatedConnection, work: () => Promise<void>): Promise<void> {
  const lockTimeout = await ddlLockTimeout(client);
  const deadline = Date.now() + DDL_RETRY_BUDGET_MS;
  for (let attempt = 1; ; attempt++) {
    await client.query('BEGIN');
    try {
      await client.query(`SET LOCAL lock_timeout = ${lockTimeout}`);
      await work();
      await client.query('COMMIT');
      return;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      // 55P03: our lock_timeout; 40P01: PostgreSQL chose us as a deadlock victim. Both changed nothing.
      const code = (error as { code?: string }).code;
      if ((code !== '55P03' && code !== '40P01') || Date.now() > deadline) throw error;
      // Jittered, so the writers the attempt held up get through before the next one queues.
      await new Promise((resolve) => setTimeout(resolve, Math.min(20 * attempt, 250) * (0.5 + Math.random())));
    }
  }
}

/** lock_timeout (ms) for the rebalancer's DDL: DDL_LOCK_TIMEOUT_MS, or less than half the server's deadlock_timeout. */
async function ddlLockTimeout(client: DedicatedConnection): Promise<number> {
  const { rows } = await client.query<{ ms: string }>(
    "SELECT (extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000)::bigint::text AS ms",
  );
  const deadlockTimeout = Number(rows[0]?.ms ?? 1_000);
  return Math.max(1, Math.min(DDL_LOCK_TIMEOUT_MS, Math.floor(deadlockTimeout / 2) - 1));
}

/**
 * Waits until no other session on the source is inside a transaction that began before now
 * (PostgreSQL's own clock): any statement routed by the old map has then ended (I4 in move.ts).
 */
export async function drainOlderTransactions(client: DedicatedConnection, timeoutMillis: number): Promise<void> {
  const { rows } = await client.query<{ now: string }>('SELECT clock_timestamp()::text AS now');
  const since = rows[0]!.now;
  const deadline = Date.now() + timeoutMillis;
  for (;;) {
    const older = await client.query(
      `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start < $1::timestamptz LIMIT 1`,
      [since],
    );
    if (older.rowCount === 0) return;
    if (Date.now() > deadline) {
      throw new ShardRouterError(
        'REBALANCE_CONFLICT',
        `transactions older than the map switch are still open on the source after ${timeoutMillis} ms; the move is switched and its clean-up resumes with rebalance --resume`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
