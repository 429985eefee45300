import { movesGuardCondition } from '../rebalance/schema.js';
import { q } from '../sql.js';
import type { OutboxContext } from './context.js';

/** Rows one retention statement deletes at most (bounded, so it never holds many locks or a long transaction). */
export const PURGE_BATCH = 1_000;

/**
 * SQL: the event is done for every group on record on this shard: acknowledged (seq at or below
 * the group's offset for the key), or outside the group's topics, or older than the group's start.
 */
export function doneForEveryGroup(schema: string, event: string): string {
  const s = q(schema);
  return `NOT EXISTS (SELECT 1 FROM ${s}.outbox_groups g
                       WHERE ${event}.topic = ANY (g.topics) AND ${event}.published_at >= g.starts_at
                         AND ${event}.seq > coalesce((SELECT o.acked_seq FROM ${s}.outbox_offsets o
                                                       WHERE o.group_name = g.group_name AND o.key = ${event}.key), 0))`;
}

/**
 * Deletes, on one shard, up to `batches` x PURGE_BATCH events that every group acknowledged and
 * that are older than the retention. Runs through a router connection stamped with its map
 * version and skips the rows of buckets the shard handed over but has not cleaned up yet, like a
 * broadcast read (so it never deletes where it does not own). Returns how many it deleted.
 */
export async function purgeShard(context: OutboxContext, shardId: string, batches = 10): Promise<number> {
  const s = q(context.catalogSchema);
  let deleted = 0;
  for (let batch = 0; batch < batches; batch++) {
    const count = await context.retryingStaleMap(async () => {
      const { version } = context.routing();
      const result = await context.pool(shardId).query(
        `DELETE FROM ${s}.outbox_events d USING (
           SELECT e.key, e.seq FROM (SELECT * FROM ${s}.outbox_events
                                      WHERE ${movesGuardCondition(context.catalogSchema, 'key', context.bucketCount, 3)}) e
            WHERE e.published_at < now() - $1 * interval '1 ms' AND ${doneForEveryGroup(context.catalogSchema, 'e')}
            LIMIT $2) x
          WHERE d.key = x.key AND d.seq = x.seq`,
        [context.retentionMillis, PURGE_BATCH, version],
        version,
      );
      return result.rowCount ?? 0;
    });
    deleted += count;
    if (count < PURGE_BATCH) break;
  }
  return deleted;
}
