import { failedStream } from '../broadcast/broadcaster.js';
import type { Broadcaster } from '../broadcast/broadcaster.js';
import type { BroadcastOptions, BroadcastResult, BroadcastStreamOptions } from '../broadcast/types.js';
import type { RegisteredTable, ShardedTableOptions, TableKind } from '../catalog/registries.js';
import type { ResolvedConfig, ShardRouterConfig } from '../config.js';
import { ShardRouterError, closedError } from '../errors.js';
import type { RouterMetrics } from '../observe/metrics-store.js';
import type { Observer } from '../observe/observer.js';
import { IdSource } from '../ids/id-source.js';
import type { QueryEngine, QueryExplanation, QueryOptions, QueryResult } from '../query/engine.js';
import type { BucketMap } from '../placement/bucket-map.js';
import type { ShardKey } from '../placement/hash.js';
import type { QueryResultRow } from '../pool/session.js';
import type { ShardPgPool } from '../pool/pg-pool-face.js';
import type { PoolStats } from '../pool/shard-pool.js';
import { IdempotencyKeys } from '../idempotency/idempotency-keys.js';
import type { IdempotencyOptions, IdempotentExecuteOptions, IdempotentExecuteResult } from '../idempotency/idempotency-keys.js';
import { RecordCollector } from '../idempotency/collector.js';
import type { SagaOptions, SagaStepDefinition } from '../saga/definition.js';
import { SagaEngine } from '../saga/sagas.js';
import type { Saga, SagaResumeReport } from '../saga/sagas.js';
import { Rebalancer } from '../rebalance/rebalancer.js';
import type { RebalancerOptions } from '../rebalance/rebalancer.js';
import { OutboxAdmin } from '../outbox/admin.js';
import { OutboxConsumer } from '../outbox/consumer.js';
import type { OutboxContext } from '../outbox/context.js';
import { PublishNotifier } from '../outbox/notifier.js';
import type { ConsumeOptions } from '../outbox/options.js';
import { resolveConsumeOptions } from '../outbox/options.js';
import type { Transaction } from '../outbox/publish.js';
import type { CoordinatorContext } from '../twopc/coordinator.js';
import type { RecoveryReport } from '../twopc/recovery.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';
import { mapChannel } from '../catalog/map-channel.js';
import { Locks } from '../lock/locks.js';
import type { HeldLockInfo, LockOptions } from '../lock/types.js';
import type { BackgroundRecovery } from './background-recovery.js';
import { CATALOG_EXTENSIONS, composeRouter } from './compose.js';
import type { RouterParts } from './compose.js';
import { clusterAccess, collectorContext, lockContext, outboxContext, sagaContext } from './contexts.js';
import { MapWatcher } from './map-watcher.js';
import { buildBucketIndexes, checkShardedTableOptions, registerTable } from './registration.js';
import { SingleShardStatements } from './statements.js';
import type { ExecuteResult } from './statements.js';
import { runRoutedTransaction } from './transactions.js';
import type { TransactionsContext } from './transactions.js';
import type { ExecuteOptions } from './execute-options.js';
import { shardStatuses } from './status.js';
import type { RouterStatus } from './status.js';
import type { Topology } from './topology.js';
import type { ShardInfo } from './topology.js';

export type { RouterStatus, ShardStatus } from './status.js';
export type { ExecuteOptions } from './execute-options.js';
export type { ShardInfo, ShardState } from './topology.js';

/** pg's result shape plus the shard that produced it. */
export type { ExecuteResult } from './statements.js';

/**
 * Routes statements to the PostgreSQL shard that owns a key.
 *
 * @example
 * const router = await ShardRouter.connect({
 *   shards: [
 *     { id: 's0', connectionString: 'postgres://app:secret@db0:5432/app' },
 *     { id: 's1', connectionString: 'postgres://app:secret@db1:5432/app' },
 *   ],
 * });
 * const { rows } = await router.execute(userId, 'SELECT * FROM orders WHERE user_id = $1', [userId]);
 * await router.close();
 */
export class ShardRouter {
  /** The cluster's id, fixed when the cluster was created and stored on every shard. */
  readonly clusterId: string;
  readonly #config: ResolvedConfig;
  readonly #topology: Topology;
  readonly #coordinator: CoordinatorContext;
  readonly #recovery: BackgroundRecovery;
  readonly #broadcaster: Broadcaster;
  readonly #watcher: MapWatcher;
  readonly #idempotency: IdempotencyKeys<Transaction>;
  readonly #collector: RecordCollector;
  readonly #observer: Observer;
  readonly #outboxContext: OutboxContext;
  readonly #notifier: PublishNotifier;
  readonly #consumers = new Set<OutboxConsumer>();
  /** Parked events and group status (docs/outbox.md). */
  readonly outbox: OutboxAdmin;
  readonly #locks: Locks;
  readonly #queries: QueryEngine;
  #ids: IdSource | undefined;
  readonly #sagas: SagaEngine;
  readonly #statements: SingleShardStatements;
  readonly #transactions: TransactionsContext;
  #closing: Promise<void> | undefined;

