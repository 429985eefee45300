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
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface ShardRouterErrorContext {
  readonly shardId?: string;
  readonly cause?: unknown;
}

/** The one base class of every error thrown by pg-shard-router. */
export class ShardRouterError extends Error {
  readonly code: ErrorCode;
  /** The shard the failure happened on, when there is one. */
  readonly shardId: string | undefined;

  constructor(code: ErrorCode, message: string, context: ShardRouterErrorContext = {}) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = 'ShardRouterError';
    this.code = code;
    this.shardId = context.shardId;
  }
}

/**
 * PostgreSQL rejected a statement. `sqlState` is PostgreSQL's five-character SQLSTATE
 * (e.g. '23505' for a unique violation); `cause` is the untouched `pg` DatabaseError with
 * `detail`, `constraint`, `position` and the rest.
 */
export class QueryError extends ShardRouterError {
  readonly sqlState: string;

  constructor(shardId: string, cause: Error & { code?: unknown }) {
    super('QUERY_FAILED', `shard ${shardId}: ${cause.message}`, { shardId, cause });
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

/** @internal The error of every call on a closed router or pool. */
export function closedError(): ShardRouterError {
  return new ShardRouterError('ROUTER_CLOSED', 'the router is closed');
}
