import type { ShardSession } from '../pool/session.js';
import { ShardRouterError, isDatabaseError } from '../errors.js';
import { collectDecisions, commitRowCandidates, settleDecision } from './decision-log.js';
import type { Outcome } from './decision-log.js';
import { asGid, decisionShardOf, gidLiteral, gidPrefix } from './gid.js';
import type { Gid } from './gid.js';

/**
 * Recovery settles the prepared transactions a coordinator left behind (it crashed, lost a
 * connection, or a participant was down at COMMIT PREPARED). Any router may run it at any time,
 * several at once: each gid's outcome comes from one place only, the decision row on its
 * decision shard D, and settleDecision makes that row exist and final before anything is
 * finished. So recovery never aborts a committed transaction (the commit row exists and wins
 * the unique index) and never commits an aborted one (no commit row can appear after 'abort').
 *
 * The grace age only spares live coordinators a needless abort; correctness never depends on
 * it (with grace 0 a live coordinator's decision row simply makes settleDecision wait).
 */

export interface RecoveryContext {
  readonly clusterId: string;
  readonly catalogSchema: string;
  readonly shardIds: readonly string[];
  acquire(shardId: string): Promise<ShardSession>;
}

export interface RecoveryOptions {
  /** Prepared transactions younger than this (by the participant's clock) are left alone this time. */
  readonly graceMillis: number;
}

/** One prepared transaction recovery finished. */
export interface SettledTransaction {
  readonly gid: string;
  readonly shardId: string;
  readonly outcome: Outcome;
}

/** One prepared transaction recovery could not finish this time, and why. */
export interface InDoubtTransaction {
  readonly gid: string;
  readonly shardId: string;
  readonly reason: string;
}

export interface ShardRecoveryReport {
  /** This cluster's prepared transactions found on the shard (any age). */
  readonly prepared: number;
  readonly committed: number;
  readonly rolledBack: number;
  readonly inDoubt: number;
  /** Younger than the grace age: left to their coordinator. */
  readonly tooYoung: number;
  /** Set when the shard could not be listed at all. */
  readonly error?: string;
}

/** What one recovery pass did. */
export interface RecoveryReport {
  readonly startedAt: Date;
  readonly durationMillis: number;
  readonly committed: readonly SettledTransaction[];
  readonly rolledBack: readonly SettledTransaction[];
  readonly inDoubt: readonly InDoubtTransaction[];
  readonly shards: Readonly<Record<string, ShardRecoveryReport>>;
  /** Decision rows deleted because no coordinator or recovery can need them any more. */
  readonly decisionsCollected: number;
}

/** How long settling may wait behind a live coordinator's uncommitted decision row. */
const SETTLE_LOCK_TIMEOUT_MS = 5_000;

interface PreparedRow {
  readonly gid: string;
  readonly ageMillis: number;
}

type Listing = PreparedRow[] | Error;

export async function recover(context: RecoveryContext, options: RecoveryOptions): Promise<RecoveryReport> {
  const startedAt = new Date();
  // Commit-row candidates are read BEFORE the shards are listed: a row visible now was
  // committed after all its PREPAREs, so each participant that has not yet finished shows up
  // in the listing below. Reading them after the listing would not give that guarantee.
  const candidates = await readCommitRowCandidates(context);
  const listings = await listEveryShard(context);
  const pass = new SettlePass(context, options);
  await Promise.all(context.shardIds.map((shardId) => pass.settleShard(shardId, listings.get(shardId)!)));
  const decisionsCollected = await collectFinishedDecisions(context, candidates, listings);
  const { committed, rolledBack, inDoubt, shards } = pass;
  return { startedAt, durationMillis: Date.now() - startedAt.getTime(), committed, rolledBack, inDoubt, shards, decisionsCollected };
}

/** Each reachable shard's gids with a commit row (an unreachable shard is simply left out). */
async function readCommitRowCandidates(context: RecoveryContext): Promise<Map<string, string[]>> {
  const candidates = new Map<string, string[]>();
  await Promise.all(
    context.shardIds.map(async (shardId) => {
      const rows = await withSession(context, shardId, (session) => commitRowCandidates(session, context.catalogSchema)).catch(
        () => undefined,
      );
      if (rows) candidates.set(shardId, rows);
    }),
  );
  return candidates;
}

/** Every shard's prepared transactions of this cluster, or the error that kept it from being listed. */
async function listEveryShard(context: RecoveryContext): Promise<Map<string, Listing>> {
  const prefix = gidPrefix(context.clusterId);
  const listings = new Map<string, Listing>();
  await Promise.all(
    context.shardIds.map(async (shardId) => {
      try {
        listings.set(shardId, await withSession(context, shardId, (session) => listPrepared(session, prefix)));
      } catch (error) {
        listings.set(shardId, error instanceof Error ? error : new Error(String(error)));
      }
    }),
  );
  return listings;
}

type ShardCounts = { -readonly [K in Exclude<keyof ShardRecoveryReport, 'error'>]: ShardRecoveryReport[K] };

/** One pass's settling of the listed prepared transactions, and its tally. */
class SettlePass {
  readonly committed: SettledTransaction[] = [];
  readonly rolledBack: SettledTransaction[] = [];
  readonly inDoubt: InDoubtTransaction[] = [];
  readonly shards: Record<string, ShardRecoveryReport> = {};
  readonly #context: RecoveryContext;
  readonly #options: RecoveryOptions;
  readonly #known: Set<string>;
  /** One settleDecision per gid per pass, shared by the shards that have it prepared. */
  readonly #decisions = new Map<string, Promise<Outcome>>();

