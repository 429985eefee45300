import type { QueryResultRow } from 'pg';
import { openCatalog } from '../cluster/catalog.js';
import type { ShardSession } from '../cluster/shard-io.js';
import { ShardPool } from '../cluster/shard-pool.js';
import type { PoolStats, ShardQueryResult } from '../cluster/shard-pool.js';
import { resolveConfig } from '../config.js';
import type { ShardRouterConfig } from '../config.js';
import { ShardRouterError, closedError } from '../errors.js';
import type { BucketMap } from './bucket-map.js';
import { signedHashKey } from './hash.js';
import type { ShardKey } from './hash.js';

/** pg's result shape plus the shard that produced it. */
export type ExecuteResult<R extends QueryResultRow = QueryResultRow> = ShardQueryResult<R>;

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

  private constructor(pools: ReadonlyMap<string, ShardPool>, clusterId: string, map: BucketMap) {
    this.#pools = pools;
    this.clusterId = clusterId;
    this.#map = map;
    this.#bucketCount = map.bucketCount;
    this.#bucketMask = (map.bucketCount & (map.bucketCount - 1)) === 0 ? map.bucketCount - 1 : -1;
    this.#poolByBucket = map.owners.map((owner) => pools.get(owner)!);
    this.#shardIdByBucket = map.owners;
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
      const { clusterId, map } = await withOneSessionPerShard([...pools.values()], (sessions) => openCatalog(resolved, sessions));
      return new ShardRouter(pools, clusterId, map);
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

  /** Pool counters per shard id. */
  poolStats(): Record<string, PoolStats> {
    return Object.fromEntries([...this.#pools].map(([id, pool]) => [id, pool.stats()]));
  }

  /** Lets borrowed connections finish, then closes every pool. Idempotent; later calls get ROUTER_CLOSED. */
  close(): Promise<void> {
    this.#closing ??= Promise.all([...this.#pools.values()].map((pool) => pool.close())).then(() => undefined);
    return this.#closing;
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

