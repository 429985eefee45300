import type { ShardSession } from '../pool/session.js';
import { ShardRouterError, isDatabaseError } from '../errors.js';
import type { TxnStep } from '../observe/hooks.js';
import type { CoordinatorContext } from './coordinator.js';
import {
  COORDINATOR_SETTLE_WINDOW_MS,
  DECISION_KEY_CONSTRAINT,
  DECISION_LIFETIME_CONSTRAINT,
  UnsettledError,
  commitDecisionStatements,
  settleDecision,
} from './decision-log.js';
import type { Outcome } from './decision-log.js';
import { newGid, preparedLiteral, preparedName } from './gid.js';
import type { Gid } from './gid.js';
import { type Participant, aborted, cleanup } from './participant.js';
import { testHooks } from './test-hooks.js';
import type { FaultPoint } from './test-hooks.js';
import { SERVER_SLACK_MS } from './transaction-options.js';

/**
 * Two-phase commit over the participants a transaction touched (docs/twopc.md, "The protocol"),
 * as its named phases in protocol order: votes (PREPARE everywhere but D), the decision (D's
 * 'commit' row and COMMIT in one message) and finishing (COMMIT PREPARED everywhere else). The
 * invariants are listed in coordinator.ts.
 */

/** How settleDecision may wait for a live coordinator's uncommitted decision row. */
const SETTLE_LOCK_TIMEOUT_MS = 5_000;
/** How long the coordinator keeps trying to reach D after losing the connection at the commit point. */
const LEARN_OUTCOME_ATTEMPTS = 4;
const LEARN_OUTCOME_BACKOFF_MS = 250;

type Vote = 'yes' | 'no' | 'unknown';

/** What the commit point ended in; `refusal` is PostgreSQL's error when D refused to commit. */
interface Decision {
  readonly outcome: Outcome;
  readonly refusal?: unknown;
}

export class TwoPhaseCommit {
  readonly #context: CoordinatorContext;
  readonly #decider: Participant;
  readonly #voters: Participant[];
  readonly #gid: Gid;
  /** How long D keeps the decision row: long enough for a coordinator that loses the answer to settle within its window (decision-log.ts). */
  readonly #keepMillis: number;
  readonly #timeoutError: (cause?: unknown) => ShardRouterError;
  #votes: Vote[] = [];
  #preparedCount = 0;

  constructor(
    context: CoordinatorContext,
    touched: Participant[],
    decisionShardId: string,
    timeoutMillis: number,
    timeoutError: (cause?: unknown) => ShardRouterError,
  ) {
    this.#context = context;
    this.#decider = touched.find((participant) => participant.shardId === decisionShardId) ?? touched[0]!;
    this.#voters = touched.filter((participant) => participant !== this.#decider);
    this.#gid = newGid(context.clusterId, this.#decider.shardId);
    this.#keepMillis = timeoutMillis + SERVER_SLACK_MS + COORDINATOR_SETTLE_WINDOW_MS;
    this.#timeoutError = timeoutError;
  }

