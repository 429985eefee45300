import type { CopyOut, QueryResultRow, Queryable, RawQueryResult, ShardSession } from '../pool/session.js';
import type { ShardQueryResult } from '../pool/shard-pool.js';
import { ShardRouterError, isDatabaseError } from '../errors.js';
import type { StatementRouting, TransactionObserver } from '../observe/hooks.js';
import type { ShardKey } from '../placement/hash.js';
import type { Gid } from './gid.js';
import { Participant, aborted, cleanup } from './participant.js';
import { beginStatements } from './transaction-options.js';
import type { ResolvedTransactionOptions } from './transaction-options.js';
import { TwoPhaseCommit } from './two-phase.js';

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
  /** Told the protocol, the gid, each statement and each 2PC step (spans, metrics); none: nothing is reported. */
  readonly observer?: TransactionObserver;
  /** The bucket map version this attempt routes by, and a key's bucket: what a statement's span records. */
  readonly mapVersion?: number;
  bucketOf?(key: ShardKey): number;
  /**
   * tx.query's routing (router.query's rules within the participants); absent: tx.query is
   * UNSUPPORTED. `readRaw` runs a read on a participant's session with raw text rows, for a
   * SELECT merged over several participants.
   */
  routeQuery?(tx: Transaction, sql: string, params: readonly unknown[], readRaw: RawRead): Promise<RoutedQueryResult>;
}

/** A statement on one participant of the transaction, its rows as raw text (see ShardSession.queryRaw). */
export type RawRead = (shardId: string, sql: string, params: readonly unknown[]) => Promise<RawQueryResult>;

/** What tx.query (and router.query) return: pg's result shape and the shards that ran the statement. */
export interface RoutedQueryResult<R extends QueryResultRow = QueryResultRow> {
  readonly rows: R[];
  readonly rowCount: number;
  readonly fields: ShardQueryResult['fields'];
  readonly command: string;
  readonly shardIds: readonly string[];
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
  executeOn<R extends QueryResultRow = QueryResultRow>(
    shardId: string,
    sql: string,
    params?: readonly unknown[],
  ): Promise<ShardQueryResult<R>>;
  /** The participating shards, in the order their connections were taken. */
  readonly shardIds: readonly string[];
  /** One participant as a Queryable (for helpers that take one): `on(id).query(sql, params)` is `executeOn(id, sql, params)`. */
  on(shardId: string): Queryable;
  /**
   * Runs one statement routed by the shard key in it, as router.query does, on this
   * transaction's shards (docs/query.md).
   * @throws ShardRouterError KEY_NOT_IN_TRANSACTION (it needs a shard the transaction did not
   * declare, or every shard), UNSUPPORTED, KEY_REQUIRED, and the errors of {@link execute}
   */
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<RoutedQueryResult<R>>;
}

/** @internal The handle runTransaction gives its callback: a Transaction, plus the COPY pipe the rebalancer's copy uses. */
export interface EngineTransaction extends Transaction {
  /**
   * Runs `sql`, a `COPY ... FROM STDIN`, on participant `shardId` inside the transaction, fed
   * with the bytes of `from` (a COPY TO STDOUT on another connection) as they arrive. Resolves
   * with the rows copied. `sql` is the caller's own text, as in executeOn.
   * @throws the errors of {@link Transaction.executeOn}; `from`'s own error when the source failed
   */
  copyInOn(shardId: string, sql: string, from: CopyOut): Promise<number>;
}

/**
 * @internal What the router's own wrappers of the handle get besides it (tx.publish): a write
 * that needs no answer, queued on its key's participant and sent in the same round trip as that
 * participant's next statement or, at the latest, its commit step (COMMIT, PREPARE TRANSACTION,
 * the decision). Its failure fails that statement or step, so the transaction rolls back
 * (docs/outbox.md, "Deferred publish"). Resolves to the participant's shard id.
 */
export interface DeferredWrites {
  /** `name`: send it as a prepared statement of that name (parsed once per connection; the name must stand for this text only). */
  defer(key: ShardKey, sql: string, params: readonly unknown[], name?: string): Promise<string>;
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
  work: (tx: EngineTransaction, deferred: DeferredWrites) => Promise<T>,
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

