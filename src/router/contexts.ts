import type { Broadcaster, BroadcastRouterContext } from '../broadcast/broadcaster.js';
import type { ScopedBroadcastOptions } from '../broadcast/types.js';
import type { CollectorContext } from '../idempotency/collector.js';
import type { ResolvedConfig } from '../config.js';
import type { BroadcastObserver, MoveObserver, TransactionObserver } from '../observe/hooks.js';
import type { Observer } from '../observe/observer.js';
import type { CatalogExtension } from '../catalog/catalog.js';
import type { OutboxContext } from '../outbox/context.js';
import { outboxChannel } from '../outbox/context.js';
import type { LockContext } from '../lock/context.js';
import type { QueryContext } from '../query/engine.js';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { IdempotentExecuteResult } from '../idempotency/idempotency-keys.js';
import type { QueryResultRow, ShardQueryResult } from '../pool/session.js';
import type { SagaContext } from '../saga/context.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';
import type { RebalanceContext } from '../rebalance/context.js';
import { movesGuardCondition } from '../rebalance/schema.js';
import type { ShardKey } from '../placement/hash.js';
import type { CoordinatorContext, Transaction } from '../twopc/coordinator.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { RecoveryContext, RecoveryReport } from '../twopc/recovery.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import { observedSingle } from './statements.js';
import type { Topology } from './topology.js';

/**
 * The ports the engines work through (docs/architecture.md), built over the router's topology.
 * Each engine sees only its context, never the router.
 */

/** The idempotency record collector's shards: the members, statements stamped with the current map version. */
export function collectorContext(config: ResolvedConfig, topology: Topology): CollectorContext {
  return {
    catalogSchema: config.catalogSchema,
    shards: () =>
      topology.members().map((shardId) => ({
        shardId,
        queryable: { query: (sql, params) => topology.pool(shardId).query(sql, params ?? [], topology.map.version) },
      })),
  };
}

/** The 2PC engine's context, routing by the router's current map (for writes routed by shard id). */
export function coordinatorContext(
  clusterId: string,
  config: ResolvedConfig,
  topology: Topology,
  onUnfinished: (gid: string) => void,
): CoordinatorContext {
  return {
    clusterId,
    catalogSchema: config.catalogSchema,
    shardFor: (key) => topology.shardFor(key),
    acquire: (shardId) => topology.pool(shardId).acquire(),
    serverVersion: (shardId) => topology.capabilities(shardId)?.serverVersion ?? 0,
    onUnfinished,
  };
}

/**
 * A coordinator context that routes every statement by one map version, the current one, and
 * stamps its connections with that version (docs/rebalance.md, I0), with the members of that map.
 */
export function routedContext(
  base: CoordinatorContext,
  topology: Topology,
  observer?: TransactionObserver,
): { context: CoordinatorContext; members: string[]; version: number; owners: readonly string[] } {
  const { map, owners, members } = topology.snapshot();
  const context: CoordinatorContext = {
    ...base,
    ...(observer ? { observer, mapVersion: map.version, bucketOf: (key: ShardKey) => topology.bucketOf(key) } : {}),
    shardFor: (key) => owners[topology.bucketOf(key)]!,
    acquire: (shardId) => topology.pool(shardId).acquire(map.version),
  };
  return { context, members, version: map.version, owners };
}

/** Recovery looks at every shard the router has a pool for, removed ones included. */
export function recoveryContext(clusterId: string, config: ResolvedConfig, topology: Topology): RecoveryContext {
  return {
    clusterId,
    catalogSchema: config.catalogSchema,
    get shardIds() {
      return topology.poolIds();
    },
    acquire: (shardId) => topology.pool(shardId).acquire(),
  };
}

/** The broadcaster's port: routing, stale-map retries, the table registry, and writes through 2PC. */
export function broadcastContext(config: ResolvedConfig, topology: Topology, coordinator: CoordinatorContext): BroadcastRouterContext {
  return {
    routing: () => {
      const { map, owners, members } = topology.snapshot();
      return { mapVersion: map.version, shardIds: members, owners };
    },
    retryingStaleMap: (attempt) => topology.retryingStaleMap(attempt),
    registeredTable: (schema, name) => topology.registeredTable(schema, name),
    movesGuard: (schema, name, versionParam, qualifier) => {
      const table = topology.registeredTable(schema, name);
      return table?.kind === 'sharded'
        ? movesGuardCondition(config.catalogSchema, table.shardKey!, topology.bucketCount, versionParam, qualifier)
        : undefined;
    },
    pool: (shardId) => topology.pool(shardId),
    defaultTimeoutMillis: config.broadcast.timeoutMillis,
    coordinator: {
      shardId: config.broadcast.coordinatorShard,
      maxRows: config.broadcast.maxIntermediateRows,
      maxBytes: config.broadcast.maxIntermediateBytes,
    },
    runWrite: (timeoutMillis, work, observer) => {
      const options = resolveTransactionOptions({ timeoutMillis }, config.transactions);
      // Each attempt takes its participants from the map it routes by (and stamps its
      // connections with that version): after a refusal by a raised fence, the retry writes to
      // the shards the new map has, a shard added meanwhile included.
      return topology.retryingStaleMap(() => {
        const { context, members } = routedContext(coordinator, topology, observer);
        // Connections in shard-id order, as every transaction takes them; the first decides.
        const ordered = [...members].sort();
        topology.requirePreparedTransactions(ordered);
        return runTransaction(context, ordered, ordered[0]!, options, (tx) => work(tx, ordered));
      });
    },
  };
}

