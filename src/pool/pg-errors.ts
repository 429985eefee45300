import { ID_CLOCK_SQLSTATE, QueryError, STALE_MAP_SQLSTATE, ShardRouterError, isDatabaseError } from '../errors.js';

/**
 * What the driver's errors mean for the connection and for the caller: connection-level
 * failures (the connection must go) apart from statement failures, each mapped to this
 * library's typed errors.
 */

/**
 * Errors after which a connection must not be reused: socket errors and "Connection terminated"
 * (anything that is neither a server error nor a client-side TypeError/RangeError from
 * serializing parameters), server errors that end the session (FATAL/PANIC, e.g.
 * pg_terminate_backend's 57P01), and connection-exception SQLSTATEs (class 08) not sent as a
 * plain ERROR.
 */
export function isConnectionLevel(error: unknown): boolean {
  if (error === undefined) return false;
  if (isDatabaseError(error)) {
    // A class-08 SQLSTATE at severity ERROR (e.g. 08P01 for a bind with the wrong number of
    // parameters) leaves the session usable: it is the statement's failure, not the connection's.
    return error.severity === 'FATAL' || error.severity === 'PANIC' || (error.code.startsWith('08') && error.severity !== 'ERROR');
  }
  return !(error instanceof TypeError || error instanceof RangeError);
}

/**
 * Maps an error from a statement on shard `shardId` to this library's typed errors;
 * `connectionBroke`: the connection had already failed when the statement did.
 */
export function translateError(shardId: string, error: unknown, connectionBroke: boolean): unknown {
  if (connectionBroke || isConnectionLevel(error)) {
    return new ShardRouterError(
      'CONNECTION_LOST',
      `shard ${shardId}: the connection broke during the statement, so it may or may not have taken effect`,
      {
        shardId,
        cause: error,
      },
    );
  }
  if (isDatabaseError(error)) return new QueryError(shardId, error, statementErrorCode(error));
  // What remains are pg's client-side failures to serialize a parameter (TypeError/RangeError).
  const reason = error instanceof Error ? error.message : String(error);
  return new ShardRouterError('INVALID_ARGUMENT', `shard ${shardId}: a parameter could not be sent: ${reason}`, {
    shardId,
    cause: error,
  });
}

/**
 * The code of a statement PostgreSQL rejected. 55P03 lock_not_available: lock_timeout (or
 * NOWAIT) gave up on a lock, e.g. one side of a lock cycle across two shards, which no single
 * server can detect. 57014 with PostgreSQL's "statement timeout" message: the connection's
 * statement_timeout (statementTimeoutMillis) ended it; other 57014s are someone's cancel.
 */
function statementErrorCode(
  error: Error & { code: string },
): 'QUERY_FAILED' | 'LOCK_TIMEOUT' | 'STALE_BUCKET_MAP' | 'STATEMENT_TIMEOUT' | 'ID_CLOCK_BEHIND' {
  if (error.code === '55P03') return 'LOCK_TIMEOUT';
  if (error.code === STALE_MAP_SQLSTATE) return 'STALE_BUCKET_MAP';
  if (error.code === ID_CLOCK_SQLSTATE) return 'ID_CLOCK_BEHIND';
  if (error.code === '57014' && error.message.includes('statement timeout')) return 'STATEMENT_TIMEOUT';
  return 'QUERY_FAILED';
}

/** SHARD_UNAVAILABLE: no connection to the shard could be opened. */
export function unavailableError(shardId: string, cause: unknown): ShardRouterError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new ShardRouterError('SHARD_UNAVAILABLE', `shard ${shardId} is unavailable: ${reason}`, {
    shardId,
    cause,
  });
}
