import type { BucketMap } from '../placement/bucket-map.js';
import { mapChannel } from '../catalog/map-channel.js';
import type { Transaction } from '../twopc/coordinator.js';
import type { RebalanceContext } from './context.js';
import { fenceFunctionDdl } from './schema.js';
import { q } from '../sql.js';

/**
 * The map switch, inside a transaction over all shards (two-phase commit): the new map version
 * on every shard (the primary key on version makes two concurrent switches from the same
 * version conflict, so one of them aborts), and the raised write fence on the shards that
 * lose buckets or must be re-learned (`fenced`).
 */
export async function switchMapIn(
  tx: Transaction,
  schema: string,
  shardIds: readonly string[],
  before: BucketMap,
  next: BucketMap,
  fenced: readonly string[],
): Promise<void> {
  if (next.version !== before.version + 1)
    throw new Error(`a map switch goes from version ${before.version} to ${before.version + 1}, not ${next.version}`);
  await Promise.all(
    shardIds.map(async (shardId) => {
      await tx.executeOn(shardId, `INSERT INTO ${q(schema)}.bucket_map (version, owners) VALUES ($1, $2)`, [next.version, next.owners]);
      if (fenced.includes(shardId)) await tx.executeOn(shardId, fenceFunctionDdl(schema, next.version));
    }),
  );
}

/**
 * Tells listening routers (NOTIFY cannot be part of a prepared transaction, so it follows the
 * commit). Best effort: routers also poll, and the fence catches the rest.
 */
export async function notifyMapChange(context: RebalanceContext, version: number): Promise<void> {
  await Promise.allSettled(
    context
      .shardIds()
      .map((shardId) => context.pool(shardId).query('SELECT pg_notify($1, $2)', [mapChannel(context.clusterId), String(version)])),
  );
}
