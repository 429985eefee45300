import type { CopyOut, PipelinedStatement, QueryResult, QueryResultRow, RawQueryResult, ShardSession } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import type { Gid } from './gid.js';
import { testHooks } from './test-hooks.js';

/** How long clean-up (ROLLBACK after a failure) may take before the connection is dropped instead. */
const CLEANUP_WAIT_MS = 2_000;

/** One shard of a transaction: its borrowed connection and what the coordinator knows about it. */
export class Participant {
  readonly shardId: string;
  readonly session: ShardSession;
  #began = false;
  /**
   * Writes queued to ride with this shard's next message (tx.publish, docs/outbox.md "Deferred
   * publish"): sent in the same pipeline, before the next statement or the commit step, so a
   * later statement sees them and a failure of one fails that message.
   */
  #deferred: { readonly text: string; readonly values: readonly unknown[]; readonly name?: string }[] = [];
  /** How to open the transaction when a deferred write comes before any statement here. */
  #begin: (() => readonly string[]) | undefined;
  /** The first error a statement got here: the reason a later PREPARE votes no. */
  firstError: unknown;
  /** When this shard's transaction began, on its own clock (epoch seconds); NaN until known. */
  startedAt = Number.NaN;

  constructor(session: ShardSession) {
    this.shardId = session.shardId;
    this.session = session;
  }

  /** BEGIN was sent here (a ROLLBACK may be needed). */
  get began(): boolean {
    return this.#began;
  }

  /** Something to commit here: a transaction opened, or writes deferred to the commit step. */
  get touched(): boolean {
    return this.#began || this.#deferred.length > 0;
  }

  /** Writes wait for the next message here. */
  get hasDeferred(): boolean {
    return this.#deferred.length > 0;
  }

  /**
   * Queues a parameterized write for this shard's next message (see #deferred); with `name`, it
   * is sent as that connection's prepared statement of that name (PipelinedStatement).
   */
  defer(sql: string, params: readonly unknown[], begin: () => readonly string[], name?: string): void {
    if (!this.#began) this.#begin ??= begin;
    this.#deferred.push(name === undefined ? { text: sql, values: params } : { text: sql, values: params, name });
  }

  /**
   * A commit step (`['COMMIT']`, `['PREPARE TRANSACTION ...']`, the decision's insert and
   * COMMIT): one simple-protocol message as before when nothing is deferred, else one pipeline
   * behind the deferred writes (and BEGIN, if those were all this shard got), with one Sync,
   * so a failed write skips the step. A statement error leaves the transaction aborted, so it
   * is rolled back here before the error is rethrown. Resolves to the last step's result.
   */
  async commitStep(steps: readonly string[]): Promise<QueryResult> {
    if (this.#deferred.length === 0) {
      const answer = (await this.send(steps.join('; '))) as QueryResult | QueryResult[];
      return Array.isArray(answer) ? answer.at(-1)! : answer;
    }
    try {
      const results = await this.#flushWith(steps.slice(0, -1), steps.at(-1)!, (preamble) =>
        this.session.queryPipelined(preamble, steps.at(-1)!, []),
      );
      return results.at(-1)!;
    } catch (error) {
      this.firstError ??= error;
      if (!this.session.broken) await cleanup(this.send('ROLLBACK'));
      throw error;
    }
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
  run<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[] | undefined,
    begin: () => readonly string[],
  ): Promise<QueryResult<R>> {
    return this.#inTransaction(
      () => this.send<R>(sql, params),
      (preamble) => this.session.queryPipelined(preamble, sql, params) as Promise<QueryResult<R>[]>,
      begin,
      sql,
    );
  }

  /** {@link run}, every value as the server's text and rows as arrays (an exact merge's input). */
  runRaw(sql: string, params: readonly unknown[] | undefined, begin: () => readonly string[]): Promise<RawQueryResult> {
    const raw = (result: QueryResult): RawQueryResult => ({
      fields: result.fields,
      rows: result.rows as (string | null)[][],
      rowCount: result.rowCount,
      command: result.command,
      shardId: this.shardId,
    });
    return this.#inTransaction(
      () => {
        testHooks.statement?.(this.shardId, sql);
        return this.session.queryRaw(sql, params);
      },
      async (preamble) => (await this.session.queryPipelined(preamble, sql, params, true)).map(raw),
      begin,
      sql,
    );
  }

  /**
   * {@link run} for a `COPY ... FROM STDIN` fed by `from` (ShardSession.copyIn); the
   * transaction is opened first (one round trip) if this is the shard's first statement.
   */
  async copyIn(sql: string, from: CopyOut, begin: () => readonly string[]): Promise<number> {
    const session = this.session;
    if (!session.copyIn) throw new ShardRouterError('UNSUPPORTED', `shard ${this.shardId}: this session cannot run COPY FROM STDIN`);
    if (!this.#began) await this.run('SELECT 1', undefined, begin);
    testHooks.statement?.(this.shardId, sql);
    try {
      return await session.copyIn(sql, from);
    } catch (error) {
      this.firstError ??= error;
      throw error;
    }
  }

  async #inTransaction<Q extends { readonly rows: readonly unknown[] }>(
    next: () => Promise<Q>,
    first: (preamble: readonly PipelinedStatement[]) => Promise<Q[]>,
    begin: () => readonly string[],
    sql: string,
  ): Promise<Q> {
    try {
      if (this.#began && this.#deferred.length === 0) return await next();
      this.#begin ??= begin;
      return (await this.#flushWith([], sql, first)).at(-1)!;
    } catch (error) {
      this.firstError ??= error;
      throw error;
    }
  }

  /**
   * One pipeline: BEGIN (the first time), the deferred writes, `before`, then the statement
   * `first` appends (`last`, for the test hook). Resolves to one result per statement.
   */
  async #flushWith<Q extends { readonly rows: readonly unknown[] }>(
    before: readonly string[],
    last: string,
    first: (preamble: readonly PipelinedStatement[]) => Promise<Q[]>,
  ): Promise<Q[]> {
    const opening = this.#began ? [] : this.#begin!();
    const deferred = this.#deferred;
    this.#began = true;
    this.#deferred = [];
    if (opening.length > 0) testHooks.statement?.(this.shardId, opening.join('; '));
    for (const statement of [...deferred.map((write) => write.text), ...before, last]) testHooks.statement?.(this.shardId, statement);
    const results = await first([...opening, ...deferred, ...before]);
    // The preamble's SELECT ends with `started` (rows as objects, or as arrays when raw).
    if (opening.length > 0) {
      const row = results[1]?.rows[0] as { started?: string } | (string | null)[] | undefined;
      this.startedAt = Number(Array.isArray(row) ? row[row.length - 1] : row?.started);
    }
    return results;
  }
}

/** TRANSACTION_ABORTED: nothing was committed anywhere because `shardId` could not commit. */
export function aborted(shardId: string, gid: Gid | undefined, cause: unknown, why?: string, retryable?: boolean): ShardRouterError {
  const reason = why ?? (cause instanceof Error ? cause.message : 'its transaction had already failed');
  return new ShardRouterError(
    'TRANSACTION_ABORTED',
    `the transaction was rolled back on every shard: shard ${shardId} could not commit: ${reason}`,
    {
      shardId,
      gid,
      cause,
      ...(retryable === undefined ? {} : { retryable }),
    },
  );
}

/** Waits a bounded time for a clean-up statement; failures are fine (the pool destroys a connection left mid-transaction). */
export async function cleanup(statement: Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([statement.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, CLEANUP_WAIT_MS)))]);
  clearTimeout(timer);
}
