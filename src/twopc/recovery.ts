import type { ShardSession } from '../pool/session.js';
import { ShardRouterError, isDatabaseError } from '../errors.js';
import { collectDecisions, commitRowCandidates, settleDecision, settleDecisions } from './decision-log.js';
import type { Outcome } from './decision-log.js';
import { gidPrefix, parsePreparedName, preparedLiteral } from './gid.js';
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
/** Gids settled per decision-shard transaction (one INSERT and one SELECT for the whole batch). */
const SETTLE_BATCH = 500;
/** Connections per shard sending COMMIT/ROLLBACK PREPARED (each is its own statement and WAL flush). */
const FINISH_CONNECTIONS = 4;

interface PreparedRow {
  /** The prepared transaction's name on the server: `<gid>:<participant>`, or a bare gid. */
  readonly name: string;
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
  await pass.decideAll(listings);
  await Promise.all(context.shardIds.map((shardId) => pass.settleShard(shardId, listings.get(shardId)!)));
  const decisionsCollected = await collectFinishedDecisions(context, candidates, listings, pass.finished);
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
  /** Prepared names this pass finished (or found already finished). */
  readonly finished = new Set<string>();
  readonly #context: RecoveryContext;
  readonly #options: RecoveryOptions;
  readonly #known: Set<string>;
  /** One decision per gid per pass, shared by the shards that have it prepared: the outcome, or why it could not be read. */
  readonly #decisions = new Map<string, Outcome | Error>();

  constructor(context: RecoveryContext, options: RecoveryOptions) {
    this.#context = context;
    this.#options = options;
    this.#known = new Set(context.shardIds);
  }

