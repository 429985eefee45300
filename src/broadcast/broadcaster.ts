import type { RawQueryResult, ShardPool } from '../pool/shard-pool.js';
import type { FieldDef, QueryResultRow, RowCursor } from '../pool/session.js';
import { QueryError, ShardRouterError, isStaleMap } from '../errors.js';
import type { Transaction } from '../twopc/coordinator.js';
import { mergeSortedBatches } from './merge/k-way-merge.js';
import type { BatchSource } from './merge/k-way-merge.js';
import { mergeSelect, resolveCount } from './merge/merge.js';
import { parseRows } from '../pool/raw-text.js';
import { formatPlan } from './plan/plan.js';
import type { BroadcastPlan, SelectPlan } from './plan/plan.js';
import { planBroadcast } from './plan/planner.js';
import { rowComparator } from './merge/row-order.js';
import type { RawRow, ServerRanker } from './merge/row-order.js';
import type { BroadcastCapabilities, ServerCaster } from './server-probe.js';
import type { BroadcastOptions, BroadcastResult, BroadcastStreamOptions, ShardFailure } from './types.js';

/** How many distinct SQL texts keep their plan. */
const PLAN_CACHE_SIZE = 1_000;
const DEFAULT_BATCH_SIZE = 1_000;
const MAX_TIMEOUT_MS = 3_600_000;

/** The map a broadcast routes by, and the shards it reads (taken together, in one tick). */
export interface BroadcastRouting {
  readonly mapVersion: number;
  /** The cluster's members in that map, in config order. */
  readonly shardIds: readonly string[];
  /** The owner of each bucket in that map. */
  readonly owners: readonly string[];
}

/** What the broadcast engine needs from the router. */
export interface BroadcastContext {
  routing(): BroadcastRouting;
  /** Runs `attempt` again on a refreshed map while it fails with STALE_BUCKET_MAP. */
  retryingStaleMap<T>(attempt: () => Promise<T>): Promise<T>;
  /**
   * The registered table a query names (schema as written, undefined for the default), if any:
   * reads of reference tables need one shard and their INSERTs go to all.
   */
  registeredTable(schema: string | undefined, name: string): { readonly kind: 'sharded' | 'reference' } | undefined;
  /** For a registered sharded table, the shard query condition that reads only owned buckets (PlannerCatalog.movesGuard). */
  movesGuard(schema: string | undefined, name: string, versionParam: number): string | undefined;
  pool(shardId: string): ShardPool;
  readonly capabilities: BroadcastCapabilities;
  readonly ranker: ServerRanker;
  readonly caster: ServerCaster;
  readonly defaultTimeoutMillis: number;
  /**
   * Runs `work` in one transaction over every member of the map it routes by (two-phase commit
   * when it writes to several), again on a refreshed map when a fence refuses it.
   */
  runWrite<T>(timeoutMillis: number, work: (tx: Transaction, shardIds: readonly string[]) => Promise<T>): Promise<T>;
}

/** Plans (cached by SQL text), runs and merges broadcasts. */
export class Broadcaster {
  readonly #context: BroadcastContext;
  readonly #plans = new Map<string, BroadcastPlan>();

  constructor(context: BroadcastContext) {
    this.#context = context;
  }

