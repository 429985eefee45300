import { Broadcaster } from '../broadcast/broadcaster.js';
import { openCatalog } from '../catalog/catalog.js';
import { idsExtension } from '../ids/extension.js';
import { poolSessionSettings, resolveConfig } from '../config.js';
import type { ResolvedConfig, ShardRouterConfig } from '../config.js';
import { Observer } from '../observe/observer.js';
import { loadTracing } from '../observe/tracing.js';
import type { ShardSession } from '../pool/session.js';
import { ShardPool } from '../pool/shard-pool.js';
import type { CatalogExtension } from '../catalog/catalog.js';
import { idempotencyExtension } from '../idempotency/records.js';
import { outboxExtension } from '../outbox/schema.js';
import { lockTokensExtension } from '../rebalance/lock-space.js';
import { sagaLogExtension } from '../saga/log.js';
import { rebalanceExtension } from '../rebalance/schema.js';
import type { CoordinatorContext } from '../twopc/coordinator.js';
import { decisionLogExtension } from '../twopc/decision-log.js';
import { QueryEngine } from '../query/engine.js';
import { BackgroundRecovery } from './background-recovery.js';
import { broadcastContext, coordinatorContext, queryContext, recoveryContext } from './contexts.js';
import { Topology } from './topology.js';

/** What every shard's catalog gets from the layers, in order (the fence triggers of the library's sharded tables need the rebalancing functions). */
export const CATALOG_EXTENSIONS: readonly CatalogExtension[] = [
  decisionLogExtension,
  rebalanceExtension,
  idsExtension,
  lockTokensExtension,
  idempotencyExtension,
  sagaLogExtension,
  outboxExtension,
];

/** The parts a router is composed of. */
export interface RouterParts {
  readonly config: ResolvedConfig;
  readonly clusterId: string;
  readonly topology: Topology;
  readonly coordinator: CoordinatorContext;
  readonly recovery: BackgroundRecovery;
  readonly broadcaster: Broadcaster;
  readonly observer: Observer;
  readonly queries: QueryEngine;
}

/**
 * Connects: validates the config, opens one pool per configured shard, opens (or creates) the
 * catalog with the layers' extensions, and builds the engines over the resulting topology.
 * On failure every pool is closed again.
 */
export async function composeRouter(config: ShardRouterConfig): Promise<RouterParts> {
  const resolved = resolveConfig(config);
  const observer = new Observer(resolved.logger, await loadTracing(resolved.tracerProvider));
  const pools = new Map(
    resolved.shards.map((shard) => [
      shard.id,
      new ShardPool(shard, resolved.pool, resolved.applicationName, poolSessionSettings(resolved)),
    ]),
  );
  for (const shard of resolved.shards) pools.get(shard.id)!.observer = observer.pool(shard.id, shard.connectionString);
  try {
    const opened = await withOneSessionPerShard([...pools.values()], (sessions) => openCatalog(resolved, sessions, CATALOG_EXTENSIONS));
    // The topology tells the broadcaster when the table registry changes, and the coordinator
    // asks recovery for a pass soon: both are built after it, hence the late bindings.
    let broadcaster: Broadcaster | undefined;
    let recovery: BackgroundRecovery | undefined;
    let queries: QueryEngine | undefined;
    const topology = new Topology(
      resolved,
      pools,
      opened,
      () => {
        broadcaster?.forgetPlans();
        queries?.forget();
      },
      observer,
    );
    const coordinator = coordinatorContext(opened.clusterId, resolved, topology, (gid) => {
      observer.leftPrepared(gid);
      recovery?.soon();
    });
    broadcaster = await Broadcaster.open(broadcastContext(resolved, topology, coordinator), [...pools.values()]);
    const opener = broadcaster;
    queries = new QueryEngine(queryContext(resolved, topology, coordinator, () => opener, observer));
    // Last: its timers start at once, and nothing after it can fail.
    recovery = new BackgroundRecovery(recoveryContext(opened.clusterId, resolved, topology), resolved.recovery, observer);
    return { config: resolved, clusterId: opened.clusterId, topology, coordinator, recovery, broadcaster, observer, queries };
  } catch (error) {
    await Promise.all([...pools.values()].map((pool) => pool.close()));
    throw error;
  }
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
