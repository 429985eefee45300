import type { QueryResult, QueryResultRow, Queryable, ShardSession } from '../pool/session.js';
import type { ShardQueryResult } from '../pool/shard-pool.js';
import { ShardRouterError, isDatabaseError } from '../errors.js';
import type { ShardKey } from '../placement/hash.js';
import { COORDINATOR_SETTLE_WINDOW_MS, UnsettledError, commitDecisionSql, settleDecision } from './decision-log.js';
import type { Outcome } from './decision-log.js';
import { gidLiteral, newGid } from './gid.js';
import type { Gid } from './gid.js';
import { testHooks } from './test-hooks.js';
import type { FaultPoint } from './test-hooks.js';
import { SERVER_SLACK_MS, beginStatements } from './transaction-options.js';
import type { ResolvedTransactionOptions } from './transaction-options.js';

/**
 * The transaction engine: one plain transaction when the work touched one shard, two-phase
 * commit when it touched several. The protocol and its correctness argument are in
 * docs/twopc.md; the invariants the code below keeps are:
 *
 * 1. The decision is D's COMMIT: the 'commit' row is inserted inside D's own transaction, and
 *    COMMIT is sent to D only after every other participant voted yes (PREPARE succeeded).
 * 2. COMMIT PREPARED is sent only after D's COMMIT is known to have succeeded, or after a
 *    settleDecision read 'commit'. ROLLBACK PREPARED only when D's transaction cannot commit
 *    any more (COMMIT was never sent to it, PostgreSQL answered it with an error on a live
 *    connection, or settleDecision read 'abort').
 * 3. Every error thrown by `run` other than IN_DOUBT means nothing was committed anywhere.
 */

/** What the engine needs from the router. */
export interface CoordinatorContext {
  readonly clusterId: string;
  readonly catalogSchema: string;
  /** Owner shard of a key (throws INVALID_KEY). */
  shardFor(key: ShardKey): string;
  /** A connection to a shard, to be released by the caller. */
  acquire(shardId: string): Promise<ShardSession>;
  serverVersion(shardId: string): number;
  /** Called with gids left prepared somewhere after their decision, for recovery to finish. */
  onUnfinished(gid: Gid): void;
}

/**
 * The handle a transaction callback gets.
 *
 * @example
 * await router.transaction([from, to], async (tx) => {
 *   await tx.execute(from, 'UPDATE accounts SET balance = balance - $2 WHERE id = $1', [from, 100]);
 *   await tx.execute(to, 'UPDATE accounts SET balance = balance + $2 WHERE id = $1', [to, 100]);
 * });
 */
export interface Transaction {
  /**
   * Runs one parameterized statement inside the transaction, on the shard that owns `key`.
   * @throws ShardRouterError KEY_NOT_IN_TRANSACTION (the key's shard was not declared),
   * TRANSACTION_CLOSED, TRANSACTION_TIMEOUT, LOCK_TIMEOUT, QUERY_FAILED, CONNECTION_LOST, INVALID_KEY
   */
  execute<R extends QueryResultRow = QueryResultRow>(key: ShardKey, sql: string, params?: readonly unknown[]): Promise<ShardQueryResult<R>>;
  /**
   * Runs one parameterized statement inside the transaction on a participant shard named by id
   * (one of `shardIds`): for DDL and maintenance that belong to no key.
   * @throws ShardRouterError INVALID_ARGUMENT (not a participant) and the errors of {@link execute}
   */
  executeOn<R extends QueryResultRow = QueryResultRow>(shardId: string, sql: string, params?: readonly unknown[]): Promise<ShardQueryResult<R>>;
  /** The participating shards, in the order their connections were taken. */
  readonly shardIds: readonly string[];
  /** One participant as a Queryable (for helpers that take one): `on(id).query(sql, params)` is `executeOn(id, sql, params)`. */
  on(shardId: string): Queryable;
}

/** How settleDecision may wait for a live coordinator's uncommitted decision row. */
const SETTLE_LOCK_TIMEOUT_MS = 5_000;
/** How long the coordinator keeps trying to reach D after losing the connection at the commit point. */
const LEARN_OUTCOME_ATTEMPTS = 4;
const LEARN_OUTCOME_BACKOFF_MS = 250;
/** How long clean-up (ROLLBACK after a failure) may take before the connection is dropped instead. */
const CLEANUP_WAIT_MS = 2_000;

type Vote = 'yes' | 'no' | 'unknown';

