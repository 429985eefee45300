import type { CatalogExtension } from '../catalog/catalog.js';
import { q } from '../sql.js';
import type { ShardSession } from '../pool/session.js';
import { MAX_TRANSACTION_TIMEOUT_MS } from '../config.js';
import { gidLiteral } from './gid.js';
import type { Gid } from './gid.js';
import { SERVER_SLACK_MS } from './transaction-options.js';

/**
 * The durable commit decisions of cross-shard transactions: one table per shard, in the
 * catalog schema. A transaction's row lives on its decision shard D (named in its gid) and is
 * written inside D's own transaction, so "D committed" and "the decision is commit" are one
 * and the same event. The primary key on gid is what makes the coordinator's 'commit' and
 * recovery's 'abort' mutually exclusive, whatever the timing (docs/twopc.md).
 */

export type Outcome = 'commit' | 'abort';

/**
 * How long after its transaction on D began a coordinator may still settle its own gid (after
 * losing D's answer to COMMIT), beyond the transaction's lifetime. Enforced on D's clock by
 * settleDecision's guard, so it holds whatever the coordinator's clock or pool does.
 */
export const COORDINATOR_SETTLE_WINDOW_MS = 120_000;
/**
 * The longest any coordinator transaction on D can live, on D's clock: the longest allowed
 * timeout plus the servers' slack. The table's CHECK refuses a commit row from an older one.
 */
export const MAX_DECIDER_LIFETIME_MS = MAX_TRANSACTION_TIMEOUT_MS + SERVER_SLACK_MS;
/**
 * Abort rows must outlive any coordinator transaction that could still insert 'commit' for the
 * same gid, i.e. MAX_DECIDER_LIFETIME_MS (one hour and a bit); a day is ample.
 */
export const ABORT_ROW_RETENTION_MS = 24 * 3_600_000;

/** The decision table's primary key (PostgreSQL's default name): where recovery's 'abort' row and a coordinator's 'commit' row meet. */
export const DECISION_KEY_CONSTRAINT = 'twopc_decisions_pkey';

/** The lifetime guard's CHECK on a commit row (decisionTableDdl): a refusal under this name means the transaction outlived its bound. */
export const DECISION_LIFETIME_CONSTRAINT = 'commit_within_lifetime';

function table(schema: string): string {
  return `${q(schema)}.twopc_decisions`;
}

/** The decision table as a catalog extension: created on every shard where it is missing. */
export const decisionLogExtension: CatalogExtension = {
  name: 'two-phase commit decisions',
  async ensure(session, schema) {
    const present = await session.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [table(schema)]);
    if (!present.rows[0]?.present) await session.query(decisionTableDdl(schema));
  },
};

/**
 * created_at is the insert time; keep_until (commit rows only) is the earliest time the row
 * may be collected. The CHECK is the lifetime guard: a commit row can only be inserted by a
 * transaction that began less than MAX_DECIDER_LIFETIME_MS ago (now() is its start), whatever
 * the server's timeout settings, which is what makes collecting abort rows safe.
 */
export function decisionTableDdl(schema: string): string {
  return `CREATE TABLE IF NOT EXISTS ${table(schema)} (
    gid text PRIMARY KEY CHECK (octet_length(gid) < 200),
    outcome text NOT NULL CHECK (outcome IN ('commit', 'abort')),
    created_at timestamptz NOT NULL DEFAULT now(),
    keep_until timestamptz,
    CONSTRAINT ${DECISION_LIFETIME_CONSTRAINT} CHECK (outcome = 'abort' OR created_at < now() + interval '${MAX_DECIDER_LIFETIME_MS} milliseconds'))`;
}

/**
 * The commit point, one round trip on D: the 'commit' row and COMMIT in one message (joined
 * into one simple-protocol query, or behind D's deferred writes in one pipeline with one Sync),
 * so D's writes and the decision become durable in one local commit. If the insert (or a
 * deferred write before it) fails (an 'abort' row is there: unique violation; the lifetime
 * CHECK) PostgreSQL skips the COMMIT and D's transaction stays failed, to be rolled back. The
 * gid is validated (gidLiteral); the numbers are ours. `keepMillis` keeps the row at least that
 * long (see settleDecision).
 */
export function commitDecisionStatements(schema: string, gid: Gid, keepMillis: number): [string, 'COMMIT'] {
  return [
    `INSERT INTO ${table(schema)} (gid, outcome, created_at, keep_until) ` +
      `VALUES (${gidLiteral(gid)}, 'commit', clock_timestamp(), clock_timestamp() + interval '${Math.trunc(keepMillis)} milliseconds')`,
    'COMMIT',
  ];
}

/** {@link commitDecisionStatements} as one simple-protocol message. */
export function commitDecisionSql(schema: string, gid: Gid, keepMillis: number): string {
  return commitDecisionStatements(schema, gid, keepMillis).join('; ');
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
 * A coordinator settling its own gid passes `notAfterEpoch` (on D's clock): past it, its commit
 * row may have been collected, so it must not insert 'abort' any more, and a missing row then
 * means "unknown" (UnsettledError), not abort. Commit rows are kept until after that time.
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

/**
 * settleDecision for many gids of one decision shard at once (recovery after a crash that left
 * thousands): one transaction inserts 'abort' for every gid without a decision, then a new
 * statement reads them all. Each row behaves exactly as in settleDecision (the insert of a gid
 * waits for a live coordinator's uncommitted 'commit' row); gids go in sorted order, so two
 * recoverers settling overlapping batches wait for each other instead of deadlocking. One gid
 * stuck behind a frozen coordinator fails the whole batch (LOCK_TIMEOUT): nothing is decided,
 * and the caller retries the batch one gid at a time.
 */
export async function settleDecisions(
  session: ShardSession,
  schema: string,
  gids: readonly Gid[],
  lockTimeoutMillis: number,
): Promise<Map<string, Outcome>> {
  const sorted = [...gids].sort();
  await session.query(`BEGIN; SET LOCAL lock_timeout = ${Math.max(1, Math.trunc(lockTimeoutMillis))}`);
  try {
    await session.query(
      `INSERT INTO ${table(schema)} (gid, outcome) SELECT g, 'abort' FROM unnest($1::text[]) WITH ORDINALITY AS u(g, n) ORDER BY n ON CONFLICT (gid) DO NOTHING`,
      [sorted],
    );
    await session.query('COMMIT');
  } catch (error) {
    await session.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  const { rows } = await session.query<{ gid: string; outcome: Outcome }>(
    `SELECT gid, outcome FROM ${table(schema)} WHERE gid = ANY($1::text[])`,
    [sorted],
  );
  return new Map(rows.map((row) => [row.gid, row.outcome]));
}

/** Commit rows past their keep_until: collectable if no shard still has their gid prepared. */
export async function commitRowCandidates(session: ShardSession, schema: string): Promise<string[]> {
  const { rows } = await session.query<{ gid: string }>(
    `SELECT gid FROM ${table(schema)} WHERE outcome = 'commit' AND keep_until < now() LIMIT 10000`,
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
