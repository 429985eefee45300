import { parseRows } from '../pool/raw-text.js';
import type { FieldDef, QueryResultRow, RawQueryResult } from '../pool/session.js';
import type { ShardPool } from '../pool/shard-pool.js';
import { QueryError, ShardRouterError, statementCancelledError } from '../errors.js';
import { NO_BROADCAST_OBSERVER, NO_STREAM_OBSERVER } from '../observe/hooks.js';
import type { BroadcastObserver, StreamObserver, TransactionObserver } from '../observe/hooks.js';
import type { Transaction } from '../twopc/coordinator.js';
import { abortScope } from './abort-scope.js';
import { mergeSelect } from './merge/merge.js';
import type { ServerRanker } from './merge/row-order.js';
import { collationProbeSql, withCollations } from './plan/collation-probe.js';
import { columnIndex, formatPlan } from './plan/plan.js';
import type { BroadcastPlan, CollationProbe, CoordinatorPlan, PlannerCatalog, SelectPlan } from './plan/plan.js';
import { averageColumnKey } from './plan/plan-aggregate.js';
import { joinKeysAgree } from './join-keys.js';
import { planBroadcast } from './plan/planner.js';
import { loadParser } from './plan/sql-parser.js';
import { guardedParams, narrowedTo } from './routing.js';
import type { BroadcastRouting } from './routing.js';
import { DEFAULT_COORDINATOR, fillCoordinator, finishCoordinator } from './coordinator-step.js';
import type { CoordinatorRun, CoordinatorSettings } from './coordinator-step.js';
import { scatter } from './scatter.js';
import { streamCoordinated, streamSelect, streamWhole } from './stream.js';
import type { StreamCall, StreamHost } from './stream.js';
import { OID } from './values/oid.js';
import type { Scattered } from './scatter.js';
import { probeBroadcastCapabilities, serverHelpers } from './server-probe.js';
import type { BroadcastCapabilities, ServerCaster } from './server-probe.js';
import type { BroadcastResult, BroadcastStreamOptions, ScopedBroadcastOptions } from './types.js';

export type { BroadcastRouting } from './routing.js';

/** Where a read's shard queries run: the map it routes by, and how one shard's query is sent. */
interface ShardReads {
  routing(): BroadcastRouting;
  read(shardId: string, sql: string, values: readonly unknown[], signal: AbortSignal): Promise<RawQueryResult>;
}

/** How many distinct SQL texts keep their plan. */
const PLAN_CACHE_SIZE = 1_000;
const DEFAULT_BATCH_SIZE = 1_000;
const MAX_TIMEOUT_MS = 3_600_000;

/** What the broadcast engine needs from the router. */
export interface BroadcastRouterContext {
  routing(): BroadcastRouting;
  /** Runs `attempt` again on a refreshed map while it fails with STALE_BUCKET_MAP. */
  retryingStaleMap<T>(attempt: () => Promise<T>): Promise<T>;
  /**
   * The registered table a query names (schema as written, undefined for the default), if any:
   * reads of reference tables need one shard and their INSERTs go to all.
   */
  registeredTable(
    schema: string | undefined,
    name: string,
  ): { readonly kind: 'sharded' | 'reference'; readonly shardKey?: string | undefined } | undefined;
  /**
   * For a registered sharded table, the shard query condition that reads only owned buckets
   * (PlannerCatalog.movesGuard); `qualifier` qualifies its key column (a table of a join).
   */
  movesGuard(schema: string | undefined, name: string, versionParam: number, qualifier?: string): string | undefined;
  pool(shardId: string): ShardPool;
  readonly defaultTimeoutMillis: number;
  /** The coordinator step's shard and limits (broadcast.coordinatorShard, maxIntermediateRows/Bytes); defaults when absent. */
  readonly coordinator?: CoordinatorSettings;
  /**
   * Runs `work` in one transaction over every member of the map it routes by (two-phase commit
   * when it writes to several), again on a refreshed map when a fence refuses it.
   */
  runWrite<T>(
    timeoutMillis: number,
    work: (tx: Transaction, shardIds: readonly string[]) => Promise<T>,
    observer?: TransactionObserver,
  ): Promise<T>;
}

