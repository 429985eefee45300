import type { RawQueryResult } from '../pool/shard-pool.js';
import { ShardRouterError } from '../errors.js';
import type { ShardFailure } from './types.js';

/** What the shards answered, in shard order (so the merge is deterministic), and which failed (partial mode). */
export interface Scattered {
  readonly answered: RawQueryResult[];
  readonly failures: ShardFailure[];
}

/**
 * Runs `query` on every shard at once. A failure aborts `controller` (stopping the other shards'
 * work at once) and fails the whole scatter, unless `partial` is set: then it is collected in
 * `failures`, except a timeout or a stale map, which always fail the whole.
 */
export async function scatter(
  shardIds: readonly string[],
  query: (shardId: string) => Promise<RawQueryResult>,
  controller: AbortController,
  partial: boolean,
): Promise<Scattered> {
  const failures: ShardFailure[] = [];
  const answered: RawQueryResult[] = [];
  await Promise.all(
    shardIds.map(async (shardId) => {
      try {
        answered.push(await query(shardId));
      } catch (error) {
        const failure = asShardError(error, shardId);
        // A stale map is never a partial answer: the whole read runs again on the new map.
        // A cancel by the caller's signal ends the whole read too.
        const whole = failure.code === 'BROADCAST_TIMEOUT' || failure.code === 'STALE_BUCKET_MAP' || failure.code === 'STATEMENT_CANCELLED';
        if (whole || !partial) {
          // All or error: stop the other shards' work at once rather than wait for it.
          if (!controller.signal.aborted) controller.abort(failure);
          throw controller.signal.reason;
        }
        failures.push({ shardId, error: failure });
      }
    }),
  );
  // Shard order, not arrival order: the merge is then deterministic.
  answered.sort((a, b) => shardIds.indexOf(a.shardId) - shardIds.indexOf(b.shardId));
  return { answered, failures };
}

function asShardError(error: unknown, shardId: string): ShardRouterError {
  if (error instanceof ShardRouterError) return error;
  return new ShardRouterError('QUERY_FAILED', `shard ${shardId}: ${error instanceof Error ? error.message : String(error)}`, {
    shardId,
    cause: error,
  });
}