  #routedQuery<R extends QueryResultRow>(
    tx: Transaction,
    sql: string,
    params: readonly unknown[] | undefined,
  ): Promise<RoutedQueryResult<R>> {
    if (!this.#context.routeQuery) {
      return Promise.reject(new ShardRouterError('UNSUPPORTED', 'tx.query routes by the table registry: use it in router.transaction'));
    }
    if (params !== undefined && !Array.isArray(params))
      return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'params must be an array'));
    const readRaw: RawRead = (shardId, text, values) => this.#statement(undefined, shardId, text, values, true);
    return this.#context.routeQuery(tx, sql, params ?? [], readRaw) as Promise<RoutedQueryResult<R>>;
  }

  async execute(work: (tx: EngineTransaction, deferred: DeferredWrites) => Promise<T>): Promise<T> {
    const tx: EngineTransaction = Object.freeze({
      query: <R extends QueryResultRow>(sql: string, params?: readonly unknown[]) => this.#routedQuery<R>(tx, sql, params),
      execute: <R extends QueryResultRow>(key: ShardKey, sql: string, params?: readonly unknown[]) =>
        this.#statement<R>(key, undefined, sql, params),
      executeOn: <R extends QueryResultRow>(shardId: string, sql: string, params?: readonly unknown[]) =>
        this.#statement<R>(undefined, shardId, sql, params),
      copyInOn: (shardId: string, sql: string, from: CopyOut) => this.#copyIn(shardId, sql, from),
      shardIds: Object.freeze([...this.#participants.keys()]),
      on: (shardId: string): Queryable => ({
        query: <R extends QueryResultRow>(sql: string, params?: readonly unknown[]) => this.#statement<R>(undefined, shardId, sql, params),
      }),
    });
    const deferred: DeferredWrites = { defer: (key, sql, params, name) => this.#defer(key, sql, params, name) };
    let timer: NodeJS.Timeout | undefined;
    let value: T;
    try {
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => {
            this.#state = 'timed-out';
            reject(this.#timeoutError());
          },
          Math.max(0, this.#deadline - Date.now()),
        );
      });
      // Started inside a promise chain so a callback that throws synchronously is handled the
      // same way; after a timeout it keeps running on its own, so its rejection is swallowed.
      const working = Promise.resolve().then(() => work(tx, deferred));
      working.catch(() => undefined);
      value = await Promise.race([working, expired]);
    } catch (error) {
      const timedOut = this.#state === 'timed-out';
      this.#state = 'closed';
      this.#reportProtocol();
      await this.#rollbackOpen();
      throw timedOut && !(error instanceof ShardRouterError && error.code === 'TRANSACTION_TIMEOUT') ? this.#timeoutError(error) : error;
    } finally {
      clearTimeout(timer);
    }
    this.#state = 'closed';
    this.#reportProtocol();
    await this.#commit();
    return value;
  }

  /** Two-phase when it wrote to several shards (what #commit does, or would have done). */
  #reportProtocol(): void {
    this.#context.observer?.protocol(this.#touched().length > 1 && !this.#options.readOnly ? '2pc' : '1pc');
  }

  #statement<R extends QueryResultRow>(
    key: ShardKey | undefined,
    namedShard: string | undefined,
    sql: string,
    params: readonly unknown[] | undefined,
  ): Promise<ShardQueryResult<R>>;
  #statement(key: undefined, namedShard: string, sql: string, params: readonly unknown[], raw: true): Promise<RawQueryResult>;
  async #statement<R extends QueryResultRow>(
    key: ShardKey | undefined,
    namedShard: string | undefined,
    sql: string,
    params: readonly unknown[] | undefined,
    raw = false,
  ): Promise<ShardQueryResult<R> | RawQueryResult> {
    const participant = this.#participantFor(key, namedShard);
    const shardId = participant.shardId;
    if (typeof sql !== 'string' || sql.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string');
    if (params !== undefined && !Array.isArray(params)) throw new ShardRouterError('INVALID_ARGUMENT', 'params must be an array');
    const begin = () => beginStatements(this.#options, this.#deadline - Date.now(), this.#context.serverVersion(shardId));
    const running = async (): Promise<ShardQueryResult<R> | RawQueryResult> => {
      if (raw) return participant.runRaw(sql, params, begin);
      const result = await participant.run<R>(sql, params, begin);
      return { rows: result.rows, rowCount: result.rowCount, fields: result.fields, command: result.command, shardId };
    };
    const observer = this.#context.observer;
    try {
      return await (observer ? observer.statement(shardId, sql, this.#routing(key), running) : running());
    } catch (error) {
      throw this.#isTimeout(error) ? this.#timeoutError(error) : error;
    }
  }

  /** A COPY FROM STDIN on a named participant, fed by `from` (Transaction.copyInOn). */
  async #copyIn(shardId: string, sql: string, from: CopyOut): Promise<number> {
    const participant = this.#participantFor(undefined, shardId);
    const begin = () => beginStatements(this.#options, this.#deadline - Date.now(), this.#context.serverVersion(shardId));
    const running = async () => ({ command: 'COPY', rows: await participant.copyIn(sql, from, begin) });
    const observer = this.#context.observer;
    try {
      return (await (observer ? observer.statement(shardId, sql, this.#routing(undefined), running) : running())).rows;
    } catch (error) {
      throw this.#isTimeout(error) ? this.#timeoutError(error) : error;
    }
  }

  /** DeferredWrites.defer; read-only transactions run it at once, so the server refuses it there as it would any write. */
  async #defer(key: ShardKey, sql: string, params: readonly unknown[], name: string | undefined): Promise<string> {
    if (this.#options.readOnly) return (await this.#statement(key, undefined, sql, params)).shardId;
    const participant = this.#participantFor(key, undefined);
    const shardId = participant.shardId;
    participant.defer(
      sql,
      params,
      () => beginStatements(this.#options, this.#deadline - Date.now(), this.#context.serverVersion(shardId)),
      name,
    );
    return shardId;
  }

  /** The participant a statement runs on: the owner of `key`, or the named shard; refused when the transaction is over or did not declare it. */
  #participantFor(key: ShardKey | undefined, namedShard: string | undefined): Participant {
    if (this.#state !== 'open') {
      throw this.#state === 'timed-out'
        ? this.#timeoutError()
        : new ShardRouterError('TRANSACTION_CLOSED', 'the transaction is over: tx.execute was called after its callback settled');
    }
    const shardId = namedShard ?? this.#context.shardFor(key!);
    const participant = this.#participants.get(shardId);
    if (participant) return participant;
    if (namedShard !== undefined) {
      throw new ShardRouterError(
        'INVALID_ARGUMENT',
        `shard "${String(namedShard)}" is not among the transaction's shards (${[...this.#participants.keys()].join(', ')})`,
      );
    }
    throw new ShardRouterError(
      'KEY_NOT_IN_TRANSACTION',
      `the key belongs to shard ${shardId}, which is not among the transaction's shards (${[...this.#participants.keys()].join(', ')}); ` +
        'declare every key the transaction touches',
      { shardId },
    );
  }

  #routing(key: ShardKey | undefined): StatementRouting {
    const bucket = key === undefined ? undefined : this.#context.bucketOf?.(key);
    return { bucket, mapVersion: this.#context.mapVersion };
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
    return new ShardRouterError(
      'TRANSACTION_TIMEOUT',
      `the transaction did not finish within ${this.#options.timeoutMillis} ms and was rolled back`,
      {
        cause,
      },
    );
  }

  /** The participants with something to commit (a statement ran, or a write is deferred). */
  #touched(): Participant[] {
    return [...this.#participants.values()].filter((participant) => participant.touched);
  }

  /** After a failure before any commit step: ROLLBACK wherever a transaction was opened (deferred writes are never sent). */
  async #rollbackOpen(): Promise<void> {
    const opened = [...this.#participants.values()].filter((participant) => participant.began);
    await Promise.all(opened.map((participant) => cleanup(participant.send('ROLLBACK'))));
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
    const withDeferred = participant.hasDeferred;
    try {
      command = (await participant.commitStep(['COMMIT'])).command;
    } catch (error) {
      if (error instanceof ShardRouterError && error.code === 'CONNECTION_LOST') {
        throw new ShardRouterError(
          'IN_DOUBT',
          `shard ${participant.shardId}: the connection broke during COMMIT, so the transaction may or may not have committed`,
          { shardId: participant.shardId, cause: error },
        );
      }
      // A deferred write failed (COMMIT skipped, rolled back by commitStep), or PostgreSQL
      // refused the COMMIT itself (e.g. a deferred constraint): rolled back either way.
      if (withDeferred) throw aborted(participant.shardId, undefined, error);
      throw error;
    }
    // Belt and braces: COMMIT in a failed transaction answers ROLLBACK, never an error.
    if (command !== 'COMMIT') throw aborted(participant.shardId, undefined, participant.firstError);
  }

  async #commitTwoPhase(touched: Participant[]): Promise<void> {
    await new TwoPhaseCommit(this.#context, touched, this.#decisionShardId, this.#options.timeoutMillis, (cause) =>
      this.#timeoutError(cause),
    ).run();
  }
}