  async run(): Promise<void> {
    this.#context.observer?.gid(this.#gid);
    await this.#collectVotes();
    const noVoter = this.#voters.find((_, index) => this.#votes[index] !== 'yes');
    if (noVoter) {
      await cleanup(this.#decider.send('ROLLBACK'));
      await this.#rollbackPrepared();
      throw aborted(noVoter.shardId, this.#gid, noVoter.firstError);
    }
    const decision = await this.#decide();
    if (decision.outcome === 'abort') {
      await this.#rollbackPrepared();
      throw this.#abortedAtDecision(decision.refusal);
    }
    await this.#commitPrepared();
  }

  /** Phase 1: PREPARE everywhere but D, in parallel. */
  async #collectVotes(): Promise<void> {
    this.#votes = await Promise.all(this.#voters.map((voter, index) => this.#prepare(voter, index)));
  }

  async #prepare(voter: Participant, index: number): Promise<Vote> {
    const gid = this.#gid;
    const of = this.#voters.length;
    try {
      if (testHooks.fault) await this.#fault('before-prepare', voter, index + 1, of);
    } catch (error) {
      voter.firstError ??= error;
      return 'no';
    }
    let command: string;
    try {
      command = (
        await this.#step('PREPARE TRANSACTION', voter.shardId, () =>
          voter.commitStep([`PREPARE TRANSACTION ${preparedLiteral(preparedName(gid, voter.shardId))}`]),
        )
      ).command;
    } catch (error) {
      voter.firstError ??= error;
      // A server error means the PREPARE did not happen; a lost connection leaves it unknown.
      return error instanceof ShardRouterError && error.code === 'CONNECTION_LOST' ? 'unknown' : 'no';
    }
    // A transaction that had already failed answers PREPARE with ROLLBACK: a no vote. (A
    // deferred write that fails in PREPARE's pipeline is an error above: PREPARE is skipped.)
    if (command !== 'PREPARE') return 'no';
    this.#preparedCount++;
    try {
      if (testHooks.fault) await this.#fault('after-prepare', voter, this.#preparedCount, of);
    } catch (error) {
      voter.firstError ??= error;
      return 'unknown';
    }
    return 'yes';
  }

  /**
   * Phase 2, the commit point: on D, the 'commit' row and COMMIT in one message. D's writes and
   * the decision become durable in one local commit.
   */
  async #decide(): Promise<Decision> {
    const decider = this.#decider;
    let commitSent = false;
    try {
      if (testHooks.fault) await this.#fault('before-decision', decider, 1, 1);
      commitSent = true;
      const decision = commitDecisionStatements(this.#context.catalogSchema, this.#gid, this.#keepMillis);
      const last = await this.#step('COMMIT', decider.shardId, () => decider.commitStep(decision));
      const outcome: Outcome = last.command === 'COMMIT' ? 'commit' : 'abort';
      if (outcome === 'commit' && testHooks.fault) await this.#fault('after-decision', decider, 1, 1);
      return { outcome };
    } catch (error) {
      decider.firstError ??= error;
      return this.#decisionAfterFailure(error, commitSent);
    }
  }

  /** The commit point failed: what D did, from how it failed (or, if that cannot tell, from D itself). */
  async #decisionAfterFailure(error: unknown, commitSent: boolean): Promise<Decision> {
    const decider = this.#decider;
    if (!commitSent) {
      // D never got COMMIT, so it cannot commit: the decision is abort.
      await cleanup(decider.send('ROLLBACK'));
      return { outcome: 'abort' };
    }
    if (isDatabaseError(error instanceof ShardRouterError ? error.cause : undefined) && !decider.session.broken) {
      // PostgreSQL refused the insert (recovery's 'abort' row is there, or the lifetime
      // guard) or the COMMIT (e.g. a deferred constraint): D did not commit.
      await cleanup(decider.send('ROLLBACK'));
      return { outcome: 'abort', refusal: error };
    }
    // Give the broken connection back first: while it counts as borrowed, the pool would
    // make us wait out the acquire timeout instead of failing fast on a down shard.
    if (decider.session.broken) decider.session.release();
    return { outcome: await this.#learnOutcome(decider.startedAt + this.#keepMillis / 1000, error) };
  }

  /** The error for a transaction D did not commit. */
  #abortedAtDecision(refusal: unknown): ShardRouterError {
    const decider = this.#decider;
    if (refusal !== undefined && sqlStateOf(refusal) === '23505') {
      // Recovery's 'abort' row took the gid: a race with recovery, not a property of the work, so
      // running it again may well succeed. (A deferred unique constraint of the caller's own
      // fails at the same COMMIT, under its own constraint name: not retryable.)
      return aborted(
        decider.shardId,
        this.#gid,
        refusal,
        'recovery had already decided to abort it (it saw a participant prepared for longer than the grace age)',
        constraintOf(refusal) === DECISION_KEY_CONSTRAINT,
      );
    }
    // The lifetime guard, by name: a deferred write in the same message (tx.publish) may fail a CHECK of its own.
    if (refusal !== undefined && sqlStateOf(refusal) === '23514' && constraintOf(refusal) === DECISION_LIFETIME_CONSTRAINT) {
      return this.#timeoutError(refusal);
    }
    return aborted(decider.shardId, this.#gid, decider.firstError, 'the decision shard could not commit');
  }

  /** Phase 3. Decided: from here on the caller gets success whatever happens to the others. */
  async #commitPrepared(): Promise<void> {
    let unfinished = false;
    await Promise.all(
      this.#voters.map(async (voter, index) => {
        if (!(await this.#finishPrepared(voter, 'COMMIT', index + 1))) unfinished = true;
      }),
    );
    if (unfinished) this.#context.onUnfinished(this.#gid);
  }

  /** Abort: ROLLBACK PREPARED wherever a PREPARE may have happened. */
  async #rollbackPrepared(): Promise<void> {
    let unfinished = false;
    await Promise.all(
      this.#voters.map(async (voter, index) => {
        if (this.#votes[index] === 'no') return;
        if (!(await this.#finishPrepared(voter, 'ROLLBACK', index + 1))) unfinished = true;
      }),
    );
    if (unfinished) this.#context.onUnfinished(this.#gid);
  }

  /**
   * COMMIT/ROLLBACK PREPARED on one participant: on its own connection, and once more on a fresh
   * one if that broke. True when done (or already done: 42704 after our own decision). False
   * leaves it to recovery, which will reach the same decision from D.
   */
  async #finishPrepared(voter: Participant, verb: 'COMMIT' | 'ROLLBACK', index: number): Promise<boolean> {
    const sql = `${verb} PREPARED ${preparedLiteral(preparedName(this.#gid, voter.shardId))}`;
    const of = this.#voters.length;
    for (let attempt = 1; attempt <= 2; attempt++) {
      let fresh: ShardSession | undefined;
      if (voter.session.broken) voter.session.release(); // see #decisionAfterFailure
      try {
        if (attempt > 1 || voter.session.broken) fresh = await this.#context.acquire(voter.shardId);
        const target = fresh ?? voter.session;
        if (verb === 'COMMIT' && testHooks.fault) await this.#fault('before-commit-prepared', voter, index, of, attempt, target);
        testHooks.statement?.(voter.shardId, sql);
        await this.#step(`${verb} PREPARED`, voter.shardId, () => target.query(sql));
        if (verb === 'COMMIT' && testHooks.fault) await this.#fault('after-commit-prepared', voter, index, of, attempt, target);
        return true;
      } catch (error) {
        const sqlState = sqlStateOf(error);
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
  async #learnOutcome(notAfterEpoch: number, cause: unknown): Promise<Outcome> {
    const deciderId = this.#decider.shardId;
    let lastError: unknown = cause;
    // Unknown start (never expected): only read, never decide.
    const notAfter = Number.isFinite(notAfterEpoch) ? notAfterEpoch : 0;
    for (let attempt = 0; attempt < LEARN_OUTCOME_ATTEMPTS; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, LEARN_OUTCOME_BACKOFF_MS * attempt));
      let fresh: ShardSession | undefined;
      try {
        fresh = await this.#context.acquire(deciderId);
        return await settleDecision(fresh, this.#context.catalogSchema, this.#gid, SETTLE_LOCK_TIMEOUT_MS, notAfter);
      } catch (error) {
        lastError = error;
        if (error instanceof UnsettledError) break;
      } finally {
        fresh?.release();
      }
    }
    this.#context.onUnfinished(this.#gid);
    throw new ShardRouterError(
      'IN_DOUBT',
      `transaction ${this.#gid}: the connection to its decision shard ${deciderId} broke at the commit point and the ` +
        'decision could not be read back, so whether it committed is unknown; recovery will settle it (all shards or none)',
      { shardId: deciderId, gid: this.#gid, cause: lastError },
    );
  }

  /** One protocol step, under the observer's span when there is one. */
  #step<T>(step: TxnStep, shardId: string, work: () => Promise<T>): Promise<T> {
    const observer = this.#context.observer;
    return observer ? observer.step(step, shardId, work) : work();
  }

  /** Runs the test hook; call sites check `testHooks.fault` first, so production pays no await. */
  async #fault(point: FaultPoint, participant: Participant, index: number, of: number, attempt = 1, target?: ShardSession): Promise<void> {
    const gid = this.#gid;
    await testHooks.fault?.({
      point,
      gid,
      shardId: participant.shardId,
      backendPid: (target ?? participant.session).backendPid,
      index,
      of,
      attempt,
    });
  }
}

function sqlStateOf(error: unknown): string | undefined {
  const cause = error instanceof ShardRouterError ? error.cause : undefined;
  return isDatabaseError(cause) ? cause.code : undefined;
}

function constraintOf(error: unknown): string | undefined {
  const cause = error instanceof ShardRouterError ? error.cause : undefined;
  return isDatabaseError(cause) ? (cause as { constraint?: string }).constraint : undefined;
}
