import { ShardRouterError } from '../errors.js';
import type { LockStatus } from '../lock/types.js';
import type { Queryable } from '../pool/session.js';
import { LOCK_CLASS_ID } from '../rebalance/lock-space.js';
import type { PoolStats } from '../pool/shard-pool.js';
import { gidPrefix } from '../twopc/gid.js';
import type { RecoveryReport } from '../twopc/recovery.js';
import { listAllPrepared } from '../twopc/status.js';
import type { PreparedTransactionInfo } from '../twopc/status.js';
import type { ShardState, Topology } from './topology.js';

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
  /** withLock locks on this shard, from every process (pg_locks, our classid): granted and waiting. */
  readonly locks: { readonly held: number; readonly waiting: number };
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
  /** This router's withLock locks: held (with token and age) and waiting. */
  readonly locks: LockStatus;
}

/** Asks every shard the router has a pool for (removed ones included) for its prepared transactions. */
export async function shardStatuses(topology: Topology, clusterId: string): Promise<ShardStatus[]> {
  const prefix = gidPrefix(clusterId);
  const buckets = topology.map.bucketsPerShard();
  return Promise.all(
    topology.poolIds().map(async (shardId): Promise<ShardStatus> => {
      const pool = topology.pool(shardId);
      const capabilities = topology.capabilities(shardId);
      const base = {
        shardId,
        state: topology.stateOf(shardId),
        buckets: buckets.get(shardId) ?? 0,
        serverVersion: capabilities?.serverVersion ?? 0,
        maxPreparedTransactions: capabilities?.maxPreparedTransactions ?? 0,
      };
      try {
        const session = await pool.acquire();
        let preparedTransactions: PreparedTransactionInfo[];
        let locks: ShardStatus['locks'];
        try {
          preparedTransactions = await listAllPrepared(session, prefix);
          locks = await lockCounts(session);
        } finally {
          session.release();
        }
        // Counted after the release, so status' own connection does not show as borrowed.
        return { ...base, reachable: true, pool: pool.stats(), preparedTransactions, locks };
      } catch (error) {
        const message = error instanceof ShardRouterError ? `${error.code}: ${error.message}` : String(error);
        return { ...base, reachable: false, error: message, pool: pool.stats(), preparedTransactions: [], locks: { held: 0, waiting: 0 } };
      }
    }),
  );
}

/** withLock's advisory locks in this shard's database, granted and waiting (every process's). */
async function lockCounts(session: Queryable): Promise<ShardStatus['locks']> {
  const { rows } = await session.query<{ held: number; waiting: number }>(
    `SELECT count(*) FILTER (WHERE granted)::int AS held, count(*) FILTER (WHERE NOT granted)::int AS waiting
       FROM pg_locks
      WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
    [LOCK_CLASS_ID],
  );
  return { held: rows[0]?.held ?? 0, waiting: rows[0]?.waiting ?? 0 };
}
