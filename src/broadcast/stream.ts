import { parseRows } from '../pool/raw-text.js';
import type { FieldDef, QueryResultRow, RowCursor } from '../pool/session.js';
import { isStaleMap, statementCancelledError } from '../errors.js';
import type { ShardRouterError } from '../errors.js';
import type { BroadcastObserver, StreamObserver } from '../observe/hooks.js';
import { abortScope } from './abort-scope.js';
import type { AbortScope } from './abort-scope.js';
import type { BroadcastRouterContext } from './broadcaster.js';
import { fillCoordinator, finishCoordinator } from './coordinator-step.js';
import type { CoordinatorRun, FilledCoordinator } from './coordinator-step.js';
import { arrivalOrder, mergeSortedBatches } from './merge/k-way-merge.js';
import { resolveCount } from './merge/merge.js';
import { rowComparator } from './merge/row-order.js';
import type { CoordinatorPlan, SelectPlan } from './plan/plan.js';
import { OUTER_CURSOR } from './plan/plan-coordinator.js';
import { guardedParams } from './routing.js';
import type { BroadcastRouting } from './routing.js';
import type { BroadcastOptions, BroadcastResult } from './types.js';
import type { TextOrder } from './values/order.js';

/**
 * broadcastStream's three ways: shard cursors merged a batch at a time (plain SELECTs), the
 * coordinator step's output through a cursor, or a small merged result (aggregates) yielded
 * from memory. Rows are yielded one by one from in-memory batches: no promise per row beyond
 * the generator's own. Memory: each shard cursor holds its current batch and reads one ahead
 * (2 x shards x batchSize raw rows), plus the merged batch being yielded (parsed).
 */

/** What the streams need from the broadcaster. */
export interface StreamHost {
  readonly context: BroadcastRouterContext;
  readonly textOrder: TextOrder;
  withCollations(plan: SelectPlan, fields: readonly FieldDef[], shardId: string): Promise<SelectPlan>;
  coordinatorRun(routing: BroadcastRouting, controller: AbortController, partial: boolean, observer: BroadcastObserver): CoordinatorRun;
  run<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[],
    options: BroadcastOptions,
    observer: BroadcastObserver,
  ): Promise<BroadcastResult<R>>;
  timeoutError(timeoutMillis: number, shardIds: readonly string[]): ShardRouterError;
}

/** One broadcastStream call, its arguments checked. */
export interface StreamCall {
  readonly params: readonly unknown[];
  readonly batchSize: number;
  readonly timeoutMillis: number | undefined;
  readonly signal: AbortSignal | undefined;
  /** The stream's observer, made when it starts (a stream never iterated records nothing). */
  readonly observe: () => StreamObserver;
}

/** An aggregate or DISTINCT query (small results): merged whole by run(), then yielded. */
export async function* streamWhole<R extends QueryResultRow>(host: StreamHost, sql: string, call: StreamCall): AsyncGenerator<R> {
  const { timeoutMillis, signal } = call;
  const observer = call.observe();
  const options = { ...(timeoutMillis === undefined ? {} : { timeoutMillis }), ...(signal ? { signal } : {}) };
  const result = await observer.run(() => host.run<R>(sql, call.params, options, observer));
  const rows = result.rows;
  for (let i = 0; i < rows.length; i++) {
    if (signal?.aborted) throw statementCancelledError(signal.reason);
    yield rows[i]!;
  }
}

/** A plain SELECT: shard cursors, k-way merged a batch at a time under ORDER BY, else in arrival order. */
export async function* streamSelect<R extends QueryResultRow>(host: StreamHost, plan: SelectPlan, call: StreamCall): AsyncGenerator<R> {
  const observer = call.observe();
  const operation = observedOperation(observer);
  let shardIds: readonly string[] = [];
  const scope = streamScope(host, call, () => shardIds);
  let cursors: RowCursor[] = [];
  let stopped = false;
  // An abort stops the servers at once, even while the consumer is busy between two rows.
  const closeAll = () => {
    stopped = true;
    void Promise.all(cursors.map((cursor) => cursor.close())).catch(() => undefined);
  };
  scope.signal.addEventListener('abort', closeAll, { once: true });
  try {
    const fields = await host.context.retryingStaleMap(async () => {
      const routing = host.context.routing();
      shardIds = routing.shardIds;
      const values = guardedParams(plan, call.params, routing);
      cursors = shardIds.map((shardId) => openCursor(host, shardId, plan.shardSql, values, call.batchSize, scope, observer));
      return openAll(cursors);
    });
    const visible = fields.slice(0, fields.length - plan.hidden.length);
    const batches =
      plan.sort.length > 0 ? mergeSortedBatches(cursors, await comparator(host, plan, fields, shardIds[0]!)) : arrivalOrder(cursors);
    let offset = resolveCount(plan.offset, call.params, 'OFFSET') ?? 0;
    let remaining = resolveCount(plan.limit, call.params, 'LIMIT') ?? Infinity;
    for await (let batch of batches) {
      if (offset > 0) {
        const skip = Math.min(offset, batch.length);
        offset -= skip;
        batch = batch.slice(skip);
      }
      if (batch.length > remaining) batch = batch.slice(0, remaining);
      remaining -= batch.length;
      // A plain loop: `yield*` over an array adds a promise per element on top of the yield.
      const rows = parseRows<R>(batch, visible);
      for (let i = 0; i < rows.length; i++) {
        if (stopped) throw scope.signal.reason;
        yield rows[i]!;
      }
      if (remaining <= 0) return;
    }
  } catch (error) {
    throw operation.failed(scope.failure(error));
  } finally {
    scope.dispose();
    scope.signal.removeEventListener('abort', closeAll);
    await Promise.all(cursors.map((cursor) => cursor.close()));
    operation.end();
  }
}

