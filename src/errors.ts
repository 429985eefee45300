/**
 * Every error this library raises is a {@link ShardRouterError} with a stable, SCREAMING_CASE
 * `code`. Codes are part of the public API: match on `err.code`, never on the message.
 */
export const ERROR_CODES = [
  /** A shard key that is not a non-empty string, a safe integer or a bigint. */
  'INVALID_KEY',
  /** An argument of a library function is out of its documented range. */
  'INVALID_ARGUMENT',
  /** The config failed validation; the message lists every invalid field. */
  'INVALID_CONFIG',
  /** No pooled connection became free within `pool.acquireTimeoutMillis`. */
  'POOL_TIMEOUT',
  /** A shard could not be reached (connect failed, or the connection broke mid-query). */
  'SHARD_UNAVAILABLE',
  /** A configured connection is not the shard it claims to be, or belongs to another cluster. */
  'SHARD_IDENTITY_MISMATCH',
  /** The connection broke while a statement ran: it may or may not have taken effect. */
  'CONNECTION_LOST',
  /** The router was closed; create a new one. */
  'ROUTER_CLOSED',
  /** PostgreSQL rejected a statement; `sqlState` holds its SQLSTATE and `cause` the pg error. */
  'QUERY_FAILED',
  /** A statement waited longer than the transaction's `lockTimeoutMillis` for a lock (a cross-shard lock cycle ends here). Retryable. */
  'LOCK_TIMEOUT',
  /** The transaction outlived its `timeoutMillis` and was rolled back. Retryable. */
  'TRANSACTION_TIMEOUT',
  /** A cross-shard transaction was rolled back on every shard because a participant could not prepare (the cause says why). */
  'TRANSACTION_ABORTED',
  /** The coordinator could not learn whether the transaction committed; `gid` names it, recovery settles it. */
  'IN_DOUBT',
  /** `tx.execute` got a key whose shard is not among the keys the transaction declared. */
  'KEY_NOT_IN_TRANSACTION',
  /** The transaction handle was used after its callback settled. */
  'TRANSACTION_CLOSED',
  /** A shard has max_prepared_transactions = 0, so it cannot take part in a cross-shard transaction. */
  'PREPARED_TRANSACTIONS_DISABLED',
  /** The statement does not parse as PostgreSQL SQL (checked by PostgreSQL's own parser before anything is sent). */
  'INVALID_SQL',
  /** A broadcast statement uses a construct whose result cannot be merged exactly across shards; the message names it. */
  'UNSUPPORTED',
  /** A broadcast ran longer than its `timeoutMillis`; the shard queries still running were cancelled. Retryable. */
  'BROADCAST_TIMEOUT',
  /**
   * A shard refused a write because this router's bucket map is older than the shard's fence (a
   * bucket moved away). Nothing was written. The router refreshes its map and retries on its
   * own; you see this only when that did not succeed in time. Retryable.
   */
  'STALE_BUCKET_MAP',
  /** A rebalancing operation cannot run as asked (e.g. another move of the bucket is open); the message says why. */
  'REBALANCE_CONFLICT',
  /**
   * A statement ran longer than its timeout (`statementTimeoutMillis` of the config, or the
   * call's `timeoutMillis`) and was cancelled on the server: it did nothing. Retryable.
   */
  'STATEMENT_TIMEOUT',
  /**
   * The caller's AbortSignal aborted the call: a statement already running was cancelled on the
   * server (pg_cancel_backend), so it did nothing. Retryable.
   */
  'STATEMENT_CANCELLED',
  /**
   * A broadcast's coordinator step would pull more rows or bytes from the shards than
   * `broadcast.maxIntermediateRows` / `maxIntermediateBytes` allow; the message names the limit
   * and how to raise it. Nothing is left behind. Not retryable (narrow the query or raise the limit).
   */
  'RESULT_TOO_LARGE',
  /** withLock could not take the lock within `waitMillis` (at once, for `waitMillis: 0`): another holder has it. Nothing ran. Retryable. */
  'LOCK_NOT_ACQUIRED',
  /**
   * withLock's lock was lost while `fn` ran (its connection broke or went silent past the lease):
   * another process may hold it now. Raised when `fn` resolved anyway; `signal` had fired.
   */
  'LOCK_LOST',
  /** A write fenced by a lock's token was refused: a later holder took the lock (a newer token exists). Nothing was written. */
  'LOCK_FENCED',
  /**
   * An idempotency key already on record for a different call shape (other keys, SQL text or
   * params). Nothing ran. Not retryable: use a new key for a new call.
   */
  'IDEMPOTENCY_KEY_REUSED',
  /**
   * A statement without a pinned shard key would run on every shard, and `requireKey` (the
   * option or `query.requireKey` in the config) forbids that. Nothing was sent. Not retryable.
   */
  'KEY_REQUIRED',
  /**
   * A shard's id counter is more than 10 s ahead of its clock (the clock was set back): next_id()
   * refuses rather than repeat an id. Nothing was issued. Retryable once the clock catches up.
   */
  'ID_CLOCK_BEHIND',
  /**
   * A saga step failed after its retries and every completed step was compensated, in reverse
   * (docs/sagas.md). `cause` is the step's error. Not retryable: the saga is over.
   */
  'SAGA_COMPENSATED',
  /**
   * A saga stopped and waits for an operator: a compensation failed `maxCompensationAttempts`
   * times, or a step failed after a pivot. Its state is stored; `router.sagas.retry(id)` or
   * `resolve(id)`. Not retryable by calling again.
   */
  'SAGA_PARKED',
  /**
   * This process does not (or no longer) hold the saga's lease: another runner took it over or
   * runs it. Nothing this runner would write was written; the saga goes on there. Retryable:
   * `run` again with the same sagaId to get its outcome once it ends.
   */
  'SAGA_LEASE_LOST',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface ShardRouterErrorContext {
  readonly shardId?: string | undefined;
  /** The global transaction id of the cross-shard transaction concerned. */
  readonly gid?: string | undefined;
  readonly cause?: unknown;
  /** Set where the thrower knows that nothing committed and a new attempt may succeed (see `retryable`). */
  readonly retryable?: boolean;
}

/**
 * SQLSTATEs after which running the whole transaction again may well succeed:
 * serialization_failure, deadlock_detected, lock_not_available (lock_timeout).
 */
const RETRYABLE_SQLSTATES = new Set(['40001', '40P01', '55P03']);
const RETRYABLE_CODES = new Set<ErrorCode>([
  'LOCK_TIMEOUT',
  'TRANSACTION_TIMEOUT',
  'POOL_TIMEOUT',
  'BROADCAST_TIMEOUT',
  'STALE_BUCKET_MAP',
  'STATEMENT_TIMEOUT',
  'STATEMENT_CANCELLED',
  'LOCK_NOT_ACQUIRED',
  'ID_CLOCK_BEHIND',
  'SAGA_LEASE_LOST',
]);

/** The one base class of every error thrown by pg-shard-router. */
export class ShardRouterError extends Error {
  readonly code: ErrorCode;
  /** The shard the failure happened on, when there is one. */
  readonly shardId: string | undefined;
  /** The cross-shard transaction's global id, when there is one (always on IN_DOUBT). */
  readonly gid: string | undefined;
  readonly #retryable: boolean | undefined;

  constructor(code: ErrorCode, message: string, context: ShardRouterErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = 'ShardRouterError';
    this.code = code;
    this.shardId = context.shardId;
    this.gid = context.gid;
    this.#retryable = context.retryable;
  }

  /**
   * True when nothing was committed and running the whole transaction again may succeed:
   * lock and transaction timeouts, serialization failures and deadlocks (also when they are
   * the cause of a TRANSACTION_ABORTED), and a transaction that recovery aborted while it was
   * prepared.
   */
  get retryable(): boolean {
    if (this.#retryable !== undefined) return this.#retryable;
    if (RETRYABLE_CODES.has(this.code)) return true;
    const cause = this.cause;
    if (this.code === 'TRANSACTION_ABORTED') return cause instanceof ShardRouterError && cause.retryable;
    return this instanceof QueryError && RETRYABLE_SQLSTATES.has(this.sqlState);
  }
}

/**
 * PostgreSQL rejected a statement. `sqlState` is PostgreSQL's five-character SQLSTATE
 * (e.g. '23505' for a unique violation); `cause` is the untouched `pg` DatabaseError with
 * `detail`, `constraint`, `position` and the rest.
 */
export class QueryError extends ShardRouterError {
  readonly sqlState: string;

  constructor(
    shardId: string,
    cause: Error & { code?: unknown },
    code: 'QUERY_FAILED' | 'LOCK_TIMEOUT' | 'STALE_BUCKET_MAP' | 'STATEMENT_TIMEOUT' | 'ID_CLOCK_BEHIND' = 'QUERY_FAILED',
  ) {
    super(code, `shard ${shardId}: ${cause.message}`, { shardId, cause });
    this.name = 'QueryError';
    this.sqlState = typeof cause.code === 'string' ? cause.code : '';
  }
}

/** True for errors raised by PostgreSQL itself (they carry a SQLSTATE and a severity). */
export function isDatabaseError(error: unknown): error is Error & { code: string; severity: string } {
  return (
    error instanceof Error &&
    typeof (error as { code?: unknown }).code === 'string' &&
    typeof (error as { severity?: unknown }).severity === 'string'
  );
}

/** True when `error` (or the cause of a TRANSACTION_ABORTED) is a write refused by a shard's map fence. */
export function isStaleMap(error: unknown): boolean {
  if (!(error instanceof ShardRouterError)) return false;
  if (error.code === 'STALE_BUCKET_MAP') return true;
  return error.code === 'TRANSACTION_ABORTED' && isStaleMap(error.cause);
}

/** SQLSTATE a shard raises for a statement routed by an older map than its fence (or read guard) allows. */
export const STALE_MAP_SQLSTATE = 'PSR01';

/** @internal STATEMENT_TIMEOUT raised by the router's own timer (the server's is a QueryError with SQLSTATE 57014). */
export function statementTimeoutError(timeoutMillis: number, shardId?: string): ShardRouterError {
  const where = shardId === undefined ? '' : `shard ${shardId}: `;
  return new ShardRouterError(
    'STATEMENT_TIMEOUT',
    `${where}the statement did not finish within ${timeoutMillis} ms and was cancelled on the server`,
    { shardId },
  );
}

/** @internal STATEMENT_CANCELLED: the caller's AbortSignal aborted (its reason is the cause). */
export function statementCancelledError(reason: unknown): ShardRouterError {
  return new ShardRouterError(
    'STATEMENT_CANCELLED',
    'the call was aborted by its signal; a running statement was cancelled on the server',
    {
      cause: reason,
    },
  );
}
/** SQLSTATE of a shard's next_id() that refuses because its clock is behind the last id it issued. */
export const ID_CLOCK_SQLSTATE = 'PSR02';

/** @internal The error of every call on a closed router or pool. */
export function closedError(): ShardRouterError {
  return new ShardRouterError('ROUTER_CLOSED', 'the router is closed');
}
