import type pg from 'pg';
import type { QueryConfig, QueryResultRow } from 'pg';
import { ShardRouterError, isDatabaseError, statementCancelledError, statementTimeoutError } from '../errors.js';
import { cancel } from './cancel.js';
import type { ShardQueryResult } from './session.js';
import type { ShardPool } from './shard-pool.js';

/**
 * One statement that a signal can stop on the server: when the signal aborts while the
 * statement runs, pg_cancel_backend is sent (again, until the statement ends), and the call
 * settles with what the statement really did:
 * - it ended with the cancel's 57014: nothing was applied, the call rejects with the signal's
 *   reason (a retryable STATEMENT_CANCELLED or STATEMENT_TIMEOUT);
 * - it had completed before the cancel landed: the call resolves with its result;
 * - it failed on its own: that error;
 * - it never stopped: the backend is terminated and the call rejects with CONNECTION_LOST
 *   (it may or may not have taken effect).
 * The connection is never reused, so a late cancel cannot hit a later statement.
 */

/** How often a cancel is repeated (one that reaches the backend before the statement does is lost). */
const CANCEL_REPEAT_MS = 500;
/** How long a cancelled statement may take to stop before its backend is terminated. */
const STOP_GRACE_MS = 3_000;

type Outcome<T> = { readonly kind: 'done'; readonly value: T } | { readonly kind: 'failed'; readonly error: unknown };

/** What stops a statement: a timeout, the caller's signal, or both. */
export interface StopWhen {
  /** After this long: STATEMENT_TIMEOUT. */
  readonly timeoutMillis?: number | undefined;
  /** When it aborts: STATEMENT_CANCELLED (its reason as the cause). */
  readonly signal?: AbortSignal | undefined;
}

type Raced<T> = Outcome<T> | { readonly kind: 'stop'; readonly reason: ShardRouterError };

/**
 * Borrows a connection (stamped with `version`), runs `start(client)` on it and returns its
 * result, stopped on the server when `stop` says so (one timer and one listener, no
 * AbortController of its own). Errors other than the stop's are the pool's typed errors (or,
 * with `translate: false`, the driver's own).
 */
export async function runAbortable<T>(
  pool: ShardPool,
  version: number | undefined,
  stop: StopWhen,
  start: (client: pg.Client) => Promise<T>,
  translate = true,
): Promise<T> {
  const { signal, timeoutMillis } = stop;
  if (signal?.aborted) throw statementCancelledError(signal.reason);
  let client: pg.Client;
  try {
    client = await pool.acquireClient(signal, version);
  } catch (error) {
    throw signal?.aborted ? statementCancelledError(signal.reason) : error;
  }
  let fire!: (reason: ShardRouterError) => void;
  const stopped = new Promise<Raced<T>>((resolve) => {
    fire = (reason) => resolve({ kind: 'stop', reason });
  });
  const timer =
    timeoutMillis === undefined ? undefined : setTimeout(() => fire(statementTimeoutError(timeoutMillis, pool.shardId)), timeoutMillis);
  const onAbort = () => fire(statementCancelledError(signal!.reason));
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  const running = settle(start(client));
  const first = await Promise.race<Raced<T>>([running, stopped]);
  clearTimeout(timer);
  signal?.removeEventListener('abort', onAbort);
  const outcome = first.kind === 'stop' ? await stopOnServer(pool, client, running) : first;
  if (outcome === undefined) {
    // Marked broken by the cancel: destroyed, never reused.
    pool.releaseClient(client);
    throw new ShardRouterError(
      'CONNECTION_LOST',
      `shard ${pool.shardId}: the statement did not stop after a cancel, so its connection was terminated; it may or may not have taken effect`,
      { shardId: pool.shardId, cause: first.kind === 'stop' ? first.reason : undefined },
    );
  }
  if (outcome.kind === 'done') {
    pool.releaseClient(client);
    return outcome.value;
  }
  pool.releaseClient(client, outcome.error);
  if (first.kind === 'stop' && isCancel(outcome.error)) throw first.reason;
  throw translate ? pool.translateError(client, outcome.error) : outcome.error;
}

function settle<T>(promise: Promise<T>): Promise<Outcome<T>> {
  return promise.then(
    (value) => ({ kind: 'done', value }),
    (error: unknown) => ({ kind: 'failed', error }),
  );
}

/** 57014 query_canceled: the cancel (or statement_timeout) ended the statement; it applied nothing. */
function isCancel(error: unknown): boolean {
  return isDatabaseError(error) && error.code === '57014';
}

/**
 * Cancels what `client` runs until `running` settles; after the grace period terminates the
 * backend (a statement that ignores cancels, or a cancel that could not be delivered) and
 * returns undefined. The client is marked for destruction.
 */
async function stopOnServer<T>(pool: ShardPool, client: pg.Client, running: Promise<Outcome<T>>): Promise<Outcome<T> | undefined> {
  const deadline = Date.now() + STOP_GRACE_MS;
  await pool.cancelAndDiscard(client);
  for (;;) {
    const remaining = deadline - Date.now();
    const outcome = await Promise.race([running, sleep(Math.max(0, Math.min(CANCEL_REPEAT_MS, remaining)))]);
    if (outcome !== undefined) return outcome;
    if (Date.now() >= deadline) break;
    await cancel(client, pool.cancelTarget);
  }
  await cancel(client, pool.cancelTarget, 'terminate');
  (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  await running;
  return undefined;
}

function sleep(ms: number): Promise<undefined> {
  return new Promise((resolve) => setTimeout(() => resolve(undefined), ms));
}

/**
 * ShardPool.query that `stop` can end on the server: the same extended-protocol statement and
 * result (see runAbortable).
 */
export function queryAbortable<R extends QueryResultRow>(
  pool: ShardPool,
  sql: string,
  params: readonly unknown[],
  version: number | undefined,
  stop: StopWhen,
): Promise<ShardQueryResult<R>> {
  return runAbortable(pool, version, stop, async (client) => {
    // As ShardPool.query: the extended protocol by itself with values, the config form without.
    const result =
      params.length > 0
        ? await client.query<R>(sql, params as unknown[])
        : await client.query<R>({ text: sql, queryMode: 'extended' } as QueryConfig);
    return { rows: result.rows, rowCount: result.rowCount, fields: result.fields, command: result.command, shardId: pool.shardId };
  });
}