/** What the broadcaster learns from the shards' servers at open, and asks of them while merging. */
export interface BroadcastServers {
  readonly capabilities: BroadcastCapabilities;
  readonly ranker: ServerRanker;
  readonly caster: ServerCaster;
}

/** The router's port and the servers' help together: what `new Broadcaster` takes (unit tests pass fakes). */
export interface BroadcastContext extends BroadcastRouterContext, BroadcastServers {}

/** Plans (cached by SQL text), runs and merges broadcasts. */
export class Broadcaster {
  readonly #context: BroadcastRouterContext;
  readonly #servers: BroadcastServers;
  readonly #plans = new Map<string, BroadcastPlan>();
  /** Plans with their text collations filled in, once per plan (see collation-probe.ts). */
  #collated = new WeakMap<SelectPlan, Promise<SelectPlan>>();
  /** The columns of a coordinator plan's input tables, read once per plan. */
  #shapes: CoordinatorRun['shapes'] = new WeakMap();
  /** Pushed-down joins whose shard keys were checked (see join-keys.ts): the check, and its answer once known. */
  #keyChecks = new WeakMap<SelectPlan, { readonly check: Promise<boolean>; agree?: boolean }>();
  /** What stream.ts needs of this broadcaster. */
  readonly #streamHost: StreamHost;

  /**
   * Opens a broadcaster over the router's port: loads the SQL parser, probes every shard's
   * collation and aggregate names, and sets up ranking and casting on the shards' servers.
   */
  static async open(context: BroadcastRouterContext, pools: readonly ShardPool[]): Promise<Broadcaster> {
    const [capabilities] = await Promise.all([probeBroadcastCapabilities(pools), loadParser()]);
    return new Broadcaster(context, { capabilities, ...serverHelpers(pools) });
  }

