import type { ShardSession } from '../cluster/shard-io.js';
import type { Gid } from './gid.js';

/**
 * The durable commit decisions of cross-shard transactions: one table per shard, in the
 * catalog schema. A transaction's row lives on its decision shard D (named in its gid) and is
 * written inside D's own transaction, so "D committed" and "the decision is commit" are one
 * and the same event. The primary key on gid is what makes the coordinator's 'commit' and
 * recovery's 'abort' mutually exclusive, whatever the timing (docs/twopc.md).
 */

export type Outcome = 'commit' | 'abort';

/**
 * How long after its insert a coordinator may still settle its own gid (after losing D's answer
 * to COMMIT). Enforced on D's clock by settleDecision's guard, so it holds whatever the
 * coordinator's clock or pool does.
 */
export const COORDINATOR_SETTLE_WINDOW_MS = 120_000;
/**
 * Commit rows are kept at least this long, and then only while some shard still has the gid
 * prepared. Longer than the settle window: a coordinator that settles late must find its row,
 * or it would insert 'abort' and report a committed transaction as failed.
 */
export const COMMIT_ROW_MIN_AGE_MS = 300_000;
/**
 * Abort rows must outlive any coordinator transaction that could still insert 'commit' for the
 * same gid. recordCommit refuses to insert once D's transaction is older than its lifetime
 * bound (at most MAX_TRANSACTION_TIMEOUT_MS + slack, one hour and a bit), so a day is ample.
 */
export const ABORT_ROW_RETENTION_MS = 24 * 3_600_000;

function table(schema: string): string {
  return `"${schema}".twopc_decisions`;
}

export function decisionTableDdl(schema: string): string {
  return `CREATE TABLE IF NOT EXISTS ${table(schema)} (
    gid text PRIMARY KEY CHECK (octet_length(gid) < 200),
    outcome text NOT NULL CHECK (outcome IN ('commit', 'abort')),
    created_at timestamptz NOT NULL DEFAULT now())`;
}

/**
 * Inside D's open transaction: the 'commit' row, durable only when D commits. Refused (returns
 * null) when D's transaction has run longer than `lifetimeMillis`: abort rows are garbage
 * collected on that assumption. A 'abort' row already there (recovery got first) makes this fail
 * with a unique violation; an uncommitted one makes it wait for that recovery to commit.
 * Returns the insert time on D's clock (epoch seconds, as text to keep every digit).
 */
export async function recordCommit(session: ShardSession, schema: string, gid: Gid, lifetimeMillis: number): Promise<string | null> {
  const { rows } = await session.query<{ at: string }>(
    `INSERT INTO ${table(schema)} (gid, outcome, created_at)
     SELECT $1, 'commit', clock_timestamp() WHERE clock_timestamp() < now() + make_interval(secs => $2::float8 / 1000)
     RETURNING extract(epoch FROM created_at)::text AS at`,
    [gid, lifetimeMillis],
  );
  return rows[0]?.at ?? null;
}

/** The decision could not be settled: too late for a coordinator to decide, and no row to read. */
export class UnsettledError extends Error {}

/**
 * Settles a gid for good: inserts 'abort' unless a decision exists, then reads the decision.
 * If D's coordinator holds an uncommitted 'commit' row, the insert waits for it (unique index),
 * so a live coordinator and this call can never both win. Two statements, on purpose: the
 * read needs a snapshot taken after the insert stopped waiting. `lockTimeoutMillis` bounds
 * that wait (a frozen coordinator); it surfaces as LOCK_TIMEOUT and nothing is decided.
 *
 * A coordinator settling its own gid passes `notAfterEpoch` (its insert time + the settle
 * window, on D's clock): past it, the commit row may have been collected, so it must not
 * insert 'abort' any more, and a missing row means "unknown" (UnsettledError), not abort.
 */
export async function settleDecision(
  session: ShardSession,
  schema: string,
  gid: Gid,
  lockTimeoutMillis: number,
  notAfterEpoch?: number,
): Promise<Outcome> {
  await session.query(`BEGIN; SET LOCAL lock_timeout = ${Math.max(1, Math.trunc(lockTimeoutMillis))}`);
  try {
    if (notAfterEpoch === undefined) {
      await session.query(`INSERT INTO ${table(schema)} (gid, outcome) VALUES ($1, 'abort') ON CONFLICT (gid) DO NOTHING`, [gid]);
    } else {
      await session.query(
        `INSERT INTO ${table(schema)} (gid, outcome) SELECT $1, 'abort' WHERE clock_timestamp() < to_timestamp($2::float8) ON CONFLICT (gid) DO NOTHING`,
        [gid, notAfterEpoch],
      );
    }
    await session.query('COMMIT');
  } catch (error) {
    await session.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  const { rows } = await session.query<{ outcome: Outcome }>(`SELECT outcome FROM ${table(schema)} WHERE gid = $1`, [gid]);
  const outcome = rows[0]?.outcome;
  if (outcome === 'commit' || outcome === 'abort') return outcome;
  throw new UnsettledError(`no decision row for ${gid}, and too late to record one`);
}

/** Commit rows old enough to be collected if no shard still has their gid prepared. */
export async function commitRowCandidates(session: ShardSession, schema: string): Promise<string[]> {
  const { rows } = await session.query<{ gid: string }>(
    `SELECT gid FROM ${table(schema)} WHERE outcome = 'commit' AND created_at < now() - make_interval(secs => $1::float8 / 1000) LIMIT 10000`,
    [COMMIT_ROW_MIN_AGE_MS],
  );
  return rows.map((row) => row.gid);
}

/** Deletes the given commit rows and abort rows past their retention; returns how many went. */
export async function collectDecisions(session: ShardSession, schema: string, finishedCommitGids: readonly string[]): Promise<number> {
  const { rowCount } = await session.query(
    `DELETE FROM ${table(schema)}
      WHERE (outcome = 'commit' AND gid = ANY($1::text[]))
         OR (outcome = 'abort' AND created_at < now() - make_interval(secs => $2::float8 / 1000))`,
    [finishedCommitGids, ABORT_ROW_RETENTION_MS],
  );
  return rowCount ?? 0;
}
