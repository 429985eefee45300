import type { ShardKey } from '../placement/hash.js';
import type { DedicatedConnection } from '../pool/session.js';
import type { Transaction } from '../twopc/coordinator.js';

/** Where a lock key's bucket lives in one map version. */
export interface LockRoute {
  readonly shardId: string;
  readonly mapVersion: number;
}

/** The locks' port: what they need of the router (built in router/contexts.ts). */
export interface LockContext {
  readonly catalogSchema: string;
  bucketOf(key: string): number;
  /** The owner of `bucket` and the map version, read together. */
  route(bucket: number): LockRoute;
  /** A connection of its own to a shard (outside the pool). */
  openConnection(shardId: string): Promise<DedicatedConnection>;
  /** server_version_num of a shard (0 when unknown). */
  serverVersion(shardId: string): number;
  /** Runs `attempt` again on a refreshed map while it fails with STALE_BUCKET_MAP. */
  retryingStaleMap<T>(attempt: () => Promise<T>): Promise<T>;
  /** The router's transaction (routed by key, retried on a stale map). */
  transaction<T>(keys: readonly ShardKey[], work: (tx: Transaction) => Promise<T>): Promise<T>;
}