  /** The servers' help comes with `context`, or apart (as `open` gives it); the parser must be loaded. */
  constructor(context: BroadcastContext);
  constructor(context: BroadcastRouterContext, servers: BroadcastServers);
  constructor(context: BroadcastRouterContext, servers: BroadcastServers = context as BroadcastContext) {
    this.#context = context;
    this.#servers = servers;
    this.#streamHost = {
      context,
      textOrder: servers.capabilities.textOrder,
      withCollations: (plan, fields, shardId) => this.#withCollations(plan, fields, shardId),
      coordinatorRun: (routing, controller, partial, observer) => this.#coordinatorRun(routing, controller, partial, observer),
      run: (sql, params, options, observer) => this.run(sql, params, options, observer),
      timeoutError: (timeoutMillis, shardIds) => this.#timeoutError(timeoutMillis, shardIds),
    };
  }

  /** The cached plan of `sql`, planning it on first use. */
  plan(sql: string): BroadcastPlan {
    if (typeof sql !== 'string' || sql.trim() === '') throw new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string');
    const cached = this.#plans.get(sql);
    if (cached) return cached;
    const plan = planBroadcast(sql, this.#plannerCatalog());
    if (this.#plans.size >= PLAN_CACHE_SIZE) this.#plans.delete(this.#plans.keys().next().value!);
    this.#plans.set(sql, plan);
    return plan;
  }

  #plannerCatalog(): PlannerCatalog {
    const aggregates = this.#servers.capabilities.aggregateNames;
    const context = this.#context;
    return {
      isAggregate: (name) => aggregates.has(name),
      isReferenceTable: (schema, name) => context.registeredTable(schema, name)?.kind === 'reference',
      movesGuard: (schema, name, versionParam, qualifier) => context.movesGuard(schema, name, versionParam, qualifier),
      shardKey: (schema, name) => {
        const table = context.registeredTable(schema, name);
        return table?.kind === 'sharded' ? table.shardKey : undefined;
      },
    };
  }

  /**
   * The plan again, with the avg columns the shards reported as float4 summed in float8 (as
   * avg(float4) does on one server); it replaces the cached plan, so this happens once per SQL text.
   */
  #widenedAverages(plan: SelectPlan, widened: ReadonlySet<string>): SelectPlan {
    const replanned = planBroadcast(plan.sql, this.#plannerCatalog(), { float8Averages: widened }) as SelectPlan;
    const cached = this.#plans.get(plan.sql);
    if (cached === plan) this.#plans.set(plan.sql, replanned);
    return cached !== plan && cached?.kind === 'select' && cached.ifColumnMissing === plan ? replanned.ifColumnMissing! : replanned;
  }

  /** Drops every cached plan (the table registry changed). */
  forgetPlans(): void {
    this.#plans.clear();
    this.#collated = new WeakMap();
    this.#shapes = new WeakMap();
    this.#keyChecks = new WeakMap();
  }

  /**
   * The plan to run: a pushed-down join as planned if its equated shard keys hash equal values
   * alike (checked once per plan), else its coordinator-step fallback, which replaces it in the cache.
   */
  async #checkedPlan(plan: BroadcastPlan): Promise<BroadcastPlan> {
    const fallback = plan.kind === 'select' ? plan.pushedJoin?.fallback : undefined;
    if (plan.kind !== 'select' || fallback === undefined) return plan;
    let entry = this.#keyChecks.get(plan);
    if (!entry) {
      const shardId = this.#context.routing().shardIds[0]!;
      const created: { check: Promise<boolean>; agree?: boolean } = { check: joinKeysAgree(plan, this.#context.pool(shardId)) };
      created.check.then(
        (agree) => {
          created.agree = agree;
        },
        () => this.#keyChecks.delete(plan),
      );
      this.#keyChecks.set(plan, created);
      entry = created;
    }
    if (await entry.check) return plan;
    if (this.#plans.get(plan.sql) === plan) this.#plans.set(plan.sql, fallback);
    return fallback;
  }

  /**
   * The plan with the collations of the text it orders, probed once per plan on a shard (a
   * column may have its own COLLATE); the plan itself when nothing it orders is collatable.
   */
  #withCollations(plan: SelectPlan, fields: readonly FieldDef[], shardId: string): Promise<SelectPlan> {
    const probe = plan.collationProbe;
    const slots = probe ? collatableSlots(plan, probe, fields) : [];
    if (!probe || slots.length === 0) return Promise.resolve(plan);
    let resolved = this.#collated.get(plan);
    if (!resolved) {
      resolved = this.#context
        .pool(shardId)
        .queryRaw(collationProbeSql(probe, slots), [])
        .then((result) => withCollations(plan, probe, new Map(slots.map((slot, i) => [slot, result.rows[0]?.[i] ?? null]))));
      const cache = this.#collated;
      cache.set(plan, resolved);
      resolved.catch(() => cache.delete(plan));
    }
    return resolved;
  }

  explain(sql: string): string {
    return formatPlan(this.plan(sql));
  }

  /** `observer`: told each shard's statement and a write's transaction steps (the router's spans). */
  async run<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[],
    options: ScopedBroadcastOptions,
    observer: BroadcastObserver = NO_BROADCAST_OBSERVER,
  ): Promise<BroadcastResult<R>> {
    const plan = await this.#checkedPlan(this.plan(sql));
    const timeoutMillis = this.#timeout(options.timeoutMillis ?? this.#context.defaultTimeoutMillis);
    const { signal, buckets } = options;
    // A write is one 2PC: it is not stopped half-way, so the signal is looked at only before it starts.
    if (signal?.aborted) throw statementCancelledError(signal.reason);
    switch (plan.kind) {
      case 'write':
        return this.#write<R>(plan.sql, params, timeoutMillis, observer);
      case 'single':
        return this.#read<R>(plan, params, timeoutMillis, options.partial === true, observer, signal, buckets);
      case 'coordinator':
        return this.#context.retryingStaleMap(() =>
          this.#coordinate<R>(plan, params, timeoutMillis, options.partial === true, observer, signal, buckets),
        );
      case 'select':
        try {
          return await this.#read<R>(plan, params, timeoutMillis, options.partial === true, observer, signal, buckets);
        } catch (error) {
          if (!plan.ifColumnMissing || !(error instanceof QueryError) || error.sqlState !== '42703') throw error;
          this.#plans.set(sql, plan.ifColumnMissing);
          return this.#read<R>(plan.ifColumnMissing, params, timeoutMillis, options.partial === true, observer, signal, buckets);
        }
      default: {
        const never: never = plan;
        throw new Error(`unknown plan ${String(never)}`);
      }
    }
  }

  /** A coordinator plan: the shards' rows into temporary tables on one shard, the statement run there over them. */
  async #coordinate<R extends QueryResultRow>(
    plan: CoordinatorPlan,
    params: readonly unknown[],
    timeoutMillis: number,
    partial: boolean,
    observer: BroadcastObserver,
    signal: AbortSignal | undefined,
    buckets: readonly number[] | undefined,
  ): Promise<BroadcastResult<R>> {
    const routing = narrowedTo(this.#context.routing(), buckets);
    // The caller's signal stops the coordinator step like the timeout (shard queries, then the outer query).
    const scope = abortScope({ timeoutMillis, signal, timeoutError: () => this.#timeoutError(timeoutMillis, routing.shardIds) });
    try {
      const filled = await fillCoordinator(plan, params, this.#coordinatorRun(routing, scope.controller, partial, observer));
      // A stop during the outer query cancels it on the coordinator (its connection is then destroyed).
      const onAbort = () => void filled.session.cancel?.().catch(() => undefined);
      scope.signal.addEventListener('abort', onAbort, { once: true });
      try {
        scope.signal.throwIfAborted();
        const result = await filled.session.query<R>(filled.outerSql, params as unknown[]);
        return { rows: result.rows, rowCount: result.rows.length, fields: result.fields, command: 'SELECT', failures: filled.failures };
      } finally {
        scope.signal.removeEventListener('abort', onAbort);
        await finishCoordinator(filled.session);
      }
    } catch (error) {
      throw scope.failure(error);
    } finally {
      scope.dispose();
    }
  }

  #coordinatorRun(
    routing: BroadcastRouting,
    controller: AbortController,
    partial: boolean,
    observer: BroadcastObserver = NO_BROADCAST_OBSERVER,
  ): CoordinatorRun {
    return {
      observer,
      routing,
      pool: (shardId) => this.#context.pool(shardId),
      settings: this.#context.coordinator ?? DEFAULT_COORDINATOR,
      controller,
      partial,
      shapes: this.#shapes,
    };
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
  #read<R extends QueryResultRow>(
    plan: SelectPlan | { kind: 'single'; sql: string },
    params: readonly unknown[],
    timeoutMillis: number,
    partial: boolean,
    observer: BroadcastObserver,
    signal: AbortSignal | undefined,
    buckets?: readonly number[],
  ): Promise<BroadcastResult<R>> {
    const reads = this.#poolReads(buckets);
    return this.#context.retryingStaleMap(() => this.#readOnce<R>(plan, params, timeoutMillis, partial, observer, signal, reads));
  }

  /** Shard queries on the pools, over the map of each attempt (narrowed to `buckets`' owners). */
  #poolReads(buckets: readonly number[] | undefined): ShardReads {
    return {
      routing: () => narrowedTo(this.#context.routing(), buckets),
      read: (shardId, sql, values, signal) => this.#context.pool(shardId).queryRaw(sql, values, signal),
    };
  }

  /**
   * tx.query's SELECT over several participants: the merge plan's shard query runs on the
   * transaction's own sessions (its snapshot and its uncommitted writes), guarded by the
   * transaction's map, and merges exactly as broadcast does. A plan that needs the coordinator
   * step, or a retry (an ambiguous GROUP BY alias), is refused: a failed statement would abort
   * the transaction.
   */
  async readAmong<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[],
    routing: BroadcastRouting,
    read: (shardId: string, sql: string, values: readonly unknown[]) => Promise<RawQueryResult>,
  ): Promise<BroadcastResult<R>> {
    const plan = await this.#checkedPlan(this.plan(sql));
    if (plan.kind !== 'select' || plan.ifColumnMissing) {
      throw new ShardRouterError(
        'UNSUPPORTED',
        plan.kind === 'select'
          ? 'inside a transaction, a SELECT over several shards cannot GROUP BY a name that is both a column and another output alias: rename the alias'
          : `inside a transaction, a SELECT over several shards must be one the broadcast merge answers (this one needs ${plan.kind === 'coordinator' ? 'the coordinator step' : `a ${plan.kind} plan`}): run it with router.query outside the transaction`,
      );
    }
    // The transaction's own deadline bounds its statements (statement_timeout on its sessions).
    return this.#readOnce<R>(plan, params, MAX_TIMEOUT_MS, false, NO_BROADCAST_OBSERVER, undefined, { routing: () => routing, read });
  }

  async #readOnce<R extends QueryResultRow>(
    plan: SelectPlan | { kind: 'single'; sql: string },
    params: readonly unknown[],
    timeoutMillis: number,
    partial: boolean,
    observer: BroadcastObserver,
    signal: AbortSignal | undefined,
    reads: ShardReads,
  ): Promise<BroadcastResult<R>> {
    const routing = reads.routing();
    const shardIds = plan.kind === 'single' ? routing.shardIds.slice(0, 1) : routing.shardIds;
    const sql = plan.kind === 'single' ? plan.sql : plan.shardSql;
    const values = plan.kind === 'single' ? params : guardedParams(plan, params, routing);
    // The caller's signal cancels the shard queries still running, like the timeout.
    const scope = abortScope({ timeoutMillis, signal, timeoutError: () => this.#timeoutError(timeoutMillis, shardIds) });
    let scattered: Scattered;
    try {
      scattered = await scatter(
        shardIds,
        (shardId) => observer.shard(shardId, sql, () => reads.read(shardId, sql, values, scope.signal)),
        scope.controller,
        partial,
      );
    } finally {
      scope.dispose();
    }
    const { answered, failures } = scattered;
    if (answered.length === 0) throw failures[0]!.error;
    if (plan.kind === 'select') {
      const widened = float4Averages(plan, answered[0]!.fields);
      if (widened.size > 0)
        return this.#readOnce<R>(this.#widenedAverages(plan, widened), params, timeoutMillis, partial, observer, signal, reads);
    }
    if (plan.kind === 'single') {
      const only = answered[0]!;
      return {
        rows: parseRows<R>(only.rows, only.fields),
        rowCount: only.rowCount ?? only.rows.length,
        fields: only.fields,
        command: only.command,
        failures,
      };
    }
    const collated = await this.#withCollations(plan, answered[0]!.fields, answered[0]!.shardId);
    const { rows, fields } = await mergeSelect<R>(collated, answered, {
      params,
      textOrder: this.#servers.capabilities.textOrder,
      ranker: this.#servers.ranker,
      caster: this.#servers.caster,
    });
    return { rows, rowCount: rows.length, fields, command: 'SELECT', failures };
  }

  /** A write on every shard in one transaction: a schema change lands everywhere or nowhere. */
  async #write<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[],
    timeoutMillis: number,
    observer: BroadcastObserver,
  ): Promise<BroadcastResult<R>> {
    const results = await this.#context.runWrite(
      timeoutMillis,
      (tx, shardIds) =>
        Promise.all(shardIds.map((shardId) => observer.shard(shardId, sql, () => tx.executeOn<R>(shardId, sql, params as unknown[])))),
      observer,
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
   * Streams a SELECT (see stream.ts): plain queries through shard cursors merged a batch at a
   * time, coordinator plans through a cursor on the coordinator, aggregate and DISTINCT queries
   * merged whole, then yielded. Argument and planning errors surface on the first iteration,
   * like the stream's own. `observer`: the whole stream and each shard's cursor (the router's
   * metrics and spans).
   */
  stream<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[],
    options: BroadcastStreamOptions,
    observe: () => StreamObserver = () => NO_STREAM_OBSERVER,
  ): AsyncGenerator<R, void, undefined> {
    let plan: BroadcastPlan;
    let call: StreamCall;
    try {
      plan = this.plan(sql);
      const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
      if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 1_000_000) {
        throw new ShardRouterError('INVALID_ARGUMENT', `batchSize must be an integer from 1 to 1000000, got ${String(batchSize)}`);
      }
      const timeoutMillis = options.timeoutMillis === undefined ? undefined : this.#timeout(options.timeoutMillis);
      if (plan.kind === 'write') throw new ShardRouterError('INVALID_ARGUMENT', 'broadcastStream takes a SELECT; use broadcast for writes');
      if (options.signal?.aborted) throw statementCancelledError(options.signal.reason);
      call = { params, batchSize, timeoutMillis, signal: options.signal, observe };
    } catch (error) {
      return failedStream(error, observe);
    }
    if (plan.kind === 'select' && plan.pushedJoin?.fallback && this.#keyChecks.get(plan)?.agree === undefined) {
      return this.#streamAfterKeyCheck<R>(plan, params, options);
    }
    if (plan.kind === 'coordinator') return streamCoordinated<R>(this.#streamHost, plan, call);
    if (plan.kind === 'single' || plan.aggregate || plan.distinct) return streamWhole<R>(this.#streamHost, sql, call);
    return streamSelect<R>(this.#streamHost, plan, call);
  }

  /** A pushed-down join not yet checked: the check first, then the stream of the plan it chose. */
  async *#streamAfterKeyCheck<R extends QueryResultRow>(
    plan: SelectPlan,
    params: readonly unknown[],
    options: BroadcastStreamOptions,
  ): AsyncGenerator<R, void, undefined> {
    await this.#checkedPlan(plan);
    yield* this.stream<R>(plan.sql, params, options);
  }

  #timeoutError(timeoutMillis: number, shardIds: readonly string[]): ShardRouterError {
    return new ShardRouterError(
      'BROADCAST_TIMEOUT',
      `the broadcast did not finish within ${timeoutMillis} ms on shards ${shardIds.join(', ')}; the running shard queries were cancelled`,
    );
  }
}

/** Types whose order may depend on a collation: text, varchar, bpchar, name, and user types (domains, citext). */
function collatable(oid: number | undefined): boolean {
  return oid === OID.text || oid === OID.varchar || oid === OID.bpchar || oid === OID.name || (oid !== undefined && oid >= 16_384);
}

/** The probe's slots whose column (sort key or min/max) has a collatable type in the shard result. */
function collatableSlots(plan: SelectPlan, probe: CollationProbe, fields: readonly FieldDef[]): number[] {
  const hiddenCount = plan.hidden.length;
  const visibleCount = fields.length - hiddenCount;
  const slots = new Set<number>();
  plan.sort.forEach((key, i) => {
    const slot = probe.sort[i];
    if (slot !== undefined && collatable(fields[columnIndex(key.column, fields.length, hiddenCount)]?.dataTypeID)) slots.add(slot);
  });
  for (const { column, slot } of probe.roles) {
    const index = column.startsWith('h') ? visibleCount + Number(column.slice(1)) : Number(column.slice(1));
    if (collatable(fields[index]?.dataTypeID)) slots.add(slot);
  }
  return [...slots].sort((a, b) => a - b);
}

/** The avg columns whose shard-side sum came back float4 (their argument is float4), by averageColumnKey. */
function float4Averages(plan: SelectPlan, fields: readonly FieldDef[]): Set<string> {
  const widened = new Set<string>();
  if (!plan.aggregate) return widened;
  const { visibleRoles, hiddenRoles } = plan.aggregate;
  for (const [position, role] of visibleRoles.entries()) {
    if (role.kind === 'avg' && fields[position]?.dataTypeID === OID.float4) widened.add(averageColumnKey({ kind: 'visible', position }));
  }
  for (const [index, role] of hiddenRoles.entries()) {
    const field = fields[visibleRoles.length + index];
    if (role.kind === 'avg' && field?.dataTypeID === OID.float4) widened.add(averageColumnKey({ kind: 'hidden', index }));
  }
  return widened;
}

/** A stream that fails when iterated, so argument errors surface where stream errors do (and count, given `observe`). */
export async function* failedStream<R>(error: unknown, observe?: () => StreamObserver): AsyncGenerator<R, void, undefined> {
  await observe?.()
    .run(() => Promise.reject(error))
    .catch(() => undefined);
  throw error;
}
