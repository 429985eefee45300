import type { QueryResultRow } from '../pool/session.js';
import type { ShardPool } from '../pool/shard-pool.js';
import type { Transaction as CoreTransaction } from '../twopc/coordinator.js';

/** One routing snapshot: the map version and what it says (docs/rebalance.md, I0). */
export interface OutboxRouting {
  readonly version: number;
  /** The cluster's members in that version. */
  readonly members: readonly string[];
  /** The owner of a key (as the outbox stores it: String(key)) in that version. */
  ownerOf(key: string): string;
}

/** What the outbox needs of the router (built in router/contexts.ts). */
export interface OutboxContext {
  readonly catalogSchema: string;
  readonly bucketCount: number;
  /** The NOTIFY channel that wakes consumers. */
  readonly channel: string;
  readonly retentionMillis: number;
  routing(): OutboxRouting;
  pool(shardId: string): ShardPool;
  /** Runs `attempt` again, on a refreshed map, while a shard's fence refuses it (STALE_BUCKET_MAP). */
  retryingStaleMap<T>(attempt: () => Promise<T>): Promise<T>;
  /**
   * A read on every member, `sql(guard)` limited by the guard (on `keyColumn`) to the buckets
   * the shard owns, so a moved bucket's old copy counts once; read again after a stale map.
   */
  readOwned<R extends QueryResultRow>(
    sql: (guard: string) => string,
    keyColumn: string,
    params: readonly unknown[],
  ): Promise<{ readonly shardId: string; readonly rows: R[] }[]>;
  /** One two-phase commit over every member (for the reference table of groups). */
  writeEverywhere(work: (tx: CoreTransaction, shardIds: readonly string[]) => Promise<void>): Promise<void>;
}

/** The outbox's NOTIFY channel of a cluster (a cluster id is a validated uuid). */
export function outboxChannel(clusterId: string): string {
  return `psr_outbox_${clusterId.replaceAll('-', '')}`;
}
