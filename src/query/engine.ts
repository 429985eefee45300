import type { BroadcastResult, ScopedBroadcastOptions } from '../broadcast/types.js';
import { ShardRouterError, isStaleMap } from '../errors.js';
import type { RegisteredTable } from '../catalog/registries.js';
import type { QueryResultRow } from '../pool/session.js';
import type { ShardQueryResult } from '../pool/shard-pool.js';
import type { RawRead, RoutedQueryResult, Transaction } from '../twopc/coordinator.js';
import type { BroadcastRouting } from '../broadcast/routing.js';
import type { Analysis } from './analysis.js';
import { analyze } from './analyze.js';
import { insertPart } from './insert-split.js';
import { combine, inInputOrder, runInTransaction, single } from './routed-results.js';
import { canonicalKey, keyTypeOf } from './key-values.js';
import type { KeyType } from './key-values.js';
import { routeOf } from './route.js';
import type { QueryRoute, RouteMap } from './route.js';
import type { RegistryLookup } from './scope.js';

/** How many distinct SQL texts keep their analysis. */
const ANALYSIS_CACHE_SIZE = 1_000;

/** Options of router.query. */
export interface QueryOptions {
  /** Refuse (KEY_REQUIRED) a statement that would run on every shard. Default: `query.requireKey` of the config. */
  readonly requireKey?: boolean;
}

/** What router.query returns: pg's result shape, and the shards that ran the statement (every member for a broadcast). */
export type QueryResult<R extends QueryResultRow = QueryResultRow> = RoutedQueryResult<R>;

/** The route of a statement, as explainQuery prints it. */
export type QueryExplanation = QueryRoute & { readonly sql: string; readonly mapVersion: number; readonly broadcastPlan?: string };

/** What the query engine needs from the router. */
export interface QueryContext {
  /** The map of the moment: version, owners, members (read together). */
  routing(): RouteMap & { readonly version: number };
  /** The owner of a key in the current map (the hot path; read with mapVersion in one tick). */
  shardFor(key: string): string;
  mapVersion(): number;
  /** One statement on one shard, its connection stamped with `version` (fenced like execute). */
  runOn<R extends QueryResultRow>(shardId: string, sql: string, params: readonly unknown[], version: number): Promise<ShardQueryResult<R>>;
  retryingStaleMap<T>(attempt: () => Promise<T>, first?: unknown): Promise<T>;
  /** A transaction over the shards `pick` chooses from the map it routes by ('all': every member), retried on a stale map. */
  runWrite<T>(
    pick: (map: RouteMap) => readonly string[] | 'all',
    work: (tx: Transaction, shardIds: readonly string[]) => Promise<T>,
  ): Promise<T>;
  broadcast<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[],
    options: ScopedBroadcastOptions,
  ): Promise<BroadcastResult<R> & { readonly shardIds?: readonly string[] }>;
  /** A SELECT's shard query on several transaction participants (`read`), merged like broadcast (Broadcaster.readAmong). */
  readAmong<R extends QueryResultRow>(
    sql: string,
    params: readonly unknown[],
    routing: BroadcastRouting,
    read: RawRead,
  ): Promise<BroadcastResult<R>>;
  /** The bucket of a key (fixed for the cluster's life; its owner depends on the map). */
  bucketOf(key: string): number;
  explainBroadcast(sql: string): string;
  readonly lookup: RegistryLookup;
  readonly tables: readonly RegisteredTable[];
  /** format_type of a table's column, read from a shard. */
  columnType(table: string, column: string): Promise<string | undefined>;
  readonly requireKey: boolean;
  readonly unregisteredShard: string | undefined;
}

/** router.query: analysis cached by SQL text, a route per call, the statement run where the route says. */
export class QueryEngine {
  readonly #context: QueryContext;
  readonly #analyses = new Map<string, Analysis>();
  readonly #keyTypes = new Map<string, KeyType | undefined>();
  #turn = 0;

  constructor(context: QueryContext) {
    this.#context = context;
  }

  /** Drops cached analyses and key types (the table registry changed). */
  forget(): void {
    this.#analyses.clear();
    this.#keyTypes.clear();
  }