  /** The cached plan of `sql`, planning it on first use. */
  plan(sql: string): BroadcastPlan {
    if (typeof sql !== 'string' || sql.trim() === '') throw new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string');
    const cached = this.#plans.get(sql);
    if (cached) return cached;
    const aggregates = this.#context.capabilities.aggregateNames;
    const context = this.#context;
    const plan = planBroadcast(sql, {
      isAggregate: (name) => aggregates.has(name),
      isReferenceTable: (schema, name) => context.registeredTable(schema, name)?.kind === 'reference',
      movesGuard: (schema, name, versionParam) => context.movesGuard(schema, name, versionParam),
    });
    if (this.#plans.size >= PLAN_CACHE_SIZE) this.#plans.delete(this.#plans.keys().next().value!);
    this.#plans.set(sql, plan);
    return plan;
  }

  /** Drops every cached plan (the table registry changed). */
  forgetPlans(): void {
    this.#plans.clear();
  }

  explain(sql: string): string {
    return formatPlan(this.plan(sql));
  }

  async run<R extends QueryResultRow>(sql: string, params: readonly unknown[], options: BroadcastOptions): Promise<BroadcastResult<R>> {
    const plan = this.plan(sql);
    const timeoutMillis = this.#timeout(options.timeoutMillis ?? this.#context.defaultTimeoutMillis);
    switch (plan.kind) {
      case 'write':
        return this.#write<R>(plan.sql, params, timeoutMillis);
      case 'single':
        return this.#read<R>(plan, params, timeoutMillis, options.partial === true);
      case 'select':
        try {
          return await this.#read<R>(plan, params, timeoutMillis, options.partial === true);
        } catch (error) {
          if (!plan.ifColumnMissing || !(error instanceof QueryError) || error.sqlState !== '42703') throw error;
          this.#plans.set(sql, plan.ifColumnMissing);
          return this.#read<R>(plan.ifColumnMissing, params, timeoutMillis, options.partial === true);
        }
      default: {
        const never: never = plan;
        throw new Error(`unknown plan ${String(never)}`);
      }
    }
  }

  #timeout(value: unknown): number {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_TIMEOUT_MS) {
      throw new ShardRouterError('INVALID_ARGUMENT', `timeoutMillis must be an integer from 1 to ${MAX_TIMEOUT_MS}, got ${String(value)}`);
    }
    return value;
  }

  /**
   * Reads on every shard (or one, for a plan that reads no sharded table) and merges; again on
   * a refreshed map when a shard's read guard says the map moved on.
   */
  #read<R extends QueryResultRow>(plan: SelectPlan | { kind: 'single'; sql: string }, params: readonly unknown[], timeoutMillis: number, partial: boolean): Promise<BroadcastResult<R>> {
    return this.#context.retryingStaleMap(() => this.#readOnce<R>(plan, params, timeoutMillis, partial));
  }

  async #readOnce<R extends QueryResultRow>(plan: SelectPlan | { kind: 'single'; sql: string }, params: readonly unknown[], timeoutMillis: number, partial: boolean): Promise<BroadcastResult<R>> {
    const routing = this.#context.routing();
    const shardIds = plan.kind === 'single' ? routing.shardIds.slice(0, 1) : routing.shardIds;
    const sql = plan.kind === 'single' ? plan.sql : plan.shardSql;
    const values = plan.kind === 'single' ? params : guardedParams(plan, params, routing);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(this.#timeoutError(timeoutMillis, shardIds)), timeoutMillis);
    const failures: ShardFailure[] = [];
    const answered: RawQueryResult[] = [];
    try {
      await Promise.all(
        shardIds.map(async (shardId) => {
          try {
            answered.push(await this.#context.pool(shardId).queryRaw(sql, values, controller.signal));
          } catch (error) {
            const failure = asShardError(error, shardId);
            // A stale map is never a partial answer: the whole read runs again on the new map.
            if (failure.code === 'BROADCAST_TIMEOUT' || failure.code === 'STALE_BUCKET_MAP' || !partial) {
              // All or error: stop the other shards' work at once rather than wait for it.
              if (!controller.signal.aborted) controller.abort(failure);
              throw controller.signal.reason;
            }
            failures.push({ shardId, error: failure });
          }
        }),
      );
    } finally {
      clearTimeout(timer);
    }
    if (answered.length === 0) throw failures[0]!.error;
    // Shard order, not arrival order: the merge is then deterministic.
    answered.sort((a, b) => shardIds.indexOf(a.shardId) - shardIds.indexOf(b.shardId));
    if (plan.kind === 'single') {
      const only = answered[0]!;
      return { rows: parseRows<R>(only.rows, only.fields), rowCount: only.rowCount ?? only.rows.length, fields: only.fields, command: only.command, failures };
    }
    const { rows, fields } = await mergeSelect<R>(plan, answered, {
      params,
      textOrder: this.#context.capabilities.textOrder,
      ranker: this.#context.ranker,
      caster: this.#context.caster,
    });
    return { rows, rowCount: rows.length, fields, command: 'SELECT', failures };
  }

  /** A write on every shard in one transaction: a schema change lands everywhere or nowhere. */
  async #write<R extends QueryResultRow>(sql: string, params: readonly unknown[], timeoutMillis: number): Promise<BroadcastResult<R>> {
    const results = await this.#context.runWrite(timeoutMillis, (tx, shardIds) =>
      Promise.all(shardIds.map((shardId) => tx.executeOn<R>(shardId, sql, params as unknown[]))),
    );
    const first = results[0]!;
    return {
      rows: results.flatMap((result) => result.rows),
      rowCount: results.reduce((sum, result) => sum + (result.rowCount ?? 0), 0),
      fields: first.fields,
      command: first.command,
      failures: [],
    };
  }

  /**
   * Streams a SELECT: for plain (non-aggregate) queries, shard cursors read `batchSize` rows at
   * a time and an ORDER BY is a k-way merge of them, so memory stays near shards x batchSize
   * whatever the result size. Aggregate and DISTINCT queries are merged whole, then streamed.
   * Argument and planning errors surface on the first iteration, like the stream's own.
   */
  stream<R extends QueryResultRow>(sql: string, params: readonly unknown[], options: BroadcastStreamOptions): AsyncGenerator<R, void, undefined> {
    let plan: BroadcastPlan;
    let batchSize: number;
    let timeoutMillis: number | undefined;
    try {
      plan = this.plan(sql);
      batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
      if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 1_000_000) {
        throw new ShardRouterError('INVALID_ARGUMENT', `batchSize must be an integer from 1 to 1000000, got ${String(batchSize)}`);
      }
      timeoutMillis = options.timeoutMillis === undefined ? undefined : this.#timeout(options.timeoutMillis);
      if (plan.kind === 'write') throw new ShardRouterError('INVALID_ARGUMENT', 'broadcastStream takes a SELECT; use broadcast for writes');
    } catch (error) {
      return failedStream(error);
    }
    if (plan.kind === 'single' || plan.aggregate || plan.distinct) return this.#streamWhole<R>(sql, params, timeoutMillis);
    return this.#streamSelect<R>(plan, params, batchSize, timeoutMillis);
  }

  async *#streamWhole<R extends QueryResultRow>(sql: string, params: readonly unknown[], timeoutMillis: number | undefined): AsyncGenerator<R, void, undefined> {
    const result = await this.run<R>(sql, params, timeoutMillis === undefined ? {} : { timeoutMillis });
    yield* result.rows;
  }

  async *#streamSelect<R extends QueryResultRow>(plan: SelectPlan, params: readonly unknown[], batchSize: number, timeoutMillis: number | undefined): AsyncGenerator<R, void, undefined> {
    let shardIds: readonly string[] = [];
    const controller = new AbortController();
    const timer =
      timeoutMillis === undefined ? undefined : setTimeout(() => controller.abort(this.#timeoutError(timeoutMillis, shardIds)), timeoutMillis);
    let cursors: RowCursor[] = [];
    try {
      // Opening reads each cursor's first batch, where a shard's read guard refuses a stale
      // map; nothing has been yielded then, so the cursors are opened again on the new map.
      // The comparator needs the column types, which arrive with each cursor's first batch.
      const fields = await this.#context.retryingStaleMap(async () => {
        const routing = this.#context.routing();
        const values = guardedParams(plan, params, routing);
        shardIds = routing.shardIds;
        cursors = shardIds.map((shardId) => this.#context.pool(shardId).openCursor(plan.shardSql, values, batchSize, controller.signal));
        const opened = await Promise.allSettled(cursors.map((cursor) => cursor.open()));
        const failures = opened.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as unknown] : []));
        if (failures.length === 0) return (opened[0] as PromiseFulfilledResult<FieldDef[]>).value;
        await Promise.all(cursors.map((cursor) => cursor.close()));
        // Any other failure wins over a stale map: retrying would not help it.
        throw failures.find((failure) => !isStaleMap(failure)) ?? failures[0];
      });
      const visible = fields.slice(0, fields.length - plan.hidden.length);
      let offset = resolveCount(plan.offset, params, 'OFFSET') ?? 0;
      let remaining = resolveCount(plan.limit, params, 'LIMIT') ?? Infinity;
      const batches =
        plan.sort.length > 0
          ? mergeSortedBatches(
              cursors,
              await rowComparator(plan.sort, fields.map((field) => field.dataTypeID), plan.hidden.length, this.#context.capabilities.textOrder, undefined, undefined),
            )
          : concatenate(cursors);
      for await (let batch of batches) {
        if (offset > 0) {
          const skip = Math.min(offset, batch.length);
          offset -= skip;
          batch = batch.slice(skip);
        }
        if (batch.length > remaining) batch = batch.slice(0, remaining);
        remaining -= batch.length;
        // A plain loop: `yield*` over an array adds a promise per element on top of the yield.
        const parsed = parseRows<R>(batch, visible);
        for (let i = 0; i < parsed.length; i++) yield parsed[i]!;
        if (remaining <= 0) return;
      }
    } catch (error) {
      throw controller.signal.aborted ? controller.signal.reason : error;
    } finally {
      clearTimeout(timer);
      await Promise.all(cursors.map((cursor) => cursor.close()));
    }
  }

  #timeoutError(timeoutMillis: number, shardIds: readonly string[]): ShardRouterError {
    return new ShardRouterError('BROADCAST_TIMEOUT', `the broadcast did not finish within ${timeoutMillis} ms on shards ${shardIds.join(', ')}; the running shard queries were cancelled`);
  }
}

