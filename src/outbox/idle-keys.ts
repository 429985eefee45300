import { movesGuardCondition } from '../rebalance/schema.js';
import { q } from '../sql.js';
import type { OutboxContext } from './context.js';

/** Keys one collection statement removes at most (bounded, like retention). */
export const IDLE_KEYS_BATCH = 1_000;

/**
 * The statement that removes idle keys (docs/outbox.md, O8): a key with no event left on the
 * shard, no live lease and nothing parked carries no information any more, so its sequence row
 * and every group's offsets row go, in one statement (one transaction). Its next publish starts
 * again at seq 1 with every group at 0, which delivers it.
 *
 * Race with a publish: the key's row is deleted only if `last_seq` is still the value this
 * statement's snapshot saw. A publisher that bumped it first holds the row lock until it
 * commits; the DELETE waits, re-checks `last_seq` on the committed row (READ COMMITTED) and
 * leaves the key alone. A publisher that comes after the DELETE waits on the deleted row and
 * then inserts a fresh one, by which time the offsets are gone too (same transaction).
 */
function collectSql(schema: string, bucketCount: number): string {
  const s = q(schema);
  return `WITH idle AS (
       SELECT k.key, k.last_seq FROM (SELECT * FROM ${s}.outbox_keys WHERE ${movesGuardCondition(schema, 'key', bucketCount, 2)}) k
        WHERE NOT EXISTS (SELECT 1 FROM ${s}.outbox_events e WHERE e.key = k.key)
          AND NOT EXISTS (SELECT 1 FROM ${s}.outbox_offsets o
                           WHERE o.key = k.key AND (o.parked_seq IS NOT NULL OR o.lease_until >= now()))
        ORDER BY k.key LIMIT $1),
     gone AS (
       DELETE FROM ${s}.outbox_keys k USING idle i WHERE k.key = i.key AND k.last_seq = i.last_seq RETURNING k.key),
     offsets AS (
       DELETE FROM ${s}.outbox_offsets o USING gone g WHERE o.key = g.key RETURNING o.key)
     SELECT (SELECT count(*) FROM gone)::int AS keys, (SELECT count(*) FROM offsets)::int AS offsets, (SELECT count(*) FROM idle)::int AS seen`;
}

/**
 * Removes, on one shard, up to `batches` x IDLE_KEYS_BATCH idle keys with their offsets rows.
 * Through a router connection stamped with its map version and with the moves read guard, like
 * retention: a moving bucket's deletes are captured for the target, a shard that no longer owns a
 * bucket refuses (STALE_BUCKET_MAP) or skips its rows. Returns the keys and offsets rows removed.
 */
export async function collectIdleKeys(context: OutboxContext, shardId: string, batches = 10): Promise<{ keys: number; offsets: number }> {
  const sql = collectSql(context.catalogSchema, context.bucketCount);
  const total = { keys: 0, offsets: 0 };
  for (let batch = 0; batch < batches; batch++) {
    const row = await context.retryingStaleMap(async () => {
      const { version } = context.routing();
      const { rows } = await context
        .pool(shardId)
        .query<{ keys: number; offsets: number; seen: number }>(sql, [IDLE_KEYS_BATCH, version], version);
      return rows[0]!;
    });
    total.keys += row.keys;
    total.offsets += row.offsets;
    if (row.seen < IDLE_KEYS_BATCH) break;
  }
  return total;
}
