import type { RegisteredTable, ShardedTableOptions, TableKind } from '../catalog/registries.js';
import type { ResolvedConfig } from '../config.js';
import { ShardRouterError } from '../errors.js';
import { createBucketIndexes } from '../rebalance/bucket-index.js';
import { registerOnShard } from '../rebalance/register-table.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { CoordinatorContext } from '../twopc/coordinator.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import type { Topology } from './topology.js';

/**
 * Registers a table on every shard in one two-phase commit (the same registry everywhere, or
 * none changed). The caller refreshes its map afterwards so it routes by the new registry.
 */
export async function registerTable(
  context: { readonly config: ResolvedConfig; readonly topology: Topology; readonly coordinator: CoordinatorContext },
  table: string,
  kind: TableKind,
  shardKey: string | undefined,
): Promise<RegisteredTable> {
  const { config, topology, coordinator } = context;
  if (typeof table !== 'string' || table === '') throw new ShardRouterError('INVALID_ARGUMENT', 'table must be a table name');
  const shardIds = topology.members().sort();
  topology.requirePreparedTransactions(shardIds);
  const options = resolveTransactionOptions(undefined, config.transactions);
  const schema = config.catalogSchema;
  const bucketCount = topology.bucketCount;
  const names = await runTransaction(coordinator, shardIds, shardIds[0]!, options, (tx) =>
    Promise.all(shardIds.map((shardId) => registerOnShard(tx, shardId, schema, bucketCount, table, kind, shardKey))),
  );
  if (new Set(names).size > 1)
    throw new ShardRouterError('INVALID_ARGUMENT', `table ${table} resolves to different tables on different shards: ${names.join(', ')}`);
  return { table: names[0]!, kind, shardKey };
}

/** registerShardedTable's options, checked before anything is written. */
export function checkShardedTableOptions(options: ShardedTableOptions): void {
  if (options === null || typeof options !== 'object' || !['undefined', 'boolean'].includes(typeof options.bucketIndex))
    throw new ShardRouterError('INVALID_ARGUMENT', 'options.bucketIndex must be a boolean');
}

/**
 * Builds a registered sharded table's bucket index on every member shard, after its
 * registration committed (CREATE INDEX CONCURRENTLY cannot run inside the registration's 2PC).
 */
export function buildBucketIndexes(
  context: { readonly config: ResolvedConfig; readonly topology: Topology },
  table: RegisteredTable,
): Promise<void> {
  const { config, topology } = context;
  const pools = topology
    .members()
    .sort()
    .map((shardId) => topology.pool(shardId));
  return createBucketIndexes(pools, config.catalogSchema, table.table, table.shardKey!, topology.bucketCount);
}
