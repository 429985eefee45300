import { ShardRouterError } from '../errors.js';
import { describeTable } from '../catalog/registries.js';
import type { TableKind } from '../catalog/registries.js';
import { q } from '../sql.js';
import type { Transaction } from '../twopc/coordinator.js';
import { captureFunctionDdl, fenceTriggerName } from './schema.js';

/** Key column types whose ::text is exactly String(key) of the value the application routes by. */
const KEY_TYPES = /^(text|character varying(\(\d+\))?|smallint|integer|bigint|uuid)$/;

/**
 * Registers a table on one shard inside the caller's transaction: checks it exists with the
 * key column, records it, installs its fence trigger and (sharded tables) its move-capture
 * function. Returns the registry name. Registering again with the same definition is a no-op.
 */
export async function registerOnShard(
  tx: Transaction,
  shardId: string,
  schema: string,
  bucketCount: number,
  table: string,
  kind: TableKind,
  shardKey: string | undefined,
): Promise<string> {
  const shape = await describeTable(tx.on(shardId), table);
  if (!shape)
    throw new ShardRouterError('INVALID_ARGUMENT', `table ${table} does not exist on shard ${shardId}: create it on every shard first`, {
      shardId,
    });
  if (kind === 'sharded') {
    const type = shape.types.get(shardKey!);
    if (type === undefined)
      throw new ShardRouterError('INVALID_ARGUMENT', `table ${shape.name} on shard ${shardId} has no column "${shardKey}"`, { shardId });
    if (!KEY_TYPES.test(type)) {
      throw new ShardRouterError(
        'INVALID_ARGUMENT',
        `the shard key ${shape.name}.${shardKey} is ${type}; supported: text, varchar, smallint, integer, bigint, uuid (their text form is what the router hashes)`,
        { shardId },
      );
    }
  }
  const existing = await tx.executeOn<{ kind: TableKind; key_column: string | null }>(
    shardId,
    `SELECT kind, key_column FROM ${q(schema)}.tables WHERE table_name = $1`,
    [shape.name],
  );
  const before = existing.rows[0];
  if (before && (before.kind !== kind || (before.key_column ?? undefined) !== shardKey)) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `table ${shape.name} is already registered as ${before.kind}${before.key_column ? ` by ${before.key_column}` : ''}`,
    );
  }
  if (!before) {
    await tx.executeOn(shardId, `INSERT INTO ${q(schema)}.tables (table_name, kind, key_column) VALUES ($1, $2, $3)`, [
      shape.name,
      kind,
      shardKey ?? null,
    ]);
  }
  if (kind === 'sharded') await tx.executeOn(shardId, captureFunctionDdl(schema, shape.oid, shape.name, shardKey!, bucketCount));
  await tx.executeOn(
    shardId,
    `CREATE OR REPLACE TRIGGER ${fenceTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${shape.name}
       FOR EACH STATEMENT EXECUTE FUNCTION ${q(schema)}.write_fence()`,
  );
  return shape.name;
}