  /** Settles the decision of every listed gid old enough, in batches per decision shard. */
  async decideAll(listings: ReadonlyMap<string, Listing>): Promise<void> {
    const byDecider = new Map<string, Set<Gid>>();
    for (const listing of listings.values()) {
      if (listing instanceof Error) continue;
      for (const row of listing) {
        const parsed = parsePreparedName(row.name, this.#context.clusterId);
        if (!parsed || row.ageMillis < this.#options.graceMillis || !this.#known.has(parsed.decisionShardId)) continue;
        const gids = byDecider.get(parsed.decisionShardId) ?? new Set<Gid>();
        byDecider.set(parsed.decisionShardId, gids.add(parsed.gid));
      }
    }
    await Promise.all([...byDecider].map(([deciderId, gids]) => this.#decideOn(deciderId, [...gids])));
  }

  async #decideOn(deciderId: string, gids: readonly Gid[]): Promise<void> {
    const schema = this.#context.catalogSchema;
    for (let at = 0; at < gids.length; at += SETTLE_BATCH) {
      const batch = gids.slice(at, at + SETTLE_BATCH);
      try {
        const outcomes = await withSession(this.#context, deciderId, (session) =>
          settleDecisions(session, schema, batch, SETTLE_LOCK_TIMEOUT_MS),
        );
        for (const gid of batch) this.#decisions.set(gid, outcomes.get(gid) ?? new Error('no decision row after settling'));
      } catch (error) {
        // D refused (a gid behind a frozen coordinator's lock): one at a time, so the rest settle.
        // D unreachable: the whole batch waits for the next pass.
        if (sqlStateOf(error) === undefined) {
          for (const gid of batch) this.#decisions.set(gid, asError(error));
          continue;
        }
        for (const gid of batch) {
          this.#decisions.set(
            gid,
            await withSession(this.#context, deciderId, (session) => settleDecision(session, schema, gid, SETTLE_LOCK_TIMEOUT_MS)).catch(
              asError,
            ),
          );
        }
      }
    }
  }

  /** Finishes the shard's listed prepared transactions over a few connections. */
  async settleShard(shardId: string, listing: Listing): Promise<void> {
    if (listing instanceof Error) {
      this.shards[shardId] = { prepared: 0, committed: 0, rolledBack: 0, inDoubt: 0, tooYoung: 0, error: describe(listing) };
      return;
    }
    const counts: ShardCounts = { prepared: listing.length, committed: 0, rolledBack: 0, inDoubt: 0, tooYoung: 0 };
    const due = listing.filter((row) => row.ageMillis >= this.#options.graceMillis);
    counts.tooYoung = listing.length - due.length;
    let cursor = 0;
    const worker = async (): Promise<void> => {
      let session: ShardSession | undefined;
      try {
        for (let row = due[cursor++]; row; row = due[cursor++]) {
          if (session?.broken) {
            session.release();
            session = undefined;
          }
          session = await this.#settle(shardId, row.name, counts, session);
        }
      } finally {
        session?.release();
      }
    };
    await Promise.all(Array.from({ length: Math.min(FINISH_CONNECTIONS, due.length) }, worker));
    this.shards[shardId] = counts;
  }

  /**
   * Finishes one prepared transaction on one shard with its gid's decision: COMMIT or ROLLBACK
   * PREPARED on `session` (acquired if absent). Returns the session to use for the next one.
   */
  async #settle(shardId: string, name: string, counts: ShardCounts, session: ShardSession | undefined): Promise<ShardSession | undefined> {
    const parsed = parsePreparedName(name, this.#context.clusterId);
    const doubt = (reason: string) => {
      counts.inDoubt++;
      this.inDoubt.push({ gid: parsed?.gid ?? name, shardId, reason });
      return session;
    };
    if (!parsed) return doubt("has this cluster's prefix but is not a well-formed pg-shard-router gid; left alone");
    const { gid, decisionShardId: deciderId } = parsed;
    if (!this.#known.has(deciderId)) return doubt(`its decision shard ${deciderId} is not among the shards given to this router`);
    const outcome = this.#decisions.get(gid) ?? new Error('not settled in this pass');
    if (outcome instanceof Error) return doubt(`its decision shard ${deciderId} could not be asked: ${describe(outcome)}`);
    try {
      session ??= await this.#context.acquire(shardId);
      await session.query(`${outcome === 'commit' ? 'COMMIT' : 'ROLLBACK'} PREPARED ${preparedLiteral(parsed.name)}`);
    } catch (error) {
      // 42704: gone meanwhile; it was finished by its coordinator or another recovery,
      // necessarily with the same decision, which is final.
      if (sqlStateOf(error) !== '42704') return doubt(`decided ${outcome}, but finishing it failed: ${describe(error)}`);
    }
    this.finished.add(name);
    if (outcome === 'commit') {
      counts.committed++;
      this.committed.push({ gid, shardId, outcome });
    } else {
      counts.rolledBack++;
      this.rolledBack.push({ gid, shardId, outcome });
    }
    return session;
  }
}

/**
 * Garbage collection, only after a complete listing: a commit row goes once no shard has its
 * gid prepared (any age) other than where this pass just finished it; abort rows go after
 * their retention (decision-log.ts).
 */
async function collectFinishedDecisions(
  context: RecoveryContext,
  candidates: Map<string, string[]>,
  listings: Map<string, Listing>,
  finished: ReadonlySet<string>,
): Promise<number> {
  let decisionsCollected = 0;
  const everyShardListed = [...listings.values()].every((listing) => !(listing instanceof Error));
  if (!everyShardListed) return decisionsCollected;
  const stillPrepared = new Set<string>();
  for (const listing of listings.values()) {
    if (listing instanceof Error) continue;
    for (const row of listing) {
      if (!finished.has(row.name)) stillPrepared.add(parsePreparedName(row.name, context.clusterId)?.gid ?? row.name);
    }
  }
  await Promise.all(
    [...candidates].map(async ([shardId, gids]) => {
      const done = gids.filter((gid) => !stillPrepared.has(gid));
      const removed = await withSession(context, shardId, (session) => collectDecisions(session, context.catalogSchema, done)).catch(
        () => 0,
      );
      decisionsCollected += removed;
    }),
  );
  return decisionsCollected;
}

/** This cluster's prepared transactions in the shard's current database (exact prefix match, never LIKE). */
export async function listPrepared(session: ShardSession, prefix: string): Promise<PreparedRow[]> {
  const { rows } = await session.query<{ name: string; age_ms: string }>(
    `SELECT gid AS name, floor(extract(epoch FROM now() - prepared) * 1000)::bigint::text AS age_ms
       FROM pg_prepared_xacts
      WHERE database = current_database() AND starts_with(gid, $1)
      ORDER BY prepared`,
    [prefix],
  );
  return rows.map((row) => ({ name: row.name, ageMillis: Number(row.age_ms) }));
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

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function describe(error: unknown): string {
  if (error instanceof ShardRouterError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