/** A coordinator plan's output through a cursor on the coordinator, `batchSize` rows per FETCH. */
export async function* streamCoordinated<R extends QueryResultRow>(
  host: StreamHost,
  plan: CoordinatorPlan,
  call: StreamCall,
): AsyncGenerator<R> {
  const observer = call.observe();
  const operation = observedOperation(observer);
  let routing = host.context.routing();
  const scope = streamScope(host, call, () => routing.shardIds);
  let filled: FilledCoordinator | undefined;
  // The outer query runs on the coordinator's session: an abort cancels it there (the session is then destroyed).
  const onAbort = () => void filled?.session.cancel?.().catch(() => undefined);
  scope.signal.addEventListener('abort', onAbort, { once: true });
  try {
    filled = await host.context.retryingStaleMap(() => {
      routing = host.context.routing();
      return fillCoordinator(plan, call.params, host.coordinatorRun(routing, scope.controller, false, observer));
    });
    await filled.session.query(filled.outerCursorSql, call.params as unknown[]);
    for (;;) {
      scope.signal.throwIfAborted();
      const { rows } = await filled.session.query<R>(`FETCH FORWARD ${call.batchSize} FROM ${OUTER_CURSOR}`);
      for (let i = 0; i < rows.length; i++) {
        if (scope.signal.aborted) throw scope.signal.reason;
        yield rows[i]!;
      }
      if (rows.length < call.batchSize) return;
    }
  } catch (error) {
    throw operation.failed(scope.failure(error));
  } finally {
    scope.dispose();
    scope.signal.removeEventListener('abort', onAbort);
    if (filled) await finishCoordinator(filled.session);
    operation.end();
  }
}

function streamScope(host: StreamHost, call: StreamCall, shardIds: () => readonly string[]): AbortScope {
  const { timeoutMillis, signal } = call;
  return abortScope({ timeoutMillis, signal, timeoutError: () => host.timeoutError(timeoutMillis!, shardIds()) });
}

/** Opens every cursor (each reads its first batch); on any failure closes them all and throws (a non-stale-map failure first). */
async function openAll(cursors: readonly RowCursor[]): Promise<FieldDef[]> {
  const opened = await Promise.allSettled(cursors.map((cursor) => cursor.open()));
  const failures = opened.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as unknown] : []));
  if (failures.length === 0) return (opened[0] as PromiseFulfilledResult<FieldDef[]>).value;
  await Promise.all(cursors.map((cursor) => cursor.close()));
  // Any other failure wins over a stale map: retrying would not help it.
  throw failures.find((failure) => !isStaleMap(failure)) ?? failures[0];
}

/** The ORDER BY comparator, on the columns' types (known once the cursors opened) and their collations. */
async function comparator(host: StreamHost, plan: SelectPlan, fields: readonly FieldDef[], shardId: string) {
  const collated = await host.withCollations(plan, fields, shardId);
  const oids = fields.map((field) => field.dataTypeID);
  return rowComparator(collated.sort, oids, plan.hidden.length, host.textOrder, undefined, undefined);
}

/**
 * A shard's cursor whose statement is one CLIENT span (and counts in the metrics) from its open
 * to its close: failed with the cursor's own error, or the scope's reason when it was stopped.
 */
function openCursor(
  host: StreamHost,
  shardId: string,
  sql: string,
  values: readonly unknown[],
  batchSize: number,
  scope: AbortScope,
  observer: StreamObserver,
): RowCursor {
  const cursor = host.context.pool(shardId).openCursor(sql, values, batchSize, scope.signal);
  let failure: unknown;
  let settle!: () => void;
  const closed = new Promise<{ command: string }>((resolve, reject) => {
    settle = () => {
      const error = failure ?? (scope.signal.aborted ? scope.signal.reason : undefined);
      if (error === undefined) resolve(SELECT);
      else reject(error);
    };
  });
  observer.shard(shardId, sql, () => closed).catch(() => undefined);
  const fail = (error: unknown): never => {
    failure ??= error;
    throw error;
  };
  return {
    open: () => cursor.open().catch(fail),
    next: () => cursor.next().catch(fail),
    close: () => cursor.close().finally(settle),
  };
}

const SELECT = Object.freeze({ command: 'SELECT' });

/** The whole stream as one observed operation, from its first read to its end. */
function observedOperation(observer: StreamObserver): { failed(error: unknown): unknown; end(): void } {
  let failure: { error: unknown } | undefined;
  let settle!: () => void;
  const ended = new Promise<void>((resolve, reject) => {
    settle = () => (failure ? reject(failure.error) : resolve());
  });
  observer.run(() => ended).catch(() => undefined);
  return {
    failed(error) {
      failure ??= { error };
      return error;
    },
    end: () => settle(),
  };
}
