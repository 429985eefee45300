import type { QueryResultRow } from 'pg';
import { Broadcaster, failedStream } from '../broadcast/broadcaster.js';
import { probeBroadcastCapabilities, serverHelpers } from '../broadcast/server-probe.js';
import type { BroadcastCapabilities } from '../broadcast/server-probe.js';
import { loadParser } from '../broadcast/sql-parser.js';
import type { BroadcastOptions, BroadcastResult, BroadcastStreamOptions } from '../broadcast/types.js';
import { openCatalog } from '../cluster/catalog.js';
import type { ShardCapabilities } from '../cluster/catalog.js';
import type { ShardSession } from '../cluster/shard-io.js';
import { ShardPool } from '../cluster/shard-pool.js';
import type { PoolStats, ShardQueryResult } from '../cluster/shard-pool.js';
import { resolveConfig } from '../config.js';
import type { ResolvedConfig, ShardRouterConfig } from '../config.js';
import { ShardRouterError, closedError } from '../errors.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { CoordinatorContext, Transaction } from '../twopc/coordinator.js';
import { gidPrefix } from '../twopc/gid.js';
import { recover } from '../twopc/recovery.js';
import type { RecoveryContext, RecoveryReport } from '../twopc/recovery.js';
import { listAllPrepared } from '../twopc/status.js';
import type { PreparedTransactionInfo } from '../twopc/status.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';
import type { BucketMap } from './bucket-map.js';
import { signedHashKey } from './hash.js';
import type { ShardKey } from './hash.js';

/** pg's result shape plus the shard that produced it. */
export type ExecuteResult<R extends QueryResultRow = QueryResultRow> = ShardQueryResult<R>;

/** One shard in {@link ShardRouter.status}. */
export interface ShardStatus {
  readonly shardId: string;
  /** False when the shard could not be asked; `error` says why. */
  readonly reachable: boolean;
  readonly error?: string;
  readonly serverVersion: number;
  readonly maxPreparedTransactions: number;
  readonly pool: PoolStats;
  /** Prepared transactions in the shard's database, oldest first (ours and anyone else's). */
  readonly preparedTransactions: readonly PreparedTransactionInfo[];
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
  readonly #pools: ReadonlyMap<string, ShardPool>;
  #map: BucketMap;
  /** The hot path: bucket -> pool of its owner (and its id), one array read. */
  #poolByBucket: readonly ShardPool[];
  #shardIdByBucket: readonly string[];
  #bucketCount: number;
  /** bucketCount - 1 when it is a power of two (the default 1024), else -1: `h & mask` beats `%`. */
  #bucketMask: number;
  #closing: Promise<void> | undefined;
  readonly #config: ResolvedConfig;
  readonly #capabilities: ReadonlyMap<string, ShardCapabilities>;
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
    pools: ReadonlyMap<string, ShardPool>,
    clusterId: string,
    map: BucketMap,
    capabilities: ReadonlyMap<string, ShardCapabilities>,
    broadcastCapabilities: BroadcastCapabilities,
  ) {
    this.#config = config;
    this.#pools = pools;
    this.#capabilities = capabilities;
    this.clusterId = clusterId;
    this.#map = map;
    this.#bucketCount = map.bucketCount;
    this.#bucketMask = (map.bucketCount & (map.bucketCount - 1)) === 0 ? map.bucketCount - 1 : -1;
    this.#poolByBucket = map.owners.map((owner) => pools.get(owner)!);
    this.#shardIdByBucket = map.owners;
    const acquire = (shardId: string) => this.#pool(shardId).acquire();
    this.#coordinator = {
      clusterId,
      catalogSchema: config.catalogSchema,
      shardFor: (key) => this.shardFor(key),
      acquire,
      serverVersion: (shardId) => capabilities.get(shardId)?.serverVersion ?? 0,
      onUnfinished: () => this.#recoverSoon(),
    };
    this.#recoveryContext = { clusterId, catalogSchema: config.catalogSchema, shardIds: [...pools.keys()], acquire };
    this.#broadcaster = new Broadcaster({
      shardIds: [...pools.keys()],
      pool: (shardId) => this.#pool(shardId),
      capabilities: broadcastCapabilities,
      ...serverHelpers([...pools.values()]),
      defaultTimeoutMillis: config.broadcast.timeoutMillis,
      runWrite: (shardIds, timeoutMillis, work) => {
        this.#requirePreparedTransactions(shardIds);
        const options = resolveTransactionOptions({ timeoutMillis }, config.transactions);
        // Connections in shard-id order, as every transaction takes them; the first decides.
        const ordered = [...shardIds].sort();
        return runTransaction(this.#coordinator, ordered, ordered[0]!, options, work);
      },
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
      const [{ clusterId, map, capabilities }, broadcastCapabilities] = await Promise.all([
        withOneSessionPerShard([...pools.values()], (sessions) => openCatalog(resolved, sessions)),
        probeBroadcastCapabilities([...pools.values()]),
        loadParser(),
      ]);
      return new ShardRouter(resolved, pools, clusterId, map, capabilities, broadcastCapabilities);
    } catch (error) {
      await Promise.all([...pools.values()].map((pool) => pool.close()));
      throw error;
    }
  }

  /** Shard ids in config order. */
  get shardIds(): string[] {
    return [...this.#pools.keys()];
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
    try {
      pool = this.#poolFor(key);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#run<R>(pool, sql, params);
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
    const declared = keys.map((key) => this.shardFor(key));
    // One fixed order (by shard id) for taking connections, in every router: no two
    // transactions can each hold a connection the other waits for.
    const shardIds = [...new Set(declared)].sort();
    if (shardIds.length > 1 && !resolved.readOnly) this.#requirePreparedTransactions(shardIds);
    return runTransaction(this.#coordinator, shardIds, declared[0]!, resolved, work);
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

  /** Pool counters per shard id. */
  poolStats(): Record<string, PoolStats> {
    return Object.fromEntries([...this.#pools].map(([id, pool]) => [id, pool.stats()]));
  }

  /** Lets borrowed connections finish, then closes every pool. Idempotent; later calls get ROUTER_CLOSED. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#recoveryTimer);
      clearTimeout(this.#soonRecovery);
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

  #run<R extends QueryResultRow>(pool: ShardPool, sql: string, params: readonly unknown[] | undefined): Promise<ExecuteResult<R>> {
    if (typeof sql !== 'string' || sql.length === 0) return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string'));
    if (params !== undefined && !Array.isArray(params)) return Promise.reject(new ShardRouterError('INVALID_ARGUMENT', 'params must be an array'));
    return pool.query<R>(sql, params ?? NO_PARAMS);
  }
}

const NO_PARAMS: readonly unknown[] = Object.freeze([]);

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