/** The outbox's port: routing snapshots, pools, stale-map retries and 2PC over every member. */
export function outboxContext(
  clusterId: string,
  config: ResolvedConfig,
  topology: Topology,
  coordinator: CoordinatorContext,
): OutboxContext {
  return {
    catalogSchema: config.catalogSchema,
    get bucketCount() {
      return topology.bucketCount;
    },
    channel: outboxChannel(clusterId),
    retentionMillis: config.outbox.retentionMillis,
    routing: () => {
      const { map, owners, members } = topology.snapshot();
      return { version: map.version, members, ownerOf: (key) => owners[topology.bucketOf(key)]! };
    },
    pool: (shardId) => topology.pool(shardId),
    retryingStaleMap: (attempt) => topology.retryingStaleMap(attempt),
    readOwned: (sql, keyColumn, params) => readOwned(config, topology, sql, keyColumn, params),
    writeEverywhere: (work) => {
      const options = resolveTransactionOptions(undefined, config.transactions);
      return topology.retryingStaleMap(() => {
        const { context, members } = routedContext(coordinator, topology);
        const ordered = [...members].sort();
        topology.requirePreparedTransactions(ordered);
        return runTransaction(context, ordered, ordered[0]!, options, (tx) => work(tx, ordered));
      });
    },
  };
}

/** What the rebalancer needs of the router it works through. */
export function clusterAccess(
  clusterId: string,
  config: ResolvedConfig,
  topology: Topology,
  coordinator: CoordinatorContext,
  recoverNow: () => Promise<RecoveryReport>,
  extensions: readonly CatalogExtension[],
  observer?: MoveObserver,
): RebalanceContext {
  return {
    ...(observer ? { observer } : {}),
    clusterId,
    config,
    coordinator,
    extensions,
    get map() {
      return topology.map;
    },
    get tables() {
      return topology.tables;
    },
    get registeredShards() {
      return topology.registeredShards;
    },
    shardIds: () => topology.members(),
    knownShardIds: () => topology.shards().map((shard) => shard.shardId),
    pool: (shardId) => topology.pool(shardId),
    refresh: () => topology.refresh(),
    addPool: (shard) => topology.addPool(shard),
    setCapabilities: (shardId, capabilities) => topology.setCapabilities(shardId, capabilities),
    requirePreparedTransactions: (shardIds) => topology.requirePreparedTransactions(shardIds),
    recover: recoverNow,
  };
}

/** The locks' port: routing by one snapshot, connections of their own, and the router's transactions. */
export function lockContext(
  config: ResolvedConfig,
  topology: Topology,
  transaction: <T>(keys: readonly ShardKey[], work: (tx: Transaction) => Promise<T>) => Promise<T>,
): LockContext {
  return {
    catalogSchema: config.catalogSchema,
    bucketOf: (key) => topology.bucketOf(key),
    route: (bucket) => {
      const { map, owners } = topology.snapshot();
      return { shardId: owners[bucket]!, mapVersion: map.version };
    },
    openConnection: (shardId) => topology.pool(shardId).openDedicated({}, 'lock'),
    serverVersion: (shardId) => topology.capabilities(shardId)?.serverVersion ?? 0,
    retryingStaleMap: (attempt) => topology.retryingStaleMap(attempt),
    transaction,
  };
}

/**
 * router.query's port: the map of the moment, one-shard statements fenced like execute, 2PC
 * writes over chosen shards; each observed as the route it took (single, broadcast, transaction).
 */