  constructor(context: RecoveryContext, options: RecoveryOptions) {
    this.#context = context;
    this.#options = options;
    this.#known = new Set(context.shardIds);
  }

  async settleShard(shardId: string, listing: Listing): Promise<void> {
    if (listing instanceof Error) {
      this.shards[shardId] = { prepared: 0, committed: 0, rolledBack: 0, inDoubt: 0, tooYoung: 0, error: describe(listing) };
      return;
    }
    const counts: ShardCounts = { prepared: listing.length, committed: 0, rolledBack: 0, inDoubt: 0, tooYoung: 0 };
    for (const row of listing) {
      if (row.ageMillis < this.#options.graceMillis) {
        counts.tooYoung++;
        continue;
      }
      await this.#settle(shardId, row.gid, counts);
    }
    this.shards[shardId] = counts;
  }

  /** Settles one prepared transaction on one shard: its decision from D, then COMMIT or ROLLBACK PREPARED. */
  async #settle(shardId: string, rawGid: string, counts: ShardCounts): Promise<void> {
    const doubt = (reason: string) => {
      counts.inDoubt++;
      this.inDoubt.push({ gid: rawGid, shardId, reason });
    };
    let gid: Gid;
    try {
      gid = asGid(rawGid);
    } catch {
      return doubt("has this cluster's prefix but is not a well-formed pg-shard-router gid; left alone");
    }
    const deciderId = decisionShardOf(gid, this.#context.clusterId)!;
    if (!this.#known.has(deciderId)) return doubt(`its decision shard ${deciderId} is not among the shards given to this router`);
    let outcome: Outcome;
    try {
      outcome = await this.#decide(gid, deciderId);
    } catch (error) {
      return doubt(`its decision shard ${deciderId} could not be asked: ${describe(error)}`);
    }
    try {
      await withSession(this.#context, shardId, (session) =>
        session.query(`${outcome === 'commit' ? 'COMMIT' : 'ROLLBACK'} PREPARED ${gidLiteral(gid)}`),
      );
    } catch (error) {
      // 42704: gone meanwhile; it was finished by its coordinator or another recovery,
      // necessarily with the same decision, which is final.
      if (sqlStateOf(error) !== '42704') return doubt(`decided ${outcome}, but finishing it failed: ${describe(error)}`);
    }
    if (outcome === 'commit') {
      counts.committed++;
      this.committed.push({ gid, shardId, outcome });
    } else {
      counts.rolledBack++;
      this.rolledBack.push({ gid, shardId, outcome });
    }
  }

  #decide(gid: Gid, deciderId: string): Promise<Outcome> {
    let decision = this.#decisions.get(gid);
    if (!decision) {
      decision = withSession(this.#context, deciderId, (session) =>
        settleDecision(session, this.#context.catalogSchema, gid, SETTLE_LOCK_TIMEOUT_MS),
      );
      decision.catch(() => undefined);
      this.#decisions.set(gid, decision);
    }
    return decision;
  }
}

/**
 * Garbage collection, only after a complete listing: a commit row goes once no shard has its
 * gid prepared (any age); abort rows go after their retention (decision-log.ts).
 */
async function collectFinishedDecisions(
  context: RecoveryContext,
  candidates: Map<string, string[]>,
  listings: Map<string, Listing>,
): Promise<number> {
  let decisionsCollected = 0;
  const everyShardListed = [...listings.values()].every((listing) => !(listing instanceof Error));
  if (!everyShardListed) return decisionsCollected;
  const stillPrepared = new Set(
    [...listings.values()].flatMap((listing) => (listing instanceof Error ? [] : listing.map((row) => row.gid))),
  );
  await Promise.all(
    [...candidates].map(async ([shardId, gids]) => {
      const finished = gids.filter((gid) => !stillPrepared.has(gid));
      const removed = await withSession(context, shardId, (session) => collectDecisions(session, context.catalogSchema, finished)).catch(
        () => 0,
      );
      decisionsCollected += removed;
    }),
  );
  return decisionsCollected;
}

/** This cluster's prepared transactions in the shard's current database (exact prefix match, never LIKE). */
export async function listPrepared(session: ShardSession, prefix: string): Promise<PreparedRow[]> {
  const { rows } = await session.query<{ gid: string; age_ms: string }>(
    `SELECT gid, floor(extract(epoch FROM now() - prepared) * 1000)::bigint::text AS age_ms
       FROM pg_prepared_xacts
      WHERE database = current_database() AND starts_with(gid, $1)
      ORDER BY prepared`,
    [prefix],
  );
  return rows.map((row) => ({ gid: row.gid, ageMillis: Number(row.age_ms) }));
}

async function withSession<T>(context: RecoveryContext, shardId: string, work: (session: ShardSession) => Promise<T>): Promise<T> {
  const session = await context.acquire(shardId);
  try {
    return await work(session);
  } finally {
    session.release();
  }
}

function sqlStateOf(error: unknown): string | undefined {
  const cause = error instanceof ShardRouterError ? error.cause : error;
  return isDatabaseError(cause) ? cause.code : undefined;
}

function describe(error: unknown): string {
  if (error instanceof ShardRouterError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
