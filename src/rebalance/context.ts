import type { CatalogExtension, ShardCapabilities } from '../catalog/catalog.js';
import type { RegisteredShard } from '../catalog/registries.js';
import type { ShardPool } from '../pool/shard-pool.js';
import type { ResolvedConfig, ResolvedShardConfig } from '../config.js';
import type { MoveObserver } from '../observe/hooks.js';
import type { BucketMap } from '../placement/bucket-map.js';
import type { CoordinatorContext } from '../twopc/coordinator.js';
import type { RegisteredTable } from '../catalog/registries.js';
import type { MoveOptions, RebalanceProgress } from './types.js';

/**
 * The rebalancer's port: what it needs of the router it works through (internal). The router
 * implements it; the rebalancer's operations take it as `context`.
 */
export interface RebalanceContext {
  readonly clusterId: string;
  readonly config: ResolvedConfig;
  readonly coordinator: CoordinatorContext;
  /** The layers' catalog extensions, installed on a shard being added (as at connect). */
  readonly extensions: readonly CatalogExtension[];
  /** The router's current map, tables and shard registry (refresh() updates them). */
  readonly map: BucketMap;
  readonly tables: readonly RegisteredTable[];
  readonly registeredShards: readonly RegisteredShard[];
  /** The cluster's members: every active shard, owning buckets or not. */
  shardIds(): string[];
  /** Every shard the cluster ever had, removed ones included (for verify, resume and recovery). */
  knownShardIds(): string[];
  pool(shardId: string): ShardPool;
  refresh(): Promise<BucketMap>;
  /** Opens (or returns) the router's pool for a shard being added. */
  addPool(shard: ResolvedShardConfig): ShardPool;
  setCapabilities(shardId: string, capabilities: ShardCapabilities): void;
  requirePreparedTransactions(shardIds: readonly string[]): void;
  /** Settles in-doubt prepared transactions now (no grace period). */
  recover(): Promise<unknown>;
  /** Told when a move starts, finishes or fails (metrics, logs); none: nothing is reported. */
  readonly observer?: MoveObserver;
}

/** One Rebalancer's context and the settings every one of its operations shares (internal). */
export interface RebalanceRun {
  readonly context: RebalanceContext;
  readonly moveOptions: MoveOptions;
  readonly bucketsPerMove: number;
  readonly onProgress: ((progress: RebalanceProgress) => void) | undefined;
}
