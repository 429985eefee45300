import type { RegisteredTable, TableKind } from '../catalog/registries.js';
import type { ResolvedConfig } from '../config.js';
import { ShardRouterError } from '../errors.js';
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