  private constructor(parts: RouterParts) {
    this.clusterId = parts.clusterId;
    this.#config = parts.config;
    this.#topology = parts.topology;
    this.#coordinator = parts.coordinator;
    this.#recovery = parts.recovery;
    this.#broadcaster = parts.broadcaster;
    this.#observer = parts.observer;
    this.#queries = parts.queries;
    const topology = parts.topology;
    this.#statements = new SingleShardStatements({
      config: parts.config,
      topology,
      observer: parts.observer,
      isClosed: () => this.#closing !== undefined,
      refreshMap: () => this.refreshMap(),
    });
    this.#locks = new Locks(lockContext(parts.config, topology, (keys, work) => this.transaction(keys, work)));
    topology.refreshRetriesVia(() => this.refreshMap());
    this.#watcher = new MapWatcher({
      channel: mapChannel(parts.clusterId),
      intervalMillis: parts.config.mapRefresh.intervalMillis,
      listen: parts.config.mapRefresh.listen,
      currentVersion: () => topology.map.version,
      pools: () => topology.members().map((shardId) => topology.pool(shardId)),
      catalogSchema: parts.config.catalogSchema,
      refresh: () => this.refreshMap().then(() => undefined),
    });
    this.#outboxContext = outboxContext(parts.clusterId, parts.config, topology, parts.coordinator);
    this.#notifier = new PublishNotifier(this.#outboxContext.channel, (shardId) => topology.pool(shardId));
    this.#transactions = { ...parts, notifier: this.#notifier };
    this.outbox = new OutboxAdmin(this.#outboxContext);
    // Idempotency works through this router's own execute and transaction (docs/idempotency.md).
    this.#idempotency = new IdempotencyKeys<Transaction>({
      catalogSchema: parts.config.catalogSchema,
      ttlMillis: parts.config.idempotency.ttlMillis,
      read: (key, sql, params) => this.execute(key, sql, params),
      transaction: (keys, work, options) => this.transaction(keys, work, options),
    });
    this.#collector = new RecordCollector(collectorContext(parts.config, topology), parts.config.idempotency);
    // Sagas work through this router's idempotent execute and transaction (docs/sagas.md).
    this.#sagas = new SagaEngine(sagaContext(parts.config, topology, this), parts.config.sagas);
  }

  /**
   * Defines a saga (docs/sagas.md): steps run in order, each logged on the shard of the saga
   * key before and after it runs; a step failing after its retries has the completed steps
   * compensated in reverse. A router resumes orphaned sagas of the names it defines.
   *
   * @example
   * const placeOrder = router.defineSaga<{ orderId: string }, { charged: number }>('place-order', [
   *   { name: 'reserve', run: (step, input) => step.execute(input.orderId, 'UPDATE ...', [input.orderId]).then(() => ({})),
   *     compensate: (step, input) => step.execute(input.orderId, 'UPDATE ...', [input.orderId]).then(() => undefined) },
   *   { name: 'charge', run: async () => ({ charged: 30 }) },
   * ]);
   * const { result } = await placeOrder.run(orderId, { orderId });
   * @throws ShardRouterError INVALID_ARGUMENT (bad name or steps, duplicate step or saga name)
   */
  defineSaga<Input = unknown, Output = unknown>(
    name: string,
    steps: readonly SagaStepDefinition<Input>[],
    options?: SagaOptions,
  ): Saga<Input, Output> {
    if (this.#closing) throw closedError();
    return this.#sagas.define<Input, Output>(name, steps, options);
  }

  /**
   * Sagas for operators: `list`, `get`, `retry` (run a parked saga on here, from where it
   * stopped), `requeue` (hand a parked saga back to the routers that define it) and `resolve`
   * (declare a parked saga handled); `counts` (running, compensating and parked per shard).
   */
  get sagas(): Pick<SagaEngine, 'list' | 'get' | 'retry' | 'requeue' | 'resolve' | 'counts'> {
    if (this.#closing) throw closedError();
    return this.#sagas;
  }

  /**
   * Takes over and runs the active sagas whose lease expired (their runner died), of the names
   * defined on this router; resolves when they stopped. Also runs on `sagas.resumeIntervalMillis`.
   */
  async resumeSagas(): Promise<SagaResumeReport> {
    if (this.#closing) throw closedError();
    return this.#sagas.resume();
  }

  /**
   * Validates the config, connects to every shard, checks that each connection is the shard it
   * claims to be, and loads the bucket map (creating the cluster on first use).
   *
   * @throws ShardRouterError INVALID_CONFIG, SHARD_UNAVAILABLE, SHARD_IDENTITY_MISMATCH (and
   * POOL_TIMEOUT, CONNECTION_LOST or QUERY_FAILED if a shard misbehaves while the catalog is read)
   */
  static async connect(config: ShardRouterConfig): Promise<ShardRouter> {
    return new ShardRouter(await composeRouter(config));
  }

  /** Shard ids in config order. */
  get shardIds(): string[] {
    return this.#topology.members();
  }

  /** The bucket map this router routes by. */
  get bucketMap(): BucketMap {
    return this.#topology.map;
  }

  get bucketCount(): number {
    return this.#topology.bucketCount;
  }

  /**
   * The bucket a key falls in (fixed for the key's lifetime).
   * @throws ShardRouterError INVALID_KEY, ROUTER_CLOSED
   */
  bucketFor(key: ShardKey): number {
    if (this.#closing) throw closedError();
    return this.#topology.bucketOf(key);
  }

  /**
   * The id of the shard that owns a key.
   *
   * @example
   * router.shardFor('user-42'); // e.g. 's1'
   * @throws ShardRouterError INVALID_KEY, ROUTER_CLOSED
   */
  shardFor(key: ShardKey): string {
    if (this.#closing) throw closedError();
    return this.#topology.shardFor(key);
  }

  /**
   * Runs one parameterized statement on the shard that owns `key`. Values always travel as
   * parameters ($1, $2, ...), never spliced into the SQL.
   *
   * @example
   * const { rows, shardId } = await router.execute<{ id: number }>(userId, 'SELECT id FROM orders WHERE user_id = $1', [userId]);
   * With `{ idempotencyKey }` the statement runs at most once per key (docs/idempotency.md): it
   * runs in a one-shard transaction that also stores its result, and a later call with the same
   * key, SQL and params resolves to that result with `replayed: true`, sending nothing.
   *
   * @example
   * const { rows, replayed } = await router.execute(userId, 'INSERT INTO orders (user_id, total) VALUES ($1, $2) RETURNING id', [userId, 30], { idempotencyKey: requestId });
   *
   * With `options.signal` or a timeout (`options.timeoutMillis`, the config's
   * `statementTimeoutMillis`) the statement is cancelled on the server when it aborts.
   *
   * @example
   * const { rows } = await router.execute(userId, 'SELECT * FROM orders WHERE user_id = $1', [userId], { timeoutMillis: 2_000, signal });
   * @throws ShardRouterError INVALID_KEY, QUERY_FAILED (PostgreSQL's error as `cause`, SQLSTATE as
   * `sqlState`), POOL_TIMEOUT, SHARD_UNAVAILABLE, CONNECTION_LOST, ROUTER_CLOSED,
   * STATEMENT_TIMEOUT, STATEMENT_CANCELLED; with an idempotency key also INVALID_ARGUMENT,
   * IDEMPOTENCY_KEY_REUSED and the errors of {@link transaction}
   */
  execute<R extends QueryResultRow = QueryResultRow>(
    key: ShardKey,
    sql: string,
    params: readonly unknown[] | undefined,
    options: IdempotentExecuteOptions & { readonly idempotencyKey: string },
  ): Promise<IdempotentExecuteResult<R>>;
  execute<R extends QueryResultRow = QueryResultRow>(
    key: ShardKey,
    sql: string,
    params?: readonly unknown[],
    options?: ExecuteOptions,
  ): Promise<ExecuteResult<R>>;
  execute<R extends QueryResultRow = QueryResultRow>(
    key: ShardKey,
    sql: string,
    params?: readonly unknown[],
    options?: ExecuteOptions | IdempotentExecuteOptions,
  ): Promise<ExecuteResult<R>> {
    if (options !== undefined && options !== null && typeof options === 'object' && 'idempotencyKey' in options) {
      try {
        if (this.#closing) throw closedError();
        return this.#idempotency.execute<R>(key, sql, params, options);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    if (this.#closing) return Promise.reject(closedError());
    return this.#statements.execute<R>(key, sql, params, options as ExecuteOptions | undefined);
  }

  /**
   * Runs one statement where the shard key in it says, read from the statement by PostgreSQL's
   * own parser and the table registry (docs/query.md has the rules): a WHERE that pins the key
   * of every sharded table (`key = $1`, `IN (...)`, `= ANY($1)`) goes to the owning shard(s);
   * a multi-row INSERT is split by key and written in one two-phase commit, RETURNING rows in
   * input order; a statement without a pinned key runs on every shard as broadcast does
   * (`{ requireKey: true }` or `query.requireKey` in the config refuses it with KEY_REQUIRED).
   * What it cannot route exactly is UNSUPPORTED, naming the construct; nothing is sent then.
   * The analysis is cached by SQL text; the shards are chosen per call from the params.
   *
   * @example
   * const { rows } = await router.query<{ id: string }>('SELECT id FROM orders WHERE user_id = $1', [userId]);
   * @throws ShardRouterError UNSUPPORTED, KEY_REQUIRED, INVALID_SQL, INVALID_ARGUMENT (a missing,
   * NULL or malformed key), and the errors of {@link execute}, {@link broadcast} and {@link transaction}
   */
  query<R extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: readonly unknown[],
    options: QueryOptions = {},
  ): Promise<QueryResult<R>> {
    if (this.#closing) return Promise.reject(closedError());
    const invalid = invalidBroadcastArguments(params, options);
    if (invalid) return Promise.reject(invalid);
    return this.#queries.query<R>(sql, params ?? NO_PARAMS, options);
  }

  /**
   * Where {@link query} would send a statement with these params, as plain data: one shard and
   * why, the shards of a merged read, a two-phase write, or the per-shard parts of an INSERT.
   *
   * @example
   * const route = await router.explainQuery('SELECT * FROM orders WHERE user_id = ANY($1)', [[1, 2, 3]]);
   * console.log(route.kind, route.reason);
   * @throws ShardRouterError UNSUPPORTED, INVALID_SQL, INVALID_ARGUMENT
   */
  async explainQuery(sql: string, params?: readonly unknown[]): Promise<QueryExplanation> {
    if (this.#closing) throw closedError();
    const invalid = invalidBroadcastArguments(params, {});
    if (invalid) throw invalid;
    return this.#queries.explain(sql, params ?? NO_PARAMS);
  }

  /**
   * Runs one parameterized statement on a named shard, whatever keys it owns: for DDL,
   * maintenance and per-shard reads.
   *
   * @example
   * for (const id of router.shardIds) await router.executeOn(id, 'CREATE TABLE IF NOT EXISTS users (id bigint PRIMARY KEY)');
   * @throws ShardRouterError INVALID_ARGUMENT (unknown shard) and the errors of {@link execute}
   */
  async executeOn<R extends QueryResultRow = QueryResultRow>(
    shardId: string,
    sql: string,
    params?: readonly unknown[],
  ): Promise<ExecuteResult<R>> {
    if (this.#closing) throw closedError();
    return this.#statements.executeOn<R>(shardId, sql, params);
  }

  /**
   * A `pg.Pool` for the shard that owns `key`, for ORMs and query builders (Kysely's
   * PostgresDialect, drizzle-orm, Prisma's PrismaPg). Each `query()` and `connect()` looks the
   * owner up by the map of that moment and its connection carries that map version, so writes
   * are fenced like {@link execute}. A single `query()` refused by a fence is sent again to the
   * new owner; inside a transaction (a connection from `connect()`) a refused write fails with
   * STALE_BUCKET_MAP, raised once the router has refreshed its map: roll back and run the
   * transaction again (its next `connect()` goes to the new owner). `end()` is a no-op: the connections
   * are the router's. PostgreSQL's errors pass through as pg raises them.
   *
   * @example
   * const db = drizzle(router.poolFor(userId));
   * const kysely = new Kysely<DB>({ dialect: new PostgresDialect({ pool: router.poolFor(userId) }) });
   * @throws ShardRouterError INVALID_KEY, ROUTER_CLOSED
   */
  poolFor(key: ShardKey): ShardPgPool {
    if (this.#closing) throw closedError();
    return this.#statements.poolFor(key);
  }

  /**
   * A `pg.Pool` for one shard by id, like {@link executeOn}: for per-shard reads, DDL and
   * maintenance. Its connections carry the router's newest map version; with `mapVersion`
   * (the `bucketMap.version` your routing decision came from) they carry that one instead, so
   * a shard that has since lost buckets refuses writes with STALE_BUCKET_MAP (what
   * `pg-shard-router/kysely` does).
   *
   * @example
   * const pool = router.poolOn('s0');
   * await pool.query('VACUUM ANALYZE orders');
   * @throws ShardRouterError INVALID_ARGUMENT (unknown shard, bad mapVersion), ROUTER_CLOSED
   */
  poolOn(shardId: string, options: { mapVersion?: number } = {}): ShardPgPool {
    if (this.#closing) throw closedError();
    return this.#statements.poolOn(shardId, options);
  }

  /**
   * Runs `work` as one atomic transaction over the shards of `keys`. When everything it ran
   * touched one shard, that is a plain transaction on it; when it touched several, a two-phase
   * commit whose decision is durable in PostgreSQL: either every shard commits or none does,
   * whatever crashes in between. Throwing from `work` rolls everything back and rethrows.
   *
   * Every error except IN_DOUBT means nothing was committed. IN_DOUBT (carrying `gid`) means
   * the router lost the decision shard at the commit point; recovery settles it, all or nothing.
   *
   * @example
   * await router.transaction([from, to], async (tx) => {
   *   await tx.execute(from, 'UPDATE accounts SET balance = balance - $2 WHERE id = $1', [from, 100]);
   *   await tx.execute(to, 'UPDATE accounts SET balance = balance + $2 WHERE id = $1', [to, 100]);
   * }, { isolation: 'repeatable read', timeoutMillis: 10_000 });
   * With `{ idempotencyKey }` the transaction takes effect at most once per key
   * (docs/idempotency.md): what `work` returns (JSON) is stored in the same commit, on the
   * first key's shard, and a later call with the same key and keys resolves to it without
   * running `work`, calling `onReplay` first. Retrying with the key after any error is safe.
   *
   * @example
   * const orderId = await router.transaction([buyer, seller], async (tx) => placeOrder(tx), {
   *   idempotencyKey: request.headers['idempotency-key'],
   *   onReplay: () => log.info('answered from the idempotency record'),
   * });
   * @throws ShardRouterError INVALID_KEY, INVALID_ARGUMENT, PREPARED_TRANSACTIONS_DISABLED,
   * TRANSACTION_ABORTED, TRANSACTION_TIMEOUT, LOCK_TIMEOUT, IN_DOUBT, POOL_TIMEOUT,
   * SHARD_UNAVAILABLE, ROUTER_CLOSED, IDEMPOTENCY_KEY_REUSED, and whatever `work` throws
   */
  async transaction<T>(
    keys: readonly ShardKey[],
    work: (tx: Transaction) => Promise<T>,
    options?: TransactionOptions & IdempotencyOptions,
  ): Promise<T> {
    if (this.#closing) throw closedError();
    if (!Array.isArray(keys) || keys.length === 0)
      throw new ShardRouterError('INVALID_ARGUMENT', 'keys must be a non-empty array of shard keys');
    if (typeof work !== 'function') throw new ShardRouterError('INVALID_ARGUMENT', 'work must be a function (tx) => Promise');
    if (options !== null && typeof options === 'object' && ('idempotencyKey' in options || 'onReplay' in options)) {
      for (const key of keys) this.#topology.bucketOf(key); // INVALID_KEY before anything is read
      return this.#idempotency.transaction(keys, work, options);
    }
    return runRoutedTransaction(this.#transactions, keys, work, options);
  }

  /**
   * Starts a consumer of a group in this process: it receives the group's events of `topics`
   * at least once, the events of one key one at a time in publish order, different keys in
   * parallel up to `concurrency` (docs/outbox.md). Several processes may run the same group.
   * A handler that throws is retried with exponential backoff and, after `maxAttempts`, parked
   * (see {@link outbox}). Stop it with `consumer.stop()`; `close()` stops every consumer.
   *
   * @example
   * const consumer = router.consume({
   *   group: 'projector',
   *   topics: ['order.placed'],
   *   handler: async (event) => {
   *     await router.transaction([event.key], async (tx) => {
   *       const first = await tx.execute(event.key, 'INSERT INTO processed (event_id) VALUES ($1) ON CONFLICT DO NOTHING', [event.id]);
   *       if (first.rowCount === 1) await tx.execute(event.key, 'UPDATE totals SET n = n + 1 WHERE key = $1', [event.key]);
   *     });
   *   },
   * });
   * await consumer.stop();
   * @throws ShardRouterError INVALID_ARGUMENT (bad group, topics, handler or options), ROUTER_CLOSED
   */
  consume(options: ConsumeOptions): OutboxConsumer {
    if (this.#closing) throw closedError();
    const resolved = resolveConsumeOptions(options);
    const consumer: OutboxConsumer = new OutboxConsumer(this.#outboxContext, resolved, () => this.#consumers.delete(consumer));
    this.#consumers.add(consumer);
    return consumer;
  }

  /**
   * Runs `fn` while this process holds the lock `lockKey`: a PostgreSQL advisory lock on the
   * shard that owns the key's bucket, on a connection of its own, released when `fn` settles
   * (docs/locks.md). `signal` aborts as soon as the lock may be lost (its connection broke or
   * went silent): stop the critical work then. `lock.token` grows with every acquisition of the
   * key; `lock.fence(tx)` / `lock.execute(sql)` make writes that a later holder's token refuses.
   * At most one holder per key, also while the key's bucket moves between shards.
   *
   * @example
   * await router.withLock(`invoice-run:${tenantId}`, async (signal, lock) => {
   *   await lock.execute('UPDATE tenants SET last_run = now() WHERE id = $1', [tenantId]);
   * }, { waitMillis: 5_000 });
   * @throws ShardRouterError INVALID_KEY, INVALID_ARGUMENT, LOCK_NOT_ACQUIRED (retryable),
   * LOCK_LOST (`fn` resolved after the lock was lost), SHARD_UNAVAILABLE, ROUTER_CLOSED, and
   * whatever `fn` throws
   */
  withLock<T>(lockKey: ShardKey, fn: (signal: AbortSignal, lock: HeldLockInfo) => Promise<T> | T, options?: LockOptions): Promise<T> {
    if (this.#closing) return Promise.reject(closedError());
    return this.#locks.withLock<T>(lockKey, fn, options);
  }

  /**
   * Declares a sharded table and the column holding its shard key, on every shard in one
   * two-phase commit. The table must exist on every shard. Registered tables are what the
   * rebalancer moves and verify checks; their writes are fenced against stale routers.
   * Registering the same table again is a no-op (apart from creating a requested bucket index).
   * `bucketIndex: true` also builds the table's bucket index on every shard (CREATE INDEX
   * CONCURRENTLY, after the registration commits), so a move reads only its buckets' rows.
   *
   * @example
   * await router.registerShardedTable('orders', 'user_id', { bucketIndex: true });
   * @throws ShardRouterError INVALID_ARGUMENT (no such table or column, registered differently)
   */
  async registerShardedTable(table: string, shardKeyColumn: string, options: ShardedTableOptions = {}): Promise<RegisteredTable> {
    if (typeof shardKeyColumn !== 'string' || shardKeyColumn === '')
      throw new ShardRouterError('INVALID_ARGUMENT', 'shardKeyColumn must be a column name');
    checkShardedTableOptions(options);
    const registered = await this.#register(table, 'sharded', shardKeyColumn);
    if (options.bucketIndex) await buildBucketIndexes({ config: this.#config, topology: this.#topology }, registered);
    return registered;
  }

  /**
   * Declares a reference table: a small table (countries, plans, ...) with a full copy on every
   * shard, so single-shard queries can join it. Write it with {@link broadcast} (every shard,
   * atomically through two-phase commit); a shard added later gets a copy.
   *
   * @example
   * await router.registerReferenceTable('countries');
   * await router.broadcast('INSERT INTO countries (code, name) VALUES ($1, $2)', ['NO', 'Norway']);
   */
  async registerReferenceTable(table: string): Promise<RegisteredTable> {
    return this.#register(table, 'reference', undefined);
  }

  /** The registered tables, as of this router's last map refresh. */
  get tables(): readonly RegisteredTable[] {
    return this.#topology.tables;
  }

  /**
   * Reads the newest bucket map, shard registry and table registry from the shards and routes by
   * them from now on. Routers do this by themselves (on a shard's NOTIFY, every
   * `mapRefresh.intervalMillis`, and when a shard's fence refuses a write); call it to be sure.
   */
  async refreshMap(): Promise<BucketMap> {
    if (this.#closing) throw closedError();
    return this.#topology.refresh();
  }

  /**
   * The rebalancer of this cluster: add and remove shards, move buckets, verify placement
   * (docs/rebalance.md). It works through this router's connections.
   *
   * @example
   * const rebalancer = router.rebalancer();
   * await rebalancer.addShard({ id: 's4', connectionString: 'postgres://app:secret@db4:5432/app' });
   * await rebalancer.rebalance();
   */
  rebalancer(options: RebalancerOptions = {}): Rebalancer {
    if (this.#closing) throw closedError();
    const recoverNow = () => this.recover({ graceMillis: 0 });
    const access = clusterAccess(
      this.clusterId,
      this.#config,
      this.#topology,
      this.#coordinator,
      recoverNow,
      CATALOG_EXTENSIONS,
      this.#observer,
    );
    return new Rebalancer(access, options);
  }

  /**
   * Runs one statement on every shard and returns one result, as if all the data lived on one
   * PostgreSQL server. A SELECT is parsed by PostgreSQL's own parser, rewritten so that each
   * shard returns partial results (partial aggregates, helper columns, LIMIT limit+offset), and
   * merged exactly: count/sum/avg/min/max/bool_and/bool_or, GROUP BY, HAVING, ORDER BY (k-way
   * merge), LIMIT/OFFSET, DISTINCT. What cannot merge exactly (count(DISTINCT), window
   * functions, joins, ...) fails with UNSUPPORTED naming the construct. Any other statement
   * (DDL, UPDATE, DELETE) runs on every shard in one transaction: two-phase commit, so it lands
   * on all shards or none; `rowCount` is the sum. Plans are cached by SQL text.
   *
   * Reads on different shards are separate snapshots: a broadcast is not a cross-shard snapshot.
   *
   * @example
   * const { rows } = await router.broadcast<{ status: string; orders: string; avg_total: string }>(
   *   'SELECT status, count(*) AS orders, avg(total) AS avg_total FROM orders GROUP BY status ORDER BY orders DESC LIMIT 5',
   * );
   * @throws ShardRouterError INVALID_SQL, UNSUPPORTED, BROADCAST_TIMEOUT, INVALID_ARGUMENT, and
   * (without `partial`) the first failing shard's error (QUERY_FAILED, SHARD_UNAVAILABLE, ...,
   * with its `shardId`); for writes also the errors of {@link transaction}
   */
  async broadcast<R extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: readonly unknown[],
    options: BroadcastOptions = {},
  ): Promise<BroadcastResult<R>> {
    if (this.#closing) throw closedError();
    const invalid = invalidBroadcastArguments(params, options);
    if (invalid) throw invalid;
    const probe = this.#observer.operation('broadcast', sql);
    return probe.run(() => this.#broadcaster.run<R>(sql, params ?? NO_PARAMS, options, probe));
  }

  /**
   * Streams a SELECT's merged rows: shard cursors are read `batchSize` rows at a time (one
   * batch ahead) and an ORDER BY is a k-way merge of their batches, so memory stays near
   * 2 x shards x batchSize rows however many rows there are. Aggregate and DISTINCT queries are
   * merged whole first (their results are small). Breaking out of the loop closes the cursors.
   * `signal` and `timeoutMillis` cancel the shard statements on the servers, as for broadcast.
   *
   * @example
   * for await (const order of router.broadcastStream('SELECT id, total FROM orders ORDER BY total DESC', [], { batchSize: 500 })) {
   *   process(order);
   * }
   * @throws ShardRouterError like {@link broadcast}; also UNSUPPORTED for an ORDER BY only the server can order (add COLLATE "C")
   */
  broadcastStream<R extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: readonly unknown[],
    options: BroadcastStreamOptions = {},
  ): AsyncGenerator<R, void, undefined> {
    // Not a generator itself: each generator layer costs a promise per row.
    if (this.#closing) return failedStream(closedError());
    const invalid = invalidBroadcastArguments(params, options);
    if (invalid) return failedStream(invalid);
    // One probe for the whole stream: a span and a statement of route broadcast, ended with it.
    return this.#broadcaster.stream<R>(sql, params ?? NO_PARAMS, options, () => this.#observer.operation('broadcast', sql));
  }

  /**
   * The plan of a broadcast, as text: the query every shard runs and the merge steps. Plans are
   * cached by SQL text, so this is also what broadcast(sql) will do.
   *
   * @example
   * console.log(router.explain('SELECT status, avg(total) FROM orders GROUP BY status'));
   * @throws ShardRouterError INVALID_SQL, UNSUPPORTED
   */
  explain(sql: string): string {
    if (this.#closing) throw closedError();
    return this.#broadcaster.explain(sql);
  }

  /**
   * Settles this cluster's prepared transactions left by crashed or disconnected coordinators,
   * on every shard: commit where the durable decision is commit, roll back otherwise. Safe to
   * run from several routers at once and while transactions run. Also runs at connect and every
   * `recovery.intervalMillis`.
   *
   * @example
   * const report = await router.recover();
   * console.log(report.committed.length, report.rolledBack.length, report.inDoubt);
   * @throws ShardRouterError ROUTER_CLOSED (per-shard failures are in the report)
   */
  async recover(options: { graceMillis?: number } = {}): Promise<RecoveryReport> {
    if (this.#closing) throw closedError();
    return this.#recovery.run(options.graceMillis);
  }

  /**
   * Per shard: reachability, server version, max_prepared_transactions, pool counters and the
   * prepared transactions with their age; plus the last recovery report.
   *
   * @example
   * const { shards } = await router.status();
   * for (const shard of shards) console.log(shard.shardId, shard.preparedTransactions.length);
   */
  async status(): Promise<RouterStatus> {
    if (this.#closing) throw closedError();
    return {
      clusterId: this.clusterId,
      bucketMapVersion: this.#topology.map.version,
      shards: await shardStatuses(this.#topology, this.clusterId),
      lastRecovery: this.#recovery.last,
      lastRecoveryError: this.#recovery.lastError,
      locks: this.#locks.status(),
    };
  }

  /**
   * Every shard of the cluster with its state, its bucket count and its URL without password:
   * the configured ones, the ones added later (owning buckets or not yet) and the removed ones.
   *
   * @example
   * for (const shard of router.shards()) console.log(shard.shardId, shard.state, shard.buckets);
   */
  shards(): ShardInfo[] {
    if (this.#closing) throw closedError();
    return this.#topology.shards();
  }

  /**
   * A plain snapshot of what the router counted since connect: statements by route and outcome
   * with latency histograms, errors by code, pool counters and acquire waits per shard, 2PC
   * recovery, stale-map retries, the map version, bucket moves. For feeding any metrics
   * system; `registerMetrics` from `pg-shard-router/prometheus` exposes it to prom-client.
   * Works after close() too (the counters stay readable).
   *
   * @example
   * const { statements, pools } = router.metrics();
   * const failed = statements.filter((s) => s.outcome === 'error').reduce((n, s) => n + s.count, 0);
   */
  metrics(): RouterMetrics {
    return this.#observer.metrics.snapshot({ mapVersion: this.#topology.map.version, pools: this.poolStats() });
  }

  /**
   * A cluster-wide unique id (a positive bigint, roughly time-ordered), the same kind as the
   * shards' `<catalogSchema>.next_id()` column DEFAULT gives. The router reserves 1,000 of a
   * shard's ids in one round trip and hands them out locally (a block is dropped after 1 s), so
   * most calls make no round trip. With a key the id comes from the key's shard; without one,
   * from any shard. Layout and limits: docs/ids.md.
   *
   * @example
   * const id = await router.nextId();
   * await router.execute(userId, 'INSERT INTO orders (id, user_id) VALUES ($1, $2)', [id, userId]);
   * @throws ShardRouterError ID_CLOCK_BEHIND (the shard's clock was set back), INVALID_KEY, and the errors of {@link execute}
   */
  nextId(key?: ShardKey): Promise<bigint> {
    if (this.#closing) return Promise.reject(closedError());
    const topology = this.#topology;
    this.#ids ??= new IdSource({
      catalogSchema: this.#config.catalogSchema,
      shardFor: (k) => topology.shardFor(k as ShardKey),
      members: () => topology.members(),
      shard: (shardId) => topology.pool(shardId),
    });
    return this.#ids.next(key);
  }

  /** Pool counters per shard id. */
  poolStats(): Record<string, PoolStats> {
    return Object.fromEntries(this.#topology.poolIds().map((id) => [id, this.#topology.pool(id).stats()]));
  }

  /** Lets borrowed connections finish, then closes every pool. Idempotent; later calls get ROUTER_CLOSED. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all([...this.#consumers].map((consumer) => consumer.stop()));
      await this.#watcher.close();
      await this.#locks.close();
      await this.#collector.close();
      await this.#sagas.close();
      await this.#recovery.close();
      await this.#topology.close();
    })();
    return this.#closing;
  }

  async #register(table: string, kind: TableKind, shardKey: string | undefined): Promise<RegisteredTable> {
    if (this.#closing) throw closedError();
    const registered = await registerTable(
      { config: this.#config, topology: this.#topology, coordinator: this.#coordinator },
      table,
      kind,
      shardKey,
    );
    await this.refreshMap();
    return registered;
  }
}

const NO_PARAMS: readonly unknown[] = Object.freeze([]);

/** The argument errors broadcast and broadcastStream share (the SQL is checked by the planner). */
function invalidBroadcastArguments(params: unknown, options: unknown): ShardRouterError | undefined {
  if (params !== undefined && !Array.isArray(params)) return new ShardRouterError('INVALID_ARGUMENT', 'params must be an array');
  if (options === null || typeof options !== 'object') return new ShardRouterError('INVALID_ARGUMENT', 'options must be an object');
  const { signal } = options as { signal?: unknown };
  if (signal !== undefined && !(signal instanceof AbortSignal))
    return new ShardRouterError('INVALID_ARGUMENT', 'signal must be an AbortSignal');
  return undefined;
}
