import type { ResolvedConfig } from '../config.js';
import { ShardRouterError, closedError, isStaleMap } from '../errors.js';
import type { Observer } from '../observe/observer.js';
import type { SpanLike } from '../observe/tracing.js';
import type { ShardKey } from '../placement/hash.js';
import { ShardPgPool } from '../pool/pg-pool-face.js';
import type { QueryResultRow } from '../pool/session.js';
import type { ShardPool, ShardQueryResult } from '../pool/shard-pool.js';
import { SERVER_TIMEOUT_MARGIN_MS, checkedExecuteOptions, executeStop, runBounded } from './execute-options.js';
import type { ExecuteOptions } from './execute-options.js';
import type { Topology } from './topology.js';

export type ExecuteResult<R extends QueryResultRow = QueryResultRow> = ShardQueryResult<R>;

/** What the single-shard statements need from the router that owns them. */
export interface StatementsContext {
  readonly config: ResolvedConfig;
  readonly topology: Topology;
  readonly observer: Observer;
  readonly isClosed: () => boolean;
  readonly refreshMap: () => Promise<unknown>;
}

/**
 * The router's single-shard statements: `execute` by key (the hot path), `executeOn` by shard
 * id, and the `pg.Pool` faces for ORMs. Each routes by the map of the moment it is called and
 * stamps the connection with that map's version, so a shard that has lost the bucket refuses a
 * write (STALE_BUCKET_MAP); a refused single statement did nothing and is sent again to the new
 * owner once the map is fresh. The caller checks that the router is open.
 */
export class SingleShardStatements {
  readonly #context: StatementsContext;

  constructor(context: StatementsContext) {
    this.#context = context;
  }

  /** `router.execute` without an idempotency key. */
  execute<R extends QueryResultRow>(
    key: ShardKey,
    sql: string,
    params: readonly unknown[] | undefined,
    options: ExecuteOptions | undefined,
  ): Promise<ExecuteResult<R>> {
    const { topology, observer, config } = this.#context;
    if (options !== undefined || config.statementTimeoutMillis !== undefined) return this.#executeBounded<R>(key, sql, params, options);
    // Not `async`: one promise layer fewer on the hot path; errors still arrive as rejections.
    let bucket: number;
    let pool: ShardPool;
    let version: number;
    try {
      bucket = topology.bucketOf(key);
      pool = topology.poolOfBucket(bucket);
      // Read in the same tick as the pool: the connection carries the version it was routed by.
      version = topology.map.version;
    } catch (error) {
      return Promise.reject(error);
    }
    const started = performance.now();
    const span = observer.tracing?.keyed(pool.shardId, sql, bucket, version);
    // One promise layer, as before: success and failure are both handled by this `then`.
    return run<R>(pool, sql, params, version).then(
      (result) => observed(observer, started, span, result),
      (error: unknown) =>
        // A fenced write did nothing, so it is safe to send again once the map is fresh.
        isStaleMap(error)
          ? topology
              .retryingStaleMap(() => run<R>(topology.poolFor(key), sql, params, topology.map.version), error)
              .then(
                (result) => observed(observer, started, span, result),
                (failure: unknown) => observedFailure(observer, started, span, failure),
              )
          : observedFailure(observer, started, span, error),
    );
  }