export function queryContext(
  config: ResolvedConfig,
  topology: Topology,
  coordinator: CoordinatorContext,
  broadcaster: () => Broadcaster,
  observer: Observer,
): QueryContext {
  return {
    routing: () => {
      const { map, owners, members } = topology.snapshot();
      return { version: map.version, members, shardFor: (key) => owners[topology.bucketOf(key)]! };
    },
    shardFor: (key) => topology.shardFor(key),
    mapVersion: () => topology.map.version,
    runOn: (shardId, sql, params, version) =>
      observedSingle(observer, shardId, sql, version, () => topology.pool(shardId).query(sql, params, version)),
    retryingStaleMap: (attempt, first) => topology.retryingStaleMap(attempt, first),
    runWrite: (pick, work) => {
      const options = resolveTransactionOptions(undefined, config.transactions);
      const probe = observer.operation('transaction');
      return probe.run(() =>
        topology.retryingStaleMap(() => {
          const { context, members } = routedContext(coordinator, topology, probe);
          const picked = pick({ shardFor: (key) => context.shardFor(key), members });
          const ordered = [...new Set(picked === 'all' ? members : picked)].sort();
          if (ordered.length > 1) topology.requirePreparedTransactions(ordered);
          return runTransaction(context, ordered, ordered[0]!, options, (tx) => work(tx, ordered));
        }),
      );
    },
    broadcast: <R extends QueryResultRow>(sql: string, params: readonly unknown[], options: ScopedBroadcastOptions) => {
      // The shards that ran a shard query, as the result reports them (a narrowed read: the keys' owners).
      const read = new Set<string>();
      const probe = observer.operation('broadcast', sql);
      const reporting: BroadcastObserver = {
        protocol: (protocol) => probe.protocol(protocol),
        gid: (gid) => probe.gid(gid),
        step: (step, shardId, work) => probe.step(step, shardId, work),
        statement: (shardId, text, routed, work) => probe.statement(shardId, text, routed, work),
        shard: (shardId, text, work) => {
          read.add(shardId);
          return probe.shard(shardId, text, work);
        },
      };
      return probe.run(async () => ({ ...(await broadcaster().run<R>(sql, params, options, reporting)), shardIds: [...read].sort() }));
    },
    readAmong: (sql, params, routing, read) => broadcaster().readAmong(sql, params, routing, read),
    bucketOf: (key) => topology.bucketOf(key),
    explainBroadcast: (sql) => broadcaster().explain(sql),
    lookup: (schema, name) => topology.registeredTable(schema, name),
    get tables() {
      return topology.tables;
    },
    columnType: async (table, column) => {
      const { rows } = await topology
        .pool(topology.members()[0]!)
        .query<{ type: string }>(
          'SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped',
          [table, column],
        );
      return rows[0]?.type;
    },
    requireKey: config.query.requireKey,
    unregisteredShard: config.query.unregisteredTablesShard,
  };
}

/** The router calls the saga engine works through (the router's own, so sagas get its fences and retries). */
export interface SagaRouterCalls {
  execute<R extends QueryResultRow>(
    key: ShardKey,
    sql: string,
    params?: readonly unknown[],
    options?: { readonly idempotencyKey?: string },
  ): Promise<ShardQueryResult<R>>;
  executeOn<R extends QueryResultRow>(shardId: string, sql: string, params?: readonly unknown[]): Promise<ShardQueryResult<R>>;
  transaction<T>(
    keys: readonly ShardKey[],
    work: (tx: Transaction) => Promise<T>,
    options?: TransactionOptions & { idempotencyKey?: string },
  ): Promise<T>;
}

export function sagaContext(config: ResolvedConfig, topology: Topology, router: SagaRouterCalls): SagaContext {
  return {
    catalogSchema: config.catalogSchema,
    owner: `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`,
    leaseMillis: config.sagas.leaseMillis,
    checkKey: (key) => void topology.bucketOf(key),
    execute: (key, sql, params) => router.execute(key, sql, params),
    idempotentExecute: <R extends QueryResultRow>(
      key: ShardKey,
      sql: string,
      params: readonly unknown[] | undefined,
      idempotencyKey: string,
    ) => router.execute<R>(key, sql, params, { idempotencyKey }) as Promise<IdempotentExecuteResult<R>>,
    transaction: (keys, work, options) => router.transaction(keys, work, options),
    shardIds: () => topology.members(),
    ownerOf: (key) => topology.shardFor(key),
    executeOn: (shardId, sql, params) => router.executeOn(shardId, sql, params),
    readOwned: (sql, keyColumn, params) => readOwned(config, topology, sql, keyColumn, params),
  };
}

/**
 * A read on every member, each guarded (on `keyColumn`) to the buckets it owns in the map it was
 * routed by, so a moved bucket's old copy counts once; read again after a stale map. The outbox's
 * and the saga log's status reads.
 */
function readOwned<R extends QueryResultRow>(
  config: ResolvedConfig,
  topology: Topology,
  sql: (guard: string) => string,
  keyColumn: string,
  params: readonly unknown[],
): Promise<{ shardId: string; rows: R[] }[]> {
  return topology.retryingStaleMap(() => {
    const { map, members } = topology.snapshot();
    const guard = movesGuardCondition(config.catalogSchema, keyColumn, topology.bucketCount, params.length + 1);
    return Promise.all(
      members.map(async (shardId) => {
        const { rows } = await topology.pool(shardId).query<R>(sql(guard), [...params, map.version], map.version);
        return { shardId, rows };
      }),
    );
  });
}
