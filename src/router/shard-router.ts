import type { QueryResultRow } from '../pool/session.js';
import { Broadcaster, failedStream } from '../broadcast/broadcaster.js';
import { probeBroadcastCapabilities, serverHelpers } from '../broadcast/server-probe.js';
import type { BroadcastCapabilities } from '../broadcast/server-probe.js';
import { loadParser } from '../broadcast/sql-parser.js';
import type { BroadcastOptions, BroadcastResult, BroadcastStreamOptions } from '../broadcast/types.js';
import { openCatalog, probeCapabilities, readLatestMap } from '../catalog/catalog.js';
import type { ShardCapabilities } from '../catalog/catalog.js';
import type { ShardSession } from '../pool/session.js';
import { ShardPool } from '../pool/shard-pool.js';
import type { PoolStats, ShardQueryResult } from '../pool/shard-pool.js';
import { connectionStringFor, resolveConfig, resolveShard } from '../config.js';
import type { ResolvedConfig, ShardRouterConfig } from '../config.js';
import { ShardRouterError, closedError, isStaleMap } from '../errors.js';
import { Rebalancer } from '../rebalance/rebalancer.js';
import type { ClusterAccess } from '../rebalance/cluster-access.js';
import type { RebalancerOptions } from '../rebalance/rebalancer.js';
import { readRegistry, readShardRegistry, registryNameParts } from '../catalog/registries.js';
import type { RegisteredShard } from '../catalog/registries.js';
import { registerOnShard } from '../rebalance/register-table.js';
import { rebalanceExtension } from '../rebalance/schema.js';
import { decisionLogExtension } from '../twopc/decision-log.js';
import { movesGuardCondition } from '../rebalance/schema.js';
import type { RegisteredTable, TableKind } from '../catalog/registries.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { CoordinatorContext, Transaction } from '../twopc/coordinator.js';
import { gidPrefix } from '../twopc/gid.js';
import { recover } from '../twopc/recovery.js';
import type { RecoveryContext, RecoveryReport } from '../twopc/recovery.js';
import { listAllPrepared } from '../twopc/status.js';
import type { PreparedTransactionInfo } from '../twopc/status.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';
import type { BucketMap } from '../placement/bucket-map.js';
import { signedHashKey } from '../placement/hash.js';
import type { ShardKey } from '../placement/hash.js';
import { mapChannel } from '../catalog/map-channel.js';
import { MapWatcher } from './map-watcher.js';

/** How often a write refused by a shard's map fence is retried after refreshing the map. */
const STALE_MAP_ATTEMPTS = 6;
const STALE_MAP_BACKOFF_MS = 25;

/** pg's result shape plus the shard that produced it. */
export type ExecuteResult<R extends QueryResultRow = QueryResultRow> = ShardQueryResult<R>;

/** One shard in {@link ShardRouter.status}. */
export interface ShardStatus {
  readonly shardId: string;
  /** 'removed': taken out by removeShard (still listed until its server is gone from the registry). */
  readonly state: ShardState;
  /** Buckets it owns in the router's map (0 for a shard just added or drained). */
  readonly buckets: number;
  /** False when the shard could not be asked; `error` says why. */
  readonly reachable: boolean;
  readonly error?: string;
  readonly serverVersion: number;
  readonly maxPreparedTransactions: number;
  readonly pool: PoolStats;
  /** Prepared transactions in the shard's database, oldest first (ours and anyone else's). */
  readonly preparedTransactions: readonly PreparedTransactionInfo[];
}

/** A shard's membership: 'active' shards take writes and map switches; 'removed' ones are out of the cluster. */
export type ShardState = 'active' | 'removed';

/** One shard of the cluster, as {@link ShardRouter.shards} lists it. */
export interface ShardInfo {
  readonly shardId: string;
  readonly state: ShardState;
  /** Buckets it owns in the router's map. */
  readonly buckets: number;
  /** Its connection string without the password. */
  readonly url: string;
}