  /** execute with a timeout or a signal: the same routing, stale-map retry and version stamp. */
  async #executeBounded<R extends QueryResultRow>(
    key: ShardKey,
    sql: string,
    params: readonly unknown[] | undefined,
    options: ExecuteOptions | undefined,
  ): Promise<ExecuteResult<R>> {
    const { topology, observer, config } = this.#context;
    const stop = executeStop(checkedExecuteOptions(options), config);
    const started = performance.now();
    // Behind `?.`: with no tracing the key is not hashed again.
    const tracing = observer.tracing;
    const bucket = tracing ? topology.bucketOf(key) : 0;
    const span = tracing?.keyed(topology.poolOfBucket(bucket).shardId, sql, bucket, topology.map.version);
    // Pool and version in one tick: the connection carries the version it was routed by.
    const attempt = () =>
      stop
        ? runBounded<R>(topology.poolFor(key), sql, params, topology.map.version, stop)
        : run<R>(topology.poolFor(key), sql, params, topology.map.version);
    return topology.retryingStaleMap(attempt).then(
      (result) => observed(observer, started, span, result),
      (error: unknown) => observedFailure(observer, started, span, error),
    );
  }

  /** `router.executeOn`: one statement on a named shard, unfenced (DDL, maintenance, per-shard reads). */
  async executeOn<R extends QueryResultRow>(
    shardId: string,
    sql: string,
    params: readonly unknown[] | undefined,
  ): Promise<ExecuteResult<R>> {
    const { topology, observer } = this.#context;
    const pool = topology.pool(shardId);
    const started = performance.now();
    const span = observer.tracing?.statement(shardId, sql, NO_DETAIL);
    try {
      return observed(observer, started, span, await run<R>(pool, sql, params, undefined));
    } catch (error) {
      return observedFailure(observer, started, span, error);
    }
  }

  /** `router.poolFor`: a pg.Pool whose every query and connect goes to the key's owner of that moment. */
  poolFor(key: ShardKey): ShardPgPool {
    const { topology, isClosed } = this.#context;
    topology.bucketOf(key);
    return new ShardPgPool({
      route: () => {
        if (isClosed()) throw closedError();
        // Owner and version in one tick: the connection carries the version it was routed by.
        return { pool: topology.poolFor(key), version: topology.map.version };
      },
      retryStale: (attempt, first) => topology.retryingStaleMap(attempt, first),
      onStale: () => this.#context.refreshMap().then(() => undefined),
      timeoutMillis: this.#routerStatementTimeout(),
    });
  }

  /** `router.poolOn`: a pg.Pool of one shard, its connections stamped with `mapVersion` or the newest. */
  poolOn(shardId: string, options: { mapVersion?: number }): ShardPgPool {
    const { topology, isClosed } = this.#context;
    topology.pool(shardId);
    const { mapVersion } = options;
    if (mapVersion !== undefined && (!Number.isSafeInteger(mapVersion) || mapVersion < 1))
      throw new ShardRouterError('INVALID_ARGUMENT', 'mapVersion must be a bucket map version (a positive integer)');
    return new ShardPgPool({
      route: () => {
        if (isClosed()) throw closedError();
        return { pool: topology.pool(shardId), version: mapVersion };
      },
      // Unpinned statements carry the newest version: a refusal means this router's map is behind.
      retryStale: mapVersion === undefined ? (attempt, first) => topology.retryingStaleMap(attempt, first) : undefined,
      onStale: () => this.#context.refreshMap().then(() => undefined),
      timeoutMillis: this.#routerStatementTimeout(),
    });
  }

  /** The router's own bound on a pool-face statement: the server's statement_timeout plus a margin. */
  #routerStatementTimeout(): number | undefined {
    const configured = this.#context.config.statementTimeoutMillis;
    return configured === undefined ? undefined : configured + SERVER_TIMEOUT_MARGIN_MS;
  }
}

const NO_PARAMS: readonly unknown[] = Object.freeze([]);
const NO_DETAIL = Object.freeze({});

/** Runs one statement on one shard as a single-route statement of the router's metrics, under its own span (router.query's one-shard route). */
export function observedSingle<R extends QueryResultRow>(
  observer: Observer,
  shardId: string,
  sql: string,
  mapVersion: number,
  work: () => Promise<ExecuteResult<R>>,
): Promise<ExecuteResult<R>> {
  const started = performance.now();
  const span = observer.tracing?.statement(shardId, sql, { mapVersion });
  return work().then(
    (result) => observed(observer, started, span, result),
    (error: unknown) => observedFailure(observer, started, span, error),
  );
}

/** Records a single-shard statement that succeeded (and ends its span). */
function observed<T extends ExecuteResult>(observer: Observer, started: number, span: SpanLike | undefined, result: T): T {
  observer.single(true, (performance.now() - started) / 1000);
  if (span) observer.tracing!.succeeded(span, result.shardId, result.command);
  return result;
}

/** Records a single-shard statement that failed (and ends its span), then rethrows. */
function observedFailure(observer: Observer, started: number, span: SpanLike | undefined, error: unknown): never {
  observer.single(false, (performance.now() - started) / 1000, error);
  if (span) observer.tracing!.failed(span, error);
  throw error;
}

function run<R extends QueryResultRow>(
  pool: ShardPool,
  sql: string,
  params: readonly unknown[] | undefined,
  version: number | undefined,
): Promise<ExecuteResult<R>> {
  if (typeof sql !== 'string' || sql.length === 0)
    return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string'));
  if (params !== undefined && !Array.isArray(params))
    return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'params must be an array'));
  return pool.query<R>(sql, params ?? NO_PARAMS, version);
}
