import type { ResolvedConfig } from '../config.js';
import { ShardRouterError } from '../errors.js';
import { queryAbortable } from '../pool/abortable.js';
import type { StopWhen } from '../pool/abortable.js';
import type { QueryResultRow, ShardQueryResult } from '../pool/session.js';
import type { ShardPool } from '../pool/shard-pool.js';

/**
 * Per-call options of `router.execute` (its fourth argument). Features that need more per-call
 * options add their fields here.
 */
export interface ExecuteOptions {
  /**
   * Cancel the statement on the server and reject with STATEMENT_TIMEOUT after this long.
   * Default: the config's `statementTimeoutMillis` (none if unset). The connection's own
   * statement_timeout is the config's value, so a longer per-call value is still cut there.
   */
  readonly timeoutMillis?: number | undefined;
  /** Aborting it cancels the running statement on the server; the call rejects with STATEMENT_CANCELLED. */
  readonly signal?: AbortSignal | undefined;
}

/** The router's timer fires this long after the server's statement_timeout would have (the server's is the cheaper stop). */
export const SERVER_TIMEOUT_MARGIN_MS = 250;

const MAX_TIMEOUT_MS = 2_147_483_647;

/** Checks the options argument of execute (INVALID_ARGUMENT for anything else than documented). */
export function checkedExecuteOptions(options: unknown): ExecuteOptions {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object') throw new ShardRouterError('INVALID_ARGUMENT', 'options must be an object');
  const { timeoutMillis, signal } = options as ExecuteOptions;
  if (
    timeoutMillis !== undefined &&
    (typeof timeoutMillis !== 'number' || !Number.isSafeInteger(timeoutMillis) || timeoutMillis < 1 || timeoutMillis > MAX_TIMEOUT_MS)
  ) {
    throw new ShardRouterError('INVALID_ARGUMENT', `timeoutMillis must be an integer from 1 to ${MAX_TIMEOUT_MS}`);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new ShardRouterError('INVALID_ARGUMENT', 'signal must be an AbortSignal');
  return options as ExecuteOptions;
}

/**
 * What bounds one execute: the call's timeout, else the config's statement timeout (plus a
 * margin, so the server's statement_timeout normally ends it first), and the call's signal.
 * Undefined when nothing bounds it (the plain hot path).
 */
export function executeStop(options: ExecuteOptions, config: ResolvedConfig): StopWhen | undefined {
  const configured = config.statementTimeoutMillis === undefined ? undefined : config.statementTimeoutMillis + SERVER_TIMEOUT_MARGIN_MS;
  const timeoutMillis = options.timeoutMillis ?? configured;
  if (timeoutMillis === undefined && options.signal === undefined) return undefined;
  return { timeoutMillis, signal: options.signal };
}

/** One bounded statement (argument checks as the router's plain path). */
export function runBounded<R extends QueryResultRow>(
  pool: ShardPool,
  sql: string,
  params: readonly unknown[] | undefined,
  version: number | undefined,
  stop: StopWhen,
): Promise<ShardQueryResult<R>> {
  if (typeof sql !== 'string' || sql.length === 0)
    return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string'));
  if (params !== undefined && !Array.isArray(params))
    return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'params must be an array'));
  return queryAbortable<R>(pool, sql, params ?? [], version, stop);
}