class Participant {
  readonly shardId: string;
  readonly session: ShardSession;
  #began = false;
  /** The first error a statement got here: the reason a later PREPARE votes no. */
  firstError: unknown;
  /** When this shard's transaction began, on its own clock (epoch seconds); NaN until known. */
  startedAt = Number.NaN;

  constructor(session: ShardSession) {
    this.shardId = session.shardId;
    this.session = session;
  }

  get began(): boolean {
    return this.#began;
  }

  send<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    testHooks.statement?.(this.shardId, sql);
    return this.session.query<R>(sql, params);
  }

  /**
   * Runs a statement, opening the transaction first if this is the shard's first one. BEGIN is
   * lazy (a declared shard that is never used costs nothing, and work that touched one shard
   * commits in one phase) and rides in the same round trip as the first statement.
   */
  async run<R extends QueryResultRow>(sql: string, params: readonly unknown[] | undefined, begin: () => readonly string[]): Promise<QueryResult<R>> {
    try {
      if (this.#began) return await this.send<R>(sql, params);
      this.#began = true;
      const preamble = begin();
      testHooks.statement?.(this.shardId, preamble.join('; '));
      testHooks.statement?.(this.shardId, sql);
      const results = await this.session.queryPipelined(preamble, sql, params);
      this.startedAt = Number((results[1]?.rows[0] as { started?: string } | undefined)?.started);
      return results[results.length - 1] as QueryResult<R>;
    } catch (error) {
      this.firstError ??= error;
      throw error;
    }
  }
}

/**
 * Runs `work` as one transaction over the shards in `shardIds` (sorted: every transaction takes
 * its connections in the same order, so two of them cannot deadlock on the pools).
 */
export async function runTransaction<T>(
  context: CoordinatorContext,
  shardIds: readonly string[],
  decisionShardId: string,
  options: ResolvedTransactionOptions,
  work: (tx: Transaction) => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMillis;
  const sessions: ShardSession[] = [];
  try {
    for (const shardId of shardIds) sessions.push(await context.acquire(shardId));
    const run = new TransactionRun<T>(context, sessions, decisionShardId, options, deadline);
    return await run.execute(work);
  } finally {
    for (const session of sessions) session.release();
  }
}

class TransactionRun<T> {
  readonly #context: CoordinatorContext;
  readonly #participants: ReadonlyMap<string, Participant>;
  readonly #decisionShardId: string;
  readonly #options: ResolvedTransactionOptions;
  readonly #deadline: number;
  #state: 'open' | 'closed' | 'timed-out' = 'open';

  constructor(
    context: CoordinatorContext,
    sessions: readonly ShardSession[],
    decisionShardId: string,
    options: ResolvedTransactionOptions,
    deadline: number,
  ) {
    this.#context = context;
    this.#participants = new Map(sessions.map((session) => [session.shardId, new Participant(session)]));
    this.#decisionShardId = decisionShardId;
    this.#options = options;
    this.#deadline = deadline;
  }