/** The shard query's parameters: the caller's, then (for a guarded plan) the map version it routes by. */
function guardedParams(plan: SelectPlan, params: readonly unknown[], routing: BroadcastRouting): readonly unknown[] {
  requireCoverage(routing);
  if (plan.mapVersionParam === undefined) return params;
  if (params.length !== plan.mapVersionParam - 1) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `the statement's parameters go up to $${plan.mapVersionParam - 1}, but ${params.length} value(s) were given`,
    );
  }
  return [...params, routing.mapVersion];
}

const covered = new WeakMap<readonly string[], boolean>();

/**
 * The shards a broadcast reads must together own every bucket of the map it routes by, or some
 * rows would be missing from the answer: then it fails (retryable) rather than answer wrong.
 */
function requireCoverage(routing: BroadcastRouting): void {
  let ok = covered.get(routing.owners);
  if (ok === undefined) {
    const members = new Set(routing.shardIds);
    ok = routing.owners.every((owner) => members.has(owner));
    covered.set(routing.owners, ok);
  }
  if (!ok) {
    throw new ShardRouterError(
      'STALE_BUCKET_MAP',
      `bucket map version ${routing.mapVersion} gives buckets to shards outside ${routing.shardIds.join(', ')}: a broadcast would miss their rows`,
    );
  }
}

/** A stream that fails when iterated, so argument errors surface where stream errors do. */
export async function* failedStream<R>(error: unknown): AsyncGenerator<R, void, undefined> {
  throw error;
}

async function* concatenate(sources: readonly BatchSource<RawRow>[]): AsyncGenerator<readonly RawRow[]> {
  for (const source of sources) {
    for (let batch = await source.next(); batch.length > 0; batch = await source.next()) yield batch;
  }
}

function asShardError(error: unknown, shardId: string): ShardRouterError {
  if (error instanceof ShardRouterError) return error;
  return new ShardRouterError('QUERY_FAILED', `shard ${shardId}: ${error instanceof Error ? error.message : String(error)}`, { shardId, cause: error });
}