  /** The cached analysis, or a promise of it (the first call reads the key columns' types). */
  #analysis(sql: string): Analysis | Promise<Analysis> {
    const cached = this.#analyses.get(sql);
    if (cached) return cached;
    if (typeof sql !== 'string' || sql.trim() === '') throw new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string');
    return this.#analyzeFresh(sql);
  }

  async #analyzeFresh(sql: string): Promise<Analysis> {
    const context = this.#context;
    const sharded = context.tables.filter((table) => table.kind === 'sharded' && !this.#keyTypes.has(table.table));
    for (const table of sharded) this.#keyTypes.set(table.table, keyTypeOf((await context.columnType(table.table, table.shardKey!)) ?? ''));
    const analysis = analyze(sql, {
      lookup: context.lookup,
      keyType: (table) => this.#keyTypes.get(table),
      unregisteredShard: context.unregisteredShard,
    });
    if (this.#analyses.size >= ANALYSIS_CACHE_SIZE) this.#analyses.delete(this.#analyses.keys().next().value!);
    this.#analyses.set(sql, analysis);
    return analysis;
  }

  /** Runs one statement where its shard key says. */
  query<R extends QueryResultRow>(sql: string, params: readonly unknown[], options: QueryOptions): Promise<QueryResult<R>> {
    try {
      const analysis = this.#analysis(sql);
      if (analysis instanceof Promise) return analysis.then((ready) => this.#run<R>(ready, params, options));
      return this.#run<R>(analysis, params, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #run<R extends QueryResultRow>(analysis: Analysis, params: readonly unknown[], options: QueryOptions): Promise<QueryResult<R>> {
    if (analysis.kind === 'keyed' && analysis.point) {
      // One `key = $n`: the key's owner, with no route object (NULL and bad values take the general path).
      const key = analysis.point.index < params.length ? canonicalKey(params[analysis.point.index], analysis.point.keyType) : null;
      if (key !== null) return this.#runOnOwner<R>(analysis, key, params, options);
    }
    const routing = this.#context.routing();
    const route = routeOf(analysis, params, routing, this.#routeOptions(options));
    if (route.kind === 'shard') {
      // The hot path: one shard, the statement as written, fenced like execute.
      return this.#context
        .runOn<R>(route.shardId, analysis.sql, params, routing.version)
        .then(single, (error: unknown) =>
          isStaleMap(error) ? this.#rerouted<R>(analysis, params, options, error) : Promise.reject(error),
        );
    }
    return this.#rerouted<R>(analysis, params, options);
  }

  #runOnOwner<R extends QueryResultRow>(
    analysis: Analysis,
    key: string,
    params: readonly unknown[],
    options: QueryOptions,
  ): Promise<QueryResult<R>> {
    const context = this.#context;
    // Owner and version read in one tick: the connection carries the map it was routed by.
    const shardId = context.shardFor(key);
    return context
      .runOn<R>(shardId, analysis.sql, params, context.mapVersion())
      .then(single, (error: unknown) => (isStaleMap(error) ? this.#rerouted<R>(analysis, params, options, error) : Promise.reject(error)));
  }

  /**
   * #runElsewhere, routed again on a refreshed map while a fence refuses it. The broadcast and
   * 2PC routes retry a refusal on their own: a refusal that comes out of them has spent its
   * budget and is final here (retrying it again would multiply the budgets: a stale router's
   * refused write took ~10 s and 36 attempts before it failed).
   */
  #rerouted<R extends QueryResultRow>(
    analysis: Analysis,
    params: readonly unknown[],
    options: QueryOptions,
    first?: unknown,
  ): Promise<QueryResult<R>> {
    return this.#context
      .retryingStaleMap(() => this.#runElsewhere<R>(analysis, params, options), first)
      .catch((error: unknown) => {
        throw error instanceof RetriesSpent ? error.refusal : error;
      });
  }

  /** A route that may span shards; every attempt routes again on the map of the moment. */
  async #runElsewhere<R extends QueryResultRow>(
    analysis: Analysis,
    params: readonly unknown[],
    options: QueryOptions,
  ): Promise<QueryResult<R>> {
    const routing = this.#context.routing();
    const route = routeOf(analysis, params, routing, this.#routeOptions(options));
    switch (route.kind) {
      case 'shard':
        return single(await this.#context.runOn<R>(route.shardId, analysis.sql, params, routing.version));
      case 'broadcast': {
        // Pinned keys: only their buckets' owners are read (in the map each broadcast attempt routes by).
        const buckets = route.keys?.map((key) => this.#context.bucketOf(key));
        const result = await this.#context.broadcast<R>(analysis.sql, params, buckets ? { buckets } : {}).catch(spent);
        return {
          rows: result.rows,
          rowCount: result.rowCount,
          fields: result.fields,
          command: result.command,
          shardIds: result.shardIds ?? route.shardIds,
        };
      }
      case 'write':
        return this.#writeOn<R>(analysis, params, options).catch(spent);
      case 'insert':
        return this.#insert<R>(analysis as Extract<Analysis, { kind: 'insert' }>, params).catch(spent);
      default: {
        const never: never = route;
        throw new Error(`unknown route ${String(never)}`);
      }
    }
  }

  /**
   * UPDATE/DELETE on the shards of its keys (or every shard), and writes of reference tables on
   * every shard: one 2PC, its shards chosen from the map it routes by. A reference table's
   * copies are equal, so its result is one copy's (as one server would say), not the sum.
   */
  #writeOn<R extends QueryResultRow>(analysis: Analysis, params: readonly unknown[], options: QueryOptions): Promise<QueryResult<R>> {
    return this.#context.runWrite(
      (map) => {
        const route = routeOf(analysis, params, map, this.#routeOptions(options));
        return route.kind === 'shard' ? [route.shardId] : route.kind === 'write' ? route.shardIds : map.members;
      },
      async (tx, shardIds) => {
        const results = await Promise.all(shardIds.map((shardId) => tx.executeOn<R>(shardId, analysis.sql, params as unknown[])));
        return analysis.kind === 'reference' ? { ...single(results[0]!), shardIds } : combine(results);
      },
    );
  }

  /** A multi-row INSERT split by shard in one 2PC; RETURNING rows in input order. */
  #insert<R extends QueryResultRow>(analysis: Extract<Analysis, { kind: 'insert' }>, params: readonly unknown[]): Promise<QueryResult<R>> {
    let parts: { shardId: string; rows: readonly number[] }[] = [];
    return this.#context.runWrite(
      (map) => {
        const route = routeOf(analysis, params, map, { requireKey: false, turn: 0 });
        parts =
          route.kind === 'insert'
            ? [...route.parts]
            : [{ shardId: (route as { shardId: string }).shardId, rows: analysis.rows.keys.map((_, i) => i) }];
        return parts.map((part) => part.shardId);
      },
      async (tx) => {
        const results = await Promise.all(
          parts.map((part) => {
            const built = insertPart(analysis.tree, part.rows, params);
            return tx.executeOn<R>(part.shardId, built.sql, built.params as unknown[]);
          }),
        );
        return inInputOrder(parts, results, analysis.rows.keys.length);
      },
    );
  }

  #routeOptions(options: QueryOptions): { requireKey: boolean; turn: number } {
    return { requireKey: options.requireKey ?? this.#context.requireKey, turn: this.#turn++ };
  }

  /** The route of a statement with these params on the current map, as data. */
  async explain(sql: string, params: readonly unknown[]): Promise<QueryExplanation> {
    const analysis = await this.#analysis(sql);
    const routing = this.#context.routing();
    const route = routeOf(analysis, params, routing, { requireKey: false, turn: 0 });
    const base = { ...route, sql, mapVersion: routing.version };
    return route.kind === 'broadcast' ? { ...base, broadcastPlan: this.#context.explainBroadcast(sql) } : base;
  }

  /**
   * tx.query: the same routing, within the transaction's participants (its map). A statement
   * for another shard is KEY_NOT_IN_TRANSACTION; one that would need every shard too. A SELECT
   * whose keys fall on several participants is merged from reads on the transaction's sessions.
   */
  async inTransaction<R extends QueryResultRow>(
    tx: Transaction,
    map: TransactionMap,
    sql: string,
    params: readonly unknown[],
    readRaw: RawRead,
  ): Promise<QueryResult<R>> {
    const analysis = await this.#analysis(sql);
    const route = routeOf(analysis, params, { shardFor: map.shardFor, members: tx.shardIds }, this.#routeOptions({}));
    return runInTransaction<R>(tx, analysis, route, params, async (keys, shardIds) => {
      const buckets = keys.map((key) => this.#context.bucketOf(key));
      const routing = { mapVersion: map.version, shardIds, owners: map.owners, buckets };
      const result = await this.#context.readAmong<R>(analysis.sql, params, routing, readRaw);
      return { rows: result.rows, rowCount: result.rowCount, fields: result.fields, command: result.command, shardIds };
    });
  }
}

/** A fence's refusal that a self-retrying route already retried: not retried again by #rerouted. */
class RetriesSpent {
  constructor(readonly refusal: unknown) {}
}

function spent(error: unknown): never {
  throw isStaleMap(error) ? new RetriesSpent(error) : error;
}

/** The map a transaction routes by: its version, each bucket's owner, and a key's owner. */
export interface TransactionMap {
  readonly version: number;
  readonly owners: readonly string[];
  shardFor(key: string): string;
}