  async execute(work: (tx: Transaction) => Promise<T>): Promise<T> {
    const tx: Transaction = Object.freeze({
      execute: <R extends QueryResultRow>(key: ShardKey, sql: string, params?: readonly unknown[]) => this.#statement<R>(key, undefined, sql, params),
      executeOn: <R extends QueryResultRow>(shardId: string, sql: string, params?: readonly unknown[]) =>
        this.#statement<R>(undefined, shardId, sql, params),
      shardIds: Object.freeze([...this.#participants.keys()]),
      on: (shardId: string): Queryable => ({
        query: <R extends QueryResultRow>(sql: string, params?: readonly unknown[]) => this.#statement<R>(undefined, shardId, sql, params),
      }),
    });
    let timer: NodeJS.Timeout | undefined;
    let value: T;
    try {
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          this.#state = 'timed-out';
          reject(this.#timeoutError());
        }, Math.max(0, this.#deadline - Date.now()));
      });
      // Started inside a promise chain so a callback that throws synchronously is handled the
      // same way; after a timeout it keeps running on its own, so its rejection is swallowed.
      const working = Promise.resolve().then(() => work(tx));
      working.catch(() => undefined);
      value = await Promise.race([working, expired]);
    } catch (error) {
      const timedOut = this.#state === 'timed-out';
      this.#state = 'closed';
      await this.#rollbackOpen();
      throw timedOut && !(error instanceof ShardRouterError && error.code === 'TRANSACTION_TIMEOUT') ? this.#timeoutError(error) : error;
    } finally {
      clearTimeout(timer);
    }
    this.#state = 'closed';
    await this.#commit();
    return value;
  }

  async #statement<R extends QueryResultRow>(
    key: ShardKey | undefined,
    namedShard: string | undefined,
    sql: string,
    params: readonly unknown[] | undefined,
  ): Promise<ShardQueryResult<R>> {
    if (this.#state !== 'open') {
      throw this.#state === 'timed-out'
        ? this.#timeoutError()
        : new ShardRouterError('TRANSACTION_CLOSED', 'the transaction is over: tx.execute was called after its callback settled');
    }
    const shardId = namedShard ?? this.#context.shardFor(key!);
    const participant = this.#participants.get(shardId);
    if (!participant && namedShard !== undefined) {
      throw new ShardRouterError(
        'INVALID_ARGUMENT',
        `shard "${String(namedShard)}" is not among the transaction's shards (${[...this.#participants.keys()].join(', ')})`,
      );
    }
    if (!participant) {
      throw new ShardRouterError(
        'KEY_NOT_IN_TRANSACTION',
        `the key belongs to shard ${shardId}, which is not among the transaction's shards (${[...this.#participants.keys()].join(', ')}); ` +
          'declare every key the transaction touches',
        { shardId },
      );
    }
    if (typeof sql !== 'string' || sql.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string');
    if (params !== undefined && !Array.isArray(params)) throw new ShardRouterError('INVALID_ARGUMENT', 'params must be an array');
    try {
      const result = await participant.run<R>(sql, params, () =>
        beginStatements(this.#options, this.#deadline - Date.now(), this.#context.serverVersion(shardId)),
      );
      return { rows: result.rows, rowCount: result.rowCount, fields: result.fields, command: result.command, shardId };
    } catch (error) {
      throw this.#isTimeout(error) ? this.#timeoutError(error) : error;
    }
  }

  /** The server ended the statement or session because the transaction's bound passed. */
  #isTimeout(error: unknown): boolean {
    const cause = error instanceof Error ? error.cause : undefined;
    const sqlState = isDatabaseError(cause) ? cause.code : undefined;
    // 25P03/25P04: idle_in_transaction_session_timeout / transaction_timeout; 57014: a cancel,
    // ours when it comes from statement_timeout at the deadline.
    return sqlState === '25P03' || sqlState === '25P04' || (sqlState === '57014' && Date.now() >= this.#deadline - 50);
  }

  #timeoutError(cause?: unknown): ShardRouterError {
    return new ShardRouterError('TRANSACTION_TIMEOUT', `the transaction did not finish within ${this.#options.timeoutMillis} ms and was rolled back`, {
      cause,
    });
  }

  #touched(): Participant[] {
    return [...this.#participants.values()].filter((participant) => participant.began);
  }

  /** After a failure before any commit step: ROLLBACK wherever a transaction was opened. */
  async #rollbackOpen(): Promise<void> {
    await Promise.all(this.#touched().map((participant) => cleanup(participant.send('ROLLBACK'))));
  }

  async #commit(): Promise<void> {
    const touched = this.#touched();
    if (touched.length === 0) return;
    // Read-only: nothing to make durable, so just end the snapshots.
    if (this.#options.readOnly) return this.#rollbackOpen();
    if (touched.length === 1) return this.#commitOnePhase(touched[0]!);
    return this.#commitTwoPhase(touched);
  }

  async #commitOnePhase(participant: Participant): Promise<void> {
    if (participant.session.broken) throw aborted(participant.shardId, undefined, participant.firstError);
    let command: string;
    try {
      command = (await participant.send('COMMIT')).command;
    } catch (error) {
      if (error instanceof ShardRouterError && error.code === 'CONNECTION_LOST') {
        throw new ShardRouterError(
          'IN_DOUBT',
          `shard ${participant.shardId}: the connection broke during COMMIT, so the transaction may or may not have committed`,
          { shardId: participant.shardId, cause: error },
        );
      }
      throw error; // PostgreSQL refused the commit (e.g. a deferred constraint): rolled back.
    }
    if (command !== 'COMMIT') throw aborted(participant.shardId, undefined, participant.firstError);
  }

