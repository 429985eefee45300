import { probeCapabilities, readLatestMap } from '../catalog/catalog.js';
import type { ShardCapabilities } from '../catalog/catalog.js';
import { readRegistry, readShardRegistry, registryNameParts } from '../catalog/registries.js';
import type { RegisteredShard, RegisteredTable } from '../catalog/registries.js';
import { connectionStringFor, poolSessionSettings, resolveShard, sslFor } from '../config.js';
import type { ResolvedConfig } from '../config.js';
import { ShardRouterError, closedError, isStaleMap } from '../errors.js';
import type { BucketMap } from '../placement/bucket-map.js';
import { Observer } from '../observe/observer.js';
import { signedHashKey } from '../placement/hash.js';
import type { ShardKey } from '../placement/hash.js';
import { ShardPool } from '../pool/shard-pool.js';

/** How often a write refused by a shard's map fence is retried after refreshing the map. */
const STALE_MAP_ATTEMPTS = 6;
const STALE_MAP_BACKOFF_MS = 25;

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

/** The map a statement routes by, with the cluster's members of that map (taken in one tick). */
export interface RoutingSnapshot {
  readonly map: BucketMap;
  /** Owner shard id by bucket (the map's owners). */
  readonly owners: readonly string[];
  readonly members: string[];
}

/** What the catalog said at connect. */
export interface InitialState {
  readonly map: BucketMap;
  readonly registeredShards: readonly RegisteredShard[];
  readonly tables: readonly RegisteredTable[];
  readonly capabilities: ReadonlyMap<string, ShardCapabilities>;
}

/**
 * What a router knows of its cluster and keeps current: one pool per shard, the bucket map (as
 * bucket -> pool arrays for the hot path), the shard and table registries, and the refresh that
 * reads them anew from the shards.
 *
 * Membership: every shard in the shard registry is a member, configured or not and owning
 * buckets or not; removed ones keep a pool without idle connections for verify, recovery and
 * resume (docs/rebalance.md, "Membership").
 */
export class Topology {
  readonly #config: ResolvedConfig;
  /** Configured shards first, then shards learned from the shard registry. */
  readonly #pools: Map<string, ShardPool>;
  readonly #capabilities: Map<string, ShardCapabilities>;
  readonly #onTablesChanged: () => void;
  #registeredShards: readonly RegisteredShard[];
  #tables: readonly RegisteredTable[];
  /** The registered tables by schema and name, unquoted as the parser gives them, joined by NUL (which no identifier holds). */
  #tableIndex: ReadonlyMap<string, RegisteredTable>;
  #map: BucketMap;
  /** The hot path: bucket -> pool of its owner (and its id), one array read. */
  #poolByBucket: readonly ShardPool[] = [];
  #shardIdByBucket: readonly string[] = [];
  readonly #bucketCount: number;
  /** bucketCount - 1 when it is a power of two (the default 1024), else -1: `h & mask` beats `%`. */
  readonly #bucketMask: number;
  #refreshing: Promise<void> | undefined;
  /** members(), until pools, map or registry change. */
  #members: readonly string[] | undefined;
  #nextRefresh: Promise<void> | undefined;
  /** What a stale-map retry calls to refresh: the router's public refreshMap, once there is a router. */
  #refreshForRetry: () => Promise<unknown> = () => this.refresh();
  #closed = false;
  readonly #observer: Observer;

  constructor(
    config: ResolvedConfig,
    pools: Map<string, ShardPool>,
    initial: InitialState,
    onTablesChanged: () => void,
    observer: Observer = new Observer(undefined, undefined),
  ) {
    this.#config = config;
    this.#observer = observer;
    this.#pools = pools;
    this.#capabilities = new Map(initial.capabilities);
    this.#onTablesChanged = onTablesChanged;
    this.#registeredShards = initial.registeredShards;
    this.#tables = initial.tables;
    this.#tableIndex = indexTables(initial.tables);
    this.#map = initial.map;
    this.#bucketCount = initial.map.bucketCount;
    this.#bucketMask = (this.#bucketCount & (this.#bucketCount - 1)) === 0 ? this.#bucketCount - 1 : -1;
    this.#install(initial.map);
  }

  get map(): BucketMap {
    return this.#map;
  }

  get bucketCount(): number {
    return this.#bucketCount;
  }

  get tables(): readonly RegisteredTable[] {
    return this.#tables;
  }

  get registeredShards(): readonly RegisteredShard[] {
    return this.#registeredShards;
  }

  /** hashKey(key) % bucketCount, without a division when the count is a power of two. */
  bucketOf(key: ShardKey): number {
    const hash = signedHashKey(key);
    return this.#bucketMask >= 0 ? hash & this.#bucketMask : (hash >>> 0) % this.#bucketCount;
  }

  /** The owner's pool of a key's bucket: the hot path. */
  poolFor(key: ShardKey): ShardPool {
    return this.#poolByBucket[this.bucketOf(key)]!;
  }