/** What {@link ShardRouter.status} returns. */
export interface RouterStatus {
  readonly clusterId: string;
  readonly bucketMapVersion: number;
  readonly shards: readonly ShardStatus[];
  /** The newest finished background or explicit recovery pass of this router, if any. */
  readonly lastRecovery: RecoveryReport | undefined;
  /** Why the newest background recovery pass failed, if it did. */
  readonly lastRecoveryError: string | undefined;
}

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
  /** Configured shards first, then shards learned from the shard registry. */
  readonly #pools: Map<string, ShardPool>;
  #registeredShards: readonly RegisteredShard[];
  #tables: readonly RegisteredTable[];
  /** The registered tables by schema and name, unquoted as the parser gives them, joined by NUL (which no identifier holds). */
  #tableIndex: ReadonlyMap<string, RegisteredTable> = new Map();
  #refreshing: Promise<void> | undefined;
  #nextRefresh: Promise<void> | undefined;
  readonly #watcher: MapWatcher;
  #map: BucketMap;
  /** The hot path: bucket -> pool of its owner (and its id), one array read. */
  #poolByBucket: readonly ShardPool[];
  #shardIdByBucket: readonly string[];
  #bucketCount: number;
  /** bucketCount - 1 when it is a power of two (the default 1024), else -1: `h & mask` beats `%`. */
  #bucketMask: number;
  #closing: Promise<void> | undefined;
  readonly #config: ResolvedConfig;
  readonly #capabilities: Map<string, ShardCapabilities>;
  readonly #coordinator: CoordinatorContext;
  readonly #recoveryContext: RecoveryContext;
  #recoveryTimer: NodeJS.Timeout | undefined;
  #soonRecovery: NodeJS.Timeout | undefined;
  #backgroundRecovery: Promise<void> | undefined;
  #lastRecovery: RecoveryReport | undefined;
  #lastRecoveryError: string | undefined;
  readonly #broadcaster: Broadcaster;

  private constructor(
    config: ResolvedConfig,
    pools: Map<string, ShardPool>,
    clusterId: string,
    map: BucketMap,
    capabilities: Map<string, ShardCapabilities>,
    broadcastCapabilities: BroadcastCapabilities,
    registeredShards: readonly RegisteredShard[],
    tables: readonly RegisteredTable[],
  ) {
    this.#config = config;
    this.#pools = pools;
    this.#capabilities = capabilities;
    this.clusterId = clusterId;
    this.#map = map;
    this.#registeredShards = registeredShards;
    this.#tables = tables;
    this.#tableIndex = indexTables(tables);
    this.#bucketCount = map.bucketCount;
    this.#bucketMask = (map.bucketCount & (map.bucketCount - 1)) === 0 ? map.bucketCount - 1 : -1;
    this.#poolByBucket = [];
    this.#shardIdByBucket = [];
    this.#install(map);
    const acquire = (shardId: string) => this.#pool(shardId).acquire();
    const router = this;
    this.#coordinator = {
      clusterId,
      catalogSchema: config.catalogSchema,
      shardFor: (key) => this.shardFor(key),
      acquire,
      serverVersion: (shardId) => capabilities.get(shardId)?.serverVersion ?? 0,
      onUnfinished: () => this.#recoverSoon(),
    };
    this.#recoveryContext = {
      clusterId,
      catalogSchema: config.catalogSchema,
      get shardIds() {
        return [...router.#pools.keys()];
      },
      acquire,
    };
    this.#broadcaster = new Broadcaster({
      routing: () => {
        const { map, members } = this.#routingSnapshot();
        return { mapVersion: map.version, shardIds: members, owners: map.owners };
      },
      retryingStaleMap: (attempt) => this.#retryingStaleMap(attempt),
      registeredTable: (schema, name) => this.#registeredTable(schema, name),
      movesGuard: (schema, name, versionParam) => {
        const table = this.#registeredTable(schema, name);
        return table?.kind === 'sharded' ? movesGuardCondition(config.catalogSchema, table.shardKey!, this.#bucketCount, versionParam) : undefined;
      },
      pool: (shardId) => this.#pool(shardId),
      capabilities: broadcastCapabilities,
      ...serverHelpers([...pools.values()]),
      defaultTimeoutMillis: config.broadcast.timeoutMillis,
      runWrite: (timeoutMillis, work) => {
        const options = resolveTransactionOptions({ timeoutMillis }, config.transactions);
        // Each attempt takes its participants from the map it routes by (and stamps its
        // connections with that version): after a refusal by a raised fence, the retry writes
        // to the shards the new map has, a shard added meanwhile included.
        return this.#retryingStaleMap(() => {
          const { context, members } = this.#routingSnapshot();
          // Connections in shard-id order, as every transaction takes them; the first decides.
          const ordered = [...members].sort();
          this.#requirePreparedTransactions(ordered);
          return runTransaction(context, ordered, ordered[0]!, options, (tx) => work(tx, ordered));
        });
      },
    });
    this.#watcher = new MapWatcher({
      channel: mapChannel(clusterId),
      intervalMillis: config.mapRefresh.intervalMillis,
      listen: config.mapRefresh.listen,
      currentVersion: () => this.#map.version,
      pools: () => this.#activeShardIds().map((shardId) => this.#pool(shardId)),
      catalogSchema: config.catalogSchema,
      refresh: () => this.refreshMap().then(() => undefined),
    });
    if (config.recovery.atConnect) this.#recoverSoon(0);
    if (config.recovery.intervalMillis > 0) {
      this.#recoveryTimer = setInterval(() => this.#recoverInBackground(), config.recovery.intervalMillis);
      this.#recoveryTimer.unref();
    }
  }

  /**
   * Validates the config, connects to every shard, checks that each connection is the shard it
   * claims to be, and loads the bucket map (creating the cluster on first use).
   *
   * @throws ShardRouterError INVALID_CONFIG, SHARD_UNAVAILABLE, SHARD_IDENTITY_MISMATCH (and
   * POOL_TIMEOUT, CONNECTION_LOST or QUERY_FAILED if a shard misbehaves while the catalog is read)
   */
  static async connect(config: ShardRouterConfig): Promise<ShardRouter> {
    const resolved = resolveConfig(config);
    const pools = new Map(resolved.shards.map((shard) => [shard.id, new ShardPool(shard, resolved.pool, resolved.applicationName)]));
    try {
      const [{ clusterId, map, capabilities, registeredShards, tables }, broadcastCapabilities] = await Promise.all([
        withOneSessionPerShard([...pools.values()], (sessions) => openCatalog(resolved, sessions, [decisionLogExtension, rebalanceExtension])),
        probeBroadcastCapabilities([...pools.values()]),
        loadParser(),
      ]);
      return new ShardRouter(resolved, pools, clusterId, map, new Map(capabilities), broadcastCapabilities, registeredShards, tables);
    } catch (error) {
      await Promise.all([...pools.values()].map((pool) => pool.close()));
      throw error;
    }
  }

  /** Shard ids in config order. */
  get shardIds(): string[] {
    return this.#activeShardIds();
  }

  /** The bucket map this router routes by. */
  get bucketMap(): BucketMap {
    return this.#map;
  }

  get bucketCount(): number {
    return this.#bucketCount;
  }

  /**
   * The bucket a key falls in (fixed for the key's lifetime).
   * @throws ShardRouterError INVALID_KEY, ROUTER_CLOSED
   */
  bucketFor(key: ShardKey): number {
    if (this.#closing) throw closedError();
    return this.#bucketOf(key);
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
    return this.#shardIdByBucket[this.#bucketOf(key)]!;
  }

  /**
   * Runs one parameterized statement on the shard that owns `key`. Values always travel as
   * parameters ($1, $2, ...), never spliced into the SQL.
   *
   * @example
   * const { rows, shardId } = await router.execute<{ id: number }>(userId, 'SELECT id FROM orders WHERE user_id = $1', [userId]);
   * @throws ShardRouterError INVALID_KEY, QUERY_FAILED (PostgreSQL's error as `cause`, SQLSTATE as
   * `sqlState`), POOL_TIMEOUT, SHARD_UNAVAILABLE, CONNECTION_LOST, ROUTER_CLOSED
   */
  execute<R extends QueryResultRow = QueryResultRow>(key: ShardKey, sql: string, params?: readonly unknown[]): Promise<ExecuteResult<R>> {
    // Not `async`: one promise layer fewer on the hot path; errors still arrive as rejections.
    let pool: ShardPool;
    let version: number;
    try {
      pool = this.#poolFor(key);
      // Read in the same tick as the pool: the connection carries the version it was routed by.
      version = this.#map.version;
    } catch (error) {
      return Promise.reject(error);
    }
    // A fenced write did nothing, so it is safe to send again once the map is fresh.
    return this.#run<R>(pool, sql, params, version).catch((error: unknown) =>
      isStaleMap(error) ? this.#retryingStaleMap(() => this.#run<R>(this.#poolFor(key), sql, params, this.#map.version), error) : Promise.reject(error),
    );
  }

  /**
   * Runs one parameterized statement on a named shard, whatever keys it owns: for DDL,
   * maintenance and per-shard reads.
   *
   * @example
   * for (const id of router.shardIds) await router.executeOn(id, 'CREATE TABLE IF NOT EXISTS users (id bigint PRIMARY KEY)');
   * @throws ShardRouterError INVALID_ARGUMENT (unknown shard) and the errors of {@link execute}
   */
  async executeOn<R extends QueryResultRow = QueryResultRow>(shardId: string, sql: string, params?: readonly unknown[]): Promise<ExecuteResult<R>> {
    if (this.#closing) throw closedError();
    const pool = this.#pools.get(shardId);
    if (!pool) throw new ShardRouterError('INVALID_ARGUMENT', `unknown shard id "${String(shardId)}"; known: ${this.shardIds.join(', ')}`);
    return this.#run<R>(pool, sql, params);
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
   * @throws ShardRouterError INVALID_KEY, INVALID_ARGUMENT, PREPARED_TRANSACTIONS_DISABLED,
   * TRANSACTION_ABORTED, TRANSACTION_TIMEOUT, LOCK_TIMEOUT, IN_DOUBT, POOL_TIMEOUT,
   * SHARD_UNAVAILABLE, ROUTER_CLOSED, and whatever `work` throws
   */
  async transaction<T>(keys: readonly ShardKey[], work: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T> {
    if (this.#closing) throw closedError();
    if (!Array.isArray(keys) || keys.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'keys must be a non-empty array of shard keys');
    if (typeof work !== 'function') throw new ShardRouterError('INVALID_ARGUMENT', 'work must be a function (tx) => Promise');
    const resolved = resolveTransactionOptions(options, this.#config.transactions);
    // Refused by a map fence (a bucket moved): nothing committed, so the whole transaction runs
    // again on the refreshed map, callback included, like a retried serialization failure.
    return this.#retryingStaleMap(() => {
      // Every statement of this attempt routes by the map it started with, and its connections
      // carry that version: a bucket that moves meanwhile is refused by the old owner's fence
      // (STALE_BUCKET_MAP), and the attempt is re-run on the new map. A declared key is
      // therefore never refused because the map changed under the callback.
      const { context } = this.#routingSnapshot();
      const declared = keys.map((key) => context.shardFor(key));
      // One fixed order (by shard id) for taking connections, in every router: no two
      // transactions can each hold a connection the other waits for.
      const shardIds = [...new Set(declared)].sort();
      if (shardIds.length > 1 && !resolved.readOnly) this.#requirePreparedTransactions(shardIds);
      return runTransaction(context, shardIds, declared[0]!, resolved, work);
    });
  }

  /**
   * Declares a sharded table and the column holding its shard key, on every shard in one
   * two-phase commit. The table must exist on every shard. Registered tables are what the
   * rebalancer moves and verify checks; their writes are fenced against stale routers.
   * Registering the same table again is a no-op.
   *
   * @example
   * await router.registerShardedTable('orders', 'user_id');
   * @throws ShardRouterError INVALID_ARGUMENT (no such table or column, registered differently)
   */
  async registerShardedTable(table: string, shardKeyColumn: string): Promise<RegisteredTable> {
    if (typeof shardKeyColumn !== 'string' || shardKeyColumn === '') throw new ShardRouterError('INVALID_ARGUMENT', 'shardKeyColumn must be a column name');
    return this.#register(table, 'sharded', shardKeyColumn);
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
    return this.#tables;
  }

  /**
   * Reads the newest bucket map, shard registry and table registry from the shards and routes by
   * them from now on. Routers do this by themselves (on a shard's NOTIFY, every
   * `mapRefresh.intervalMillis`, and when a shard's fence refuses a write); call it to be sure.
   */
  async refreshMap(): Promise<BucketMap> {
    if (this.#closing) throw closedError();
    // A read already under way may have started before the change the caller knows of, so
    // callers arriving meanwhile share one read that starts after it.
    if (this.#refreshing) {
      this.#nextRefresh ??= this.#refreshing
        .catch(() => undefined)
        .then(() => {
          this.#nextRefresh = undefined;
          return this.#startRefresh();
        });
      await this.#nextRefresh;
    } else {
      await this.#startRefresh();
    }
    return this.#map;
  }

  #startRefresh(): Promise<void> {
    const refreshing = this.#readNewestState().finally(() => {
      if (this.#refreshing === refreshing) this.#refreshing = undefined;
    });
    this.#refreshing = refreshing;
    return refreshing;
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
    return new Rebalancer(this.#clusterAccess(), options);
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
  async broadcast<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[], options: BroadcastOptions = {}): Promise<BroadcastResult<R>> {
    if (this.#closing) throw closedError();
    const invalid = invalidBroadcastArguments(params, options);
    if (invalid) throw invalid;
    return this.#broadcaster.run<R>(sql, params ?? NO_PARAMS, options);
  }

  /**
   * Streams a SELECT's merged rows: shard cursors are read `batchSize` rows at a time and an
   * ORDER BY is a k-way merge, so memory stays near shards x batchSize however many rows
   * there are. Aggregate and DISTINCT queries are merged whole first (their results are small).
   * Breaking out of the loop closes the cursors.
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
    return this.#broadcaster.stream<R>(sql, params ?? NO_PARAMS, options);
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
    const graceMillis = options.graceMillis ?? this.#config.recovery.graceMillis;
    if (!Number.isSafeInteger(graceMillis) || graceMillis < 0) throw new ShardRouterError('INVALID_ARGUMENT', 'graceMillis must be a non-negative integer');
    const report = await recover(this.#recoveryContext, { graceMillis });
    this.#lastRecovery = report;
    return report;
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
    const prefix = gidPrefix(this.clusterId);
    const shards = await Promise.all(
      [...this.#pools].map(async ([shardId, pool]): Promise<ShardStatus> => {
        const capabilities = this.#capabilities.get(shardId);
        const base = {
          shardId,
          state: this.#stateOf(shardId),
          buckets: this.#map.bucketsPerShard().get(shardId) ?? 0,
          serverVersion: capabilities?.serverVersion ?? 0,
          maxPreparedTransactions: capabilities?.maxPreparedTransactions ?? 0,
        };
        try {
          const session = await pool.acquire();
          let preparedTransactions;
          try {
            preparedTransactions = await listAllPrepared(session, prefix);
          } finally {
            session.release();
          }
          // Counted after the release, so status' own connection does not show as borrowed.
          return { ...base, reachable: true, pool: pool.stats(), preparedTransactions };
        } catch (error) {
          const message = error instanceof ShardRouterError ? `${error.code}: ${error.message}` : String(error);
          return { ...base, reachable: false, error: message, pool: pool.stats(), preparedTransactions: [] };
        }
      }),
    );
    return {
      clusterId: this.clusterId,
      bucketMapVersion: this.#map.version,
      shards,
      lastRecovery: this.#lastRecovery,
      lastRecoveryError: this.#lastRecoveryError,
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
    const buckets = this.#map.bucketsPerShard();
    const registered = new Map(this.#registeredShards.map((shard) => [shard.shardId, shard]));
    const configured = new Map(this.#config.shards.map((shard) => [shard.id, shard.displayUrl]));
    const members = new Set(this.#activeShardIds());
    return [...this.#pools.keys()]
      .filter((shardId) => members.has(shardId) || registered.has(shardId))
      .map((shardId) => ({
        shardId,
        state: this.#stateOf(shardId),
        buckets: buckets.get(shardId) ?? 0,
        url: registered.get(shardId)?.url ?? configured.get(shardId) ?? '',
      }));
  }

  /** A registered table by the names a statement gives (an unqualified name is taken as public's, the default search_path). */
  #registeredTable(schema: string | undefined, name: string): RegisteredTable | undefined {
    return this.#tableIndex.get(`${schema ?? 'public'}\0${name}`);
  }

  #stateOf(shardId: string): ShardState {
    return this.#registeredShards.find((shard) => shard.shardId === shardId)?.state ?? 'active';
  }

  /** Pool counters per shard id. */
  poolStats(): Record<string, PoolStats> {
    return Object.fromEntries([...this.#pools].map(([id, pool]) => [id, pool.stats()]));
  }

  /** Lets borrowed connections finish, then closes every pool. Idempotent; later calls get ROUTER_CLOSED. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#recoveryTimer);
      clearTimeout(this.#soonRecovery);
      await this.#watcher.close();
      await this.#refreshing?.catch(() => undefined);
      await this.#backgroundRecovery;
      await Promise.all([...this.#pools.values()].map((pool) => pool.close()));
    })();
    return this.#closing;
  }

  /** Cross-shard writes need max_prepared_transactions > 0 on every participant. */
  #requirePreparedTransactions(shardIds: readonly string[]): void {
    const disabled = shardIds.find((id) => this.#capabilities.get(id)?.maxPreparedTransactions === 0);
    if (disabled === undefined) return;
    throw new ShardRouterError(
      'PREPARED_TRANSACTIONS_DISABLED',
      `shard ${disabled} has max_prepared_transactions = 0, so it cannot take part in a cross-shard transaction. ` +
        'Set max_prepared_transactions on every shard (at least the number of connections that may commit at once, ' +
        'e.g. the same as max_connections) in postgresql.conf or with `-c max_prepared_transactions=100`, and restart the server',
      { shardId: disabled },
    );
  }

  /**
   * The map this router routes by now, the cluster members of that map, and a coordinator
   * context that routes by it and stamps its connections with its version. Taken in one tick,
   * so the three agree (#readNewestState replaces map and registry together).
   */
  #routingSnapshot(): { map: BucketMap; members: string[]; context: CoordinatorContext } {
    if (this.#closing) throw closedError();
    const map = this.#map;
    const owners = this.#shardIdByBucket;
    const context: CoordinatorContext = {
      ...this.#coordinator,
      shardFor: (key) => owners[this.#bucketOf(key)]!,
      acquire: (shardId) => this.#pool(shardId).acquire(map.version),
    };
    return { map, members: this.#activeShardIds(), context };
  }

  /** Routes by `map` from now on (never by an older one than the current). */
  #install(map: BucketMap): void {
    if (this.#shardIdByBucket.length > 0 && map.version <= this.#map.version) return;
    this.#ensureRegisteredPools();
    for (const owner of map.shardIds()) this.#ensurePool(owner);
    this.#map = map;
    this.#poolByBucket = map.owners.map((owner) => this.#pools.get(owner)!);
    this.#shardIdByBucket = map.owners;
    for (const pool of this.#pools.values()) pool.routingVersion = map.version;
  }

  /**
   * A pool for every shard in the registry: an active shard that owns no buckets yet (just
   * added, or drained by removeShard) is still a member that broadcast writes, map switches,
   * recovery and the rebalancer must reach; a removed one is still checked by verify and recovery.
   */
  #ensureRegisteredPools(): void {
    for (const shard of this.#registeredShards) this.#ensurePool(shard.shardId);
  }

  /** A pool for a shard known only from the shard registry (added after this router's config was written). */
  #ensurePool(shardId: string): ShardPool {
    const existing = this.#pools.get(shardId);
    if (existing) return existing;
    const registered = this.#registeredShards.find((shard) => shard.shardId === shardId);
    if (!registered) {
      throw new ShardRouterError('INVALID_CONFIG', `shard ${shardId} owns buckets but is neither configured nor in the shard registry`, { shardId });
    }
    const shard = resolveShard(shardId, connectionStringFor(registered.url, this.#config.shards));
    // A removed shard's server may be gone: never keep connections open to it.
    const poolConfig = registered.state === 'removed' ? { ...this.#config.pool, min: 0 } : this.#config.pool;
    const pool = new ShardPool(shard, poolConfig, this.#config.applicationName);
    if (this.#shardIdByBucket.length > 0) pool.routingVersion = this.#map.version;
    this.#pools.set(shardId, pool);
    if (registered.state === 'active') this.#probeLater(pool);
    return pool;
  }

  /**
   * Learns a shard's server version and max_prepared_transactions in the background (what
   * connect probes for configured shards); until then a transaction there uses the settings
   * every supported version has. A failure is left for the first statement to report.
   */
  #probeLater(pool: ShardPool): void {
    if (this.#capabilities.has(pool.shardId)) return;
    void pool
      .acquire()
      .then(async (session) => {
        try {
          this.#capabilities.set(pool.shardId, await probeCapabilities(session));
        } finally {
          session.release();
        }
      })
      .catch(() => undefined);
  }

  /**
   * The cluster's shards (what broadcasts and map switches go to): configured, registered or
   * owning buckets, and not removed. A pool opened for a shard still being added is not one yet.
   */
  #activeShardIds(): string[] {
    const removed = new Set(this.#registeredShards.filter((shard) => shard.state === 'removed').map((shard) => shard.shardId));
    const members = new Set([...this.#config.shards.map((shard) => shard.id), ...this.#registeredShards.map((shard) => shard.shardId), ...this.#map.owners]);
    return [...this.#pools.keys()].filter((id) => members.has(id) && !removed.has(id));
  }

  /** Reads map, shard registry and table registry from every reachable shard; the newest map wins. */
  async #readNewestState(): Promise<void> {
    const schema = this.#config.catalogSchema;
    // Members only: a removed shard no longer gets map switches (and its server may be gone).
    const reads = await Promise.allSettled(
      this.#activeShardIds().map(async (shardId) => {
        const pool = this.#pool(shardId);
        const session = await pool.acquire();
        try {
          // One snapshot: the shard registry changes only in the map switch that goes with it.
          await session.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
          const map = await readLatestMap(session, schema);
          const state = { map, shards: await readShardRegistry(session, schema), tables: await readRegistry(session, schema) };
          await session.query('COMMIT');
          return state;
        } finally {
          session.release();
        }
      }),
    );
    let newest: { map: BucketMap | null; shards: RegisteredShard[]; tables: RegisteredTable[] } | undefined;
    for (const read of reads) {
      if (read.status === 'fulfilled' && read.value.map && (!newest?.map || read.value.map.version > newest.map.version)) newest = read.value;
    }
    if (!newest?.map) {
      const failure = reads.find((read) => read.status === 'rejected');
      throw failure ? failure.reason : new ShardRouterError('SHARD_UNAVAILABLE', 'no shard could be asked for the bucket map');
    }
    if (newest.map.version < this.#map.version) return;
    // Table registrations do not bump the map version; they are taken from the same read.
    this.#registeredShards = newest.shards;
    this.#ensureRegisteredPools();
    const tablesChanged = JSON.stringify(newest.tables) !== JSON.stringify(this.#tables);
    this.#tables = newest.tables;
    if (tablesChanged) {
      this.#tableIndex = indexTables(newest.tables);
      this.#broadcaster.forgetPlans();
    }
    this.#install(newest.map);
  }

  /**
   * Runs `attempt`; while it fails because a shard's fence refused a stale map, refreshes the
   * map and runs it again (a fenced write did nothing). `first` is a failure already seen.
   */
  async #retryingStaleMap<T>(attempt: () => Promise<T>, first?: unknown): Promise<T> {
    let failure = first;
    for (let round = 0; round < STALE_MAP_ATTEMPTS; round++) {
      if (failure !== undefined) {
        if (!isStaleMap(failure)) throw failure;
        if (round > 1) await new Promise((resolve) => setTimeout(resolve, STALE_MAP_BACKOFF_MS * 2 ** round));
        await this.refreshMap();
      }
      try {
        return await attempt();
      } catch (error) {
        failure = error;
      }
    }
    throw failure;
  }

  async #register(table: string, kind: TableKind, shardKey: string | undefined): Promise<RegisteredTable> {
    if (this.#closing) throw closedError();
    if (typeof table !== 'string' || table === '') throw new ShardRouterError('INVALID_ARGUMENT', 'table must be a table name');
    const shardIds = this.#activeShardIds().sort();
    this.#requirePreparedTransactions(shardIds);
    const options = resolveTransactionOptions(undefined, this.#config.transactions);
    const names = await runTransaction(this.#coordinator, shardIds, shardIds[0]!, options, (tx) =>
      Promise.all(shardIds.map((shardId) => registerOnShard(tx, shardId, this.#config.catalogSchema, this.#bucketCount, table, kind, shardKey))),
    );
    if (new Set(names).size > 1) throw new ShardRouterError('INVALID_ARGUMENT', `table ${table} resolves to different tables on different shards: ${names.join(', ')}`);
    await this.refreshMap();
    return { table: names[0]!, kind, shardKey };
  }

  /** What the rebalancer needs of this router. */
  #clusterAccess(): ClusterAccess {
    const router = this;
    return {
      clusterId: this.clusterId,
      config: this.#config,
      coordinator: this.#coordinator,
      get map() {
        return router.#map;
      },
      get tables() {
        return router.#tables;
      },
      get registeredShards() {
        return router.#registeredShards;
      },
      shardIds: () => this.#activeShardIds(),
      knownShardIds: () => this.shards().map((shard) => shard.shardId),
      pool: (shardId) => this.#pool(shardId),
      refresh: () => this.refreshMap(),
      addPool: (shard) => {
        if (!this.#pools.has(shard.id)) {
          const pool = new ShardPool(shard, this.#config.pool, this.#config.applicationName);
          pool.routingVersion = this.#map.version;
          this.#pools.set(shard.id, pool);
        }
        return this.#pools.get(shard.id)!;
      },
      setCapabilities: (shardId, capabilities) => this.#capabilities.set(shardId, capabilities),
      requirePreparedTransactions: (shardIds) => this.#requirePreparedTransactions(shardIds),
      recover: () => this.recover({ graceMillis: 0 }),
    };
  }

  #pool(shardId: string): ShardPool {
    const pool = this.#pools.get(shardId);
    if (!pool) throw new ShardRouterError('INVALID_ARGUMENT', `unknown shard id "${shardId}"`);
    return pool;
  }

  /** A background pass once the gids just left behind are past the grace age. */
  #recoverSoon(delayMillis = this.#config.recovery.graceMillis + 100): void {
    // intervalMillis 0 turns background recovery off entirely (the passes at connect aside).
    if (delayMillis > 0 && this.#config.recovery.intervalMillis === 0) return;
    if (this.#soonRecovery !== undefined || this.#closing) return;
    this.#soonRecovery = setTimeout(() => {
      this.#soonRecovery = undefined;
      this.#recoverInBackground();
    }, delayMillis);
    this.#soonRecovery.unref();
  }

  /** One background pass at a time; its outcome is kept for status(). */
  #recoverInBackground(): void {
    if (this.#backgroundRecovery || this.#closing) return;
    this.#backgroundRecovery = recover(this.#recoveryContext, { graceMillis: this.#config.recovery.graceMillis })
      .then(
        (report) => {
          this.#lastRecovery = report;
          this.#lastRecoveryError = undefined;
          if (report.inDoubt.length > 0) this.#recoverSoon(Math.max(1_000, this.#config.recovery.graceMillis));
        },
        (error: unknown) => {
          this.#lastRecoveryError = error instanceof Error ? error.message : String(error);
        },
      )
      .finally(() => {
        this.#backgroundRecovery = undefined;
      });
  }

  #poolFor(key: ShardKey): ShardPool {
    if (this.#closing) throw closedError();
    return this.#poolByBucket[this.#bucketOf(key)]!;
  }

  /** hashKey(key) % bucketCount, without a division when the count is a power of two. */
  #bucketOf(key: ShardKey): number {
    const hash = signedHashKey(key);
    return this.#bucketMask >= 0 ? hash & this.#bucketMask : (hash >>> 0) % this.#bucketCount;
  }

  #run<R extends QueryResultRow>(pool: ShardPool, sql: string, params: readonly unknown[] | undefined, version?: number): Promise<ExecuteResult<R>> {
    if (typeof sql !== 'string' || sql.length === 0) return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string'));
    if (params !== undefined && !Array.isArray(params)) return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'params must be an array'));
    return pool.query<R>(sql, params ?? NO_PARAMS, version);
  }
}

const NO_PARAMS: readonly unknown[] = Object.freeze([]);

/** The registered tables by their unquoted schema and name, NUL between them. */
function indexTables(tables: readonly RegisteredTable[]): ReadonlyMap<string, RegisteredTable> {
  return new Map(tables.map((table) => [registryNameParts(table.table).join('\0'), table]));
}



/** The argument errors broadcast and broadcastStream share (the SQL is checked by the planner). */
function invalidBroadcastArguments(params: unknown, options: unknown): ShardRouterError | undefined {
  if (params !== undefined && !Array.isArray(params)) return new ShardRouterError('INVALID_ARGUMENT', 'params must be an array');
  if (options === null || typeof options !== 'object') return new ShardRouterError('INVALID_ARGUMENT', 'options must be an object');
  return undefined;
}


/** Borrows one connection from every pool (all or none) for the duration of `work`. */
async function withOneSessionPerShard<T>(pools: readonly ShardPool[], work: (sessions: ShardSession[]) => Promise<T>): Promise<T> {
  const acquired = await Promise.allSettled(pools.map((pool) => pool.acquire()));
  const sessions = acquired.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
  try {
    const failed = acquired.find((outcome) => outcome.status === 'rejected');
    if (failed) throw failed.reason;
    return await work(sessions);
  } finally {
    for (const session of sessions) session.release();
  }
}