  async #commitTwoPhase(touched: Participant[]): Promise<void> {
    const decider = touched.find((participant) => participant.shardId === this.#decisionShardId) ?? touched[0]!;
    const voters = touched.filter((participant) => participant !== decider);
    const gid = newGid(this.#context.clusterId, decider.shardId);

    // Phase 1: PREPARE everywhere but D, in parallel.
    let preparedCount = 0;
    const results = await Promise.all(
      voters.map(async (voter, index): Promise<Vote> => {
        try {
          if (testHooks.fault) await this.#fault('before-prepare', gid, voter, index + 1, voters.length);
        } catch (error) {
          voter.firstError ??= error;
          return 'no';
        }
        let command: string;
        try {
          command = (await voter.send(`PREPARE TRANSACTION ${gidLiteral(gid)}`)).command;
        } catch (error) {
          voter.firstError ??= error;
          // A server error means the PREPARE did not happen; a lost connection leaves it unknown.
          return error instanceof ShardRouterError && error.code === 'CONNECTION_LOST' ? 'unknown' : 'no';
        }
        // A transaction that had already failed answers PREPARE with ROLLBACK: a no vote.
        if (command !== 'PREPARE') return 'no';
        preparedCount++;
        try {
          if (testHooks.fault) await this.#fault('after-prepare', gid, voter, preparedCount, voters.length);
        } catch (error) {
          voter.firstError ??= error;
          return 'unknown';
        }
        return 'yes';
      }),
    );
    const noVoter = voters.find((_, index) => results[index] !== 'yes');
    if (noVoter) {
      await cleanup(decider.send('ROLLBACK'));
      await this.#rollbackPrepared(gid, voters, results);
      throw aborted(noVoter.shardId, gid, noVoter.firstError);
    }

    // Phase 2, the commit point: on D, the 'commit' row and COMMIT in one message. D's writes
    // and the decision become durable in one local commit. The row is kept long enough for a
    // coordinator that loses the answer to settle within its window (decision-log.ts).
    const keepMillis = this.#options.timeoutMillis + SERVER_SLACK_MS + COORDINATOR_SETTLE_WINDOW_MS;
    let outcome: Outcome;
    let commitSent = false;
    let refusal: unknown;
    try {
      if (testHooks.fault) await this.#fault('before-decision', gid, decider, 1, 1);
      commitSent = true;
      const answer = (await decider.send(commitDecisionSql(this.#context.catalogSchema, gid, keepMillis))) as unknown as QueryResult[] | QueryResult;
      const last = Array.isArray(answer) ? answer.at(-1) : answer;
      outcome = last?.command === 'COMMIT' ? 'commit' : 'abort';
      if (outcome === 'commit' && testHooks.fault) await this.#fault('after-decision', gid, decider, 1, 1);
    } catch (error) {
      decider.firstError ??= error;
      if (!commitSent) {
        // D never got COMMIT, so it cannot commit: the decision is abort.
        outcome = 'abort';
        await cleanup(decider.send('ROLLBACK'));
      } else if (isDatabaseError(error instanceof ShardRouterError ? error.cause : undefined) && !decider.session.broken) {
        // PostgreSQL refused the insert (recovery's 'abort' row is there, or the lifetime
        // guard) or the COMMIT (e.g. a deferred constraint): D did not commit.
        outcome = 'abort';
        refusal = error;
        await cleanup(decider.send('ROLLBACK'));
      } else {
        // Give the broken connection back first: while it counts as borrowed, the pool would
        // make us wait out the acquire timeout instead of failing fast on a down shard.
        if (decider.session.broken) decider.session.release();
        outcome = await this.#learnOutcome(gid, decider.shardId, decider.startedAt + keepMillis / 1000, error);
      }
    }
    if (outcome === 'abort') {
      await this.#rollbackPrepared(gid, voters, results);
      if (refusal !== undefined && sqlStateOf(refusal) === '23505') {
        throw aborted(decider.shardId, gid, refusal, 'recovery had already decided to abort it (it saw a participant prepared for longer than the grace age)');
      }
      if (refusal !== undefined && sqlStateOf(refusal) === '23514') throw this.#timeoutError(refusal);
      throw aborted(decider.shardId, gid, decider.firstError, 'the decision shard could not commit');
    }

    // Phase 3. Decided: from here on the caller gets success whatever happens to the others.
    let unfinished = false;
    await Promise.all(
      voters.map(async (voter, index) => {
        if (!(await this.#finishPrepared(gid, voter, 'COMMIT', index + 1, voters.length))) unfinished = true;
      }),
    );
    if (unfinished) this.#context.onUnfinished(gid);
  }

  async #rollbackPrepared(gid: Gid, voters: Participant[], votes: Vote[]): Promise<void> {    let unfinished = false;
    await Promise.all(
      voters.map(async (voter, index) => {
        if (votes[index] === 'no') return;
        if (!(await this.#finishPrepared(gid, voter, 'ROLLBACK', index + 1, voters.length))) unfinished = true;
      }),
    );
    if (unfinished) this.#context.onUnfinished(gid);
  }

  /**
   * COMMIT/ROLLBACK PREPARED on one participant: on its own connection, and once more on a fresh
   * one if that broke. True when done (or already done: 42704 after our own decision). False
   * leaves it to recovery, which will reach the same decision from D.
   */
  async #finishPrepared(gid: Gid, voter: Participant, verb: 'COMMIT' | 'ROLLBACK', index: number, of: number): Promise<boolean> {
    const sql = `${verb} PREPARED ${gidLiteral(gid)}`;
    for (let attempt = 1; attempt <= 2; attempt++) {
      let fresh: ShardSession | undefined;
      if (voter.session.broken) voter.session.release(); // see #learnOutcome's caller
      try {
        const target = attempt === 1 && !voter.session.broken ? voter.session : (fresh = await this.#context.acquire(voter.shardId));
        if (verb === 'COMMIT' && testHooks.fault) await this.#fault('before-commit-prepared', gid, voter, index, of, attempt, target);
        testHooks.statement?.(voter.shardId, sql);
        await target.query(sql);
        if (verb === 'COMMIT' && testHooks.fault) await this.#fault('after-commit-prepared', gid, voter, index, of, attempt, target);
        return true;
      } catch (error) {
        const sqlState = error instanceof ShardRouterError && isDatabaseError(error.cause) ? error.cause.code : undefined;
        if (sqlState === '42704') return true; // someone (recovery) already finished it, with the same decision
        if (sqlState !== undefined && attempt === 1 && !voter.session.broken) return false; // a server refusal: no point in retrying
      } finally {
        fresh?.release();
      }
    }
    return false;
  }

  /**
   * The connection to D broke at the commit point: whether D committed is unknown. Ask D on a
   * new connection, the way recovery does: insert 'abort' unless a decision exists, then read.
   * If D cannot be reached, the honest answer is IN_DOUBT.
   */
  async #learnOutcome(gid: Gid, deciderId: string, notAfterEpoch: number, cause: unknown): Promise<Outcome> {
    let lastError: unknown = cause;
    // Unknown start (never expected): only read, never decide.
    const notAfter = Number.isFinite(notAfterEpoch) ? notAfterEpoch : 0;
    for (let attempt = 0; attempt < LEARN_OUTCOME_ATTEMPTS; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, LEARN_OUTCOME_BACKOFF_MS * attempt));
      let fresh: ShardSession | undefined;
      try {
        fresh = await this.#context.acquire(deciderId);
        return await settleDecision(fresh, this.#context.catalogSchema, gid, SETTLE_LOCK_TIMEOUT_MS, notAfter);
      } catch (error) {
        lastError = error;
        if (error instanceof UnsettledError) break;
      } finally {
        fresh?.release();
      }
    }
    this.#context.onUnfinished(gid);
    throw new ShardRouterError(
      'IN_DOUBT',
      `transaction ${gid}: the connection to its decision shard ${deciderId} broke at the commit point and the ` +
        'decision could not be read back, so whether it committed is unknown; recovery will settle it (all shards or none)',
      { shardId: deciderId, gid, cause: lastError },
    );
  }

  /** Runs the test hook; call sites check `testHooks.fault` first, so production pays no await. */
  async #fault(point: FaultPoint, gid: Gid, participant: Participant, index: number, of: number, attempt = 1, target?: ShardSession): Promise<void> {
    await testHooks.fault?.({ point, gid, shardId: participant.shardId, backendPid: (target ?? participant.session).backendPid, index, of, attempt });
  }
}

function aborted(shardId: string, gid: Gid | undefined, cause: unknown, why?: string): ShardRouterError {
  const reason = why ?? (cause instanceof Error ? cause.message : 'its transaction had already failed');
  return new ShardRouterError('TRANSACTION_ABORTED', `the transaction was rolled back on every shard: shard ${shardId} could not commit: ${reason}`, {
    shardId,
    gid,
    cause,
  });
}

function sqlStateOf(error: unknown): string | undefined {
  const cause = error instanceof ShardRouterError ? error.cause : undefined;
  return isDatabaseError(cause) ? cause.code : undefined;
}

/** Waits a bounded time for a clean-up statement; failures are fine (the pool destroys a connection left mid-transaction). */
async function cleanup(statement: Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([statement.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, CLEANUP_WAIT_MS)))]);
  clearTimeout(timer);
}