  /** The owner's pool of a bucket (from bucketOf), for a caller that needs the bucket too. */
  poolOfBucket(bucket: number): ShardPool {
    return this.#poolByBucket[bucket]!;
  }

  shardFor(key: ShardKey): string {
    return this.#shardIdByBucket[this.bucketOf(key)]!;
  }

  /** The map, its owners and its members, read together. */
  snapshot(): RoutingSnapshot {
    return { map: this.#map, owners: this.#shardIdByBucket, members: this.members() };
  }

  pool(shardId: string): ShardPool {
    const pool = this.#pools.get(shardId);
    if (!pool) throw new ShardRouterError('INVALID_ARGUMENT', `unknown shard id "${String(shardId)}"; known: ${this.members().join(', ')}`);
    return pool;
  }

  /** Every pool, removed shards' included. */
  allPools(): ShardPool[] {
    return [...this.#pools.values()];
  }

  /** Every shard id with a pool, removed shards included (recovery looks at them all). */
  poolIds(): string[] {
    return [...this.#pools.keys()];
  }

  /**
   * The cluster's members (what broadcasts and map switches go to): configured, registered or
   * owning buckets, and not removed. A pool opened for a shard still being added is not one yet.
   */
  members(): string[] {
    // Every broadcast and transaction asks: computed once per change of pools, map or registry.
    this.#members ??= this.#computeMembers();
    return [...this.#members];
  }

  #computeMembers(): string[] {
    const removed = new Set(this.#registeredShards.filter((shard) => shard.state === 'removed').map((shard) => shard.shardId));
    const members = new Set([
      ...this.#config.shards.map((shard) => shard.id),
      ...this.#registeredShards.map((shard) => shard.shardId),
      ...this.#map.shardIds(),
    ]);
    return [...this.#pools.keys()].filter((id) => members.has(id) && !removed.has(id));
  }

  /** Members and removed shards, with state, bucket count and URL without password. */
  shards(): ShardInfo[] {
    const buckets = this.#map.bucketsPerShard();
    const registered = new Map(this.#registeredShards.map((shard) => [shard.shardId, shard]));
    const configured = new Map(this.#config.shards.map((shard) => [shard.id, shard.displayUrl]));
    const members = new Set(this.members());
    return [...this.#pools.keys()]
      .filter((shardId) => members.has(shardId) || registered.has(shardId))
      .map((shardId) => ({
        shardId,
        state: this.stateOf(shardId),
        buckets: buckets.get(shardId) ?? 0,
        url: registered.get(shardId)?.url ?? configured.get(shardId) ?? '',
      }));
  }

  stateOf(shardId: string): ShardState {
    return this.#registeredShards.find((shard) => shard.shardId === shardId)?.state ?? 'active';
  }

  /** A registered table by the names a statement gives (an unqualified name is taken as public's, the default search_path). */
  registeredTable(schema: string | undefined, name: string): RegisteredTable | undefined {
    return this.#tableIndex.get(`${schema ?? 'public'}\0${name}`);
  }

  capabilities(shardId: string): ShardCapabilities | undefined {
    return this.#capabilities.get(shardId);
  }

  setCapabilities(shardId: string, capabilities: ShardCapabilities): void {
    this.#capabilities.set(shardId, capabilities);
  }

  /** Cross-shard writes need max_prepared_transactions > 0 on every participant. */
  requirePreparedTransactions(shardIds: readonly string[]): void {
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

  /** Opens (or returns) a pool for a shard being added by this router's rebalancer. */
  addPool(shard: ReturnType<typeof resolveShard>): ShardPool {
    if (!this.#pools.has(shard.id)) {
      // A shard the rebalancer adds gets the config's TLS options unless it brings its own.
      const tls = shard.ssl === undefined ? resolveShard(shard.id, shard.connectionString, sslFor(this.#config, shard.id)) : shard;
      const pool = new ShardPool(tls, this.#config.pool, this.#config.applicationName, poolSessionSettings(this.#config));
      pool.observer = this.#observer.pool(shard.id, shard.connectionString);
      pool.routingVersion = this.#map.version;
      this.#pools.set(shard.id, pool);
      this.#members = undefined;
    }
    return this.#pools.get(shard.id)!;
  }

  /**
   * Reads the newest bucket map, shard registry and table registry from the members and routes
   * by them from now on. A read already under way may have started before the change the
   * caller knows of, so callers arriving meanwhile share one read that starts after it.
   */
  async refresh(): Promise<BucketMap> {
    if (this.#closed) throw closedError();
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

  /** Routes the refreshes of stale-map retries through `refresh` (the router's refreshMap). */
  refreshRetriesVia(refresh: () => Promise<unknown>): void {
    this.#refreshForRetry = refresh;
  }

  /**
   * Runs `attempt`; while it fails because a shard's fence refused a stale map, refreshes the
   * map and runs it again (a fenced write did nothing). `first` is a failure already seen: it
   * counts as the first attempt, so the caller's statement runs at most STALE_MAP_ATTEMPTS times.
   */
  async retryingStaleMap<T>(attempt: () => Promise<T>, first?: unknown): Promise<T> {
    let failure = first;
    for (let round = first === undefined ? 0 : 1; round < STALE_MAP_ATTEMPTS; round++) {
      if (failure !== undefined) {
        if (!isStaleMap(failure)) throw failure;
        this.#observer.staleMapRetry(round, this.#map.version, failure);
        if (round > 1) await new Promise((resolve) => setTimeout(resolve, STALE_MAP_BACKOFF_MS * 2 ** round));
        await this.#refreshForRetry();
      }
      try {
        return await attempt();
      } catch (error) {
        failure = error;
      }
    }
    throw failure;
  }

  /** Waits for a refresh under way, then closes every pool. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#refreshing?.catch(() => undefined);
    await Promise.all([...this.#pools.values()].map((pool) => pool.close()));
  }

  #startRefresh(): Promise<void> {
    const refreshing = this.#readNewestState().finally(() => {
      if (this.#refreshing === refreshing) this.#refreshing = undefined;
    });
    this.#refreshing = refreshing;
    return refreshing;
  }

  /** Reads map and registries from every reachable member; the newest map wins. */
  async #readNewestState(): Promise<void> {
    // Members only: a removed shard no longer gets map switches (and its server may be gone).
    const reads = await Promise.allSettled(this.members().map((shardId) => this.#readState(this.pool(shardId))));
    let newest: CatalogState | undefined;
    for (const read of reads) {
      if (read.status === 'fulfilled' && read.value.map && (!newest?.map || read.value.map.version > newest.map.version))
        newest = read.value;
    }
    if (!newest?.map) {
      const failure = reads.find((read) => read.status === 'rejected');
      throw failure ? failure.reason : new ShardRouterError('SHARD_UNAVAILABLE', 'no shard could be asked for the bucket map');
    }
    if (newest.map.version < this.#map.version) return;
    // Table registrations do not bump the map version; they are taken from the same read.
    this.#registeredShards = newest.shards;
    this.#members = undefined;
    this.#ensureRegisteredPools();
    const tablesChanged = JSON.stringify(newest.tables) !== JSON.stringify(this.#tables);
    this.#tables = newest.tables;
    if (tablesChanged) {
      this.#tableIndex = indexTables(newest.tables);
      this.#onTablesChanged();
    }
    this.#install(newest.map);
  }

  /** One shard's map and registries, in one snapshot (the shard registry changes only in the map switch that goes with it). */
  async #readState(pool: ShardPool): Promise<CatalogState> {
    const schema = this.#config.catalogSchema;
    const session = await pool.acquire();
    try {
      await session.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const map = await readLatestMap(session, schema);
      const state = { map, shards: await readShardRegistry(session, schema), tables: await readRegistry(session, schema) };
      await session.query('COMMIT');
      return state;
    } finally {
      session.release();
    }
  }

  /** Routes by `map` from now on (never by an older one than the current). */
  #install(map: BucketMap): void {
    if (this.#shardIdByBucket.length > 0 && map.version <= this.#map.version) return;
    this.#ensureRegisteredPools();
    for (const owner of map.shardIds()) this.#ensurePool(owner);
    if (this.#shardIdByBucket.length > 0) this.#observer.mapChanged(this.#map.version, map.version);
    this.#map = map;
    this.#members = undefined;
    this.#poolByBucket = map.owners.map((owner) => this.#pools.get(owner)!);
    // A plain (not frozen) array: the hot path reads it once per key.
    this.#shardIdByBucket = [...map.owners];
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
      throw new ShardRouterError('INVALID_CONFIG', `shard ${shardId} owns buckets but is neither configured nor in the shard registry`, {
        shardId,
      });
    }
    const shard = resolveShard(shardId, connectionStringFor(registered.url, this.#config.shards), sslFor(this.#config, shardId));
    // A removed shard's server may be gone: never keep connections open to it.
    const poolConfig = registered.state === 'removed' ? { ...this.#config.pool, min: 0 } : this.#config.pool;
    const pool = new ShardPool(shard, poolConfig, this.#config.applicationName, poolSessionSettings(this.#config));
    pool.observer = this.#observer.pool(shard.id, shard.connectionString);
    if (this.#shardIdByBucket.length > 0) pool.routingVersion = this.#map.version;
    this.#pools.set(shardId, pool);
    this.#members = undefined;
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
}

interface CatalogState {
  readonly map: BucketMap | null;
  readonly shards: RegisteredShard[];
  readonly tables: RegisteredTable[];
}

/** The registered tables by their unquoted schema and name, NUL between them. */
function indexTables(tables: readonly RegisteredTable[]): ReadonlyMap<string, RegisteredTable> {
  return new Map(tables.map((table) => [registryNameParts(table.table).join('\0'), table]));
}
