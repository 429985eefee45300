import { installCatalog, probeCapabilities, readIdentity } from '../catalog/catalog.js';
import { describeTable, ensureRegistries, registryNameParts } from '../catalog/registries.js';
import type { RegisteredTable } from '../catalog/registries.js';
import type { Queryable } from '../pool/session.js';
import type { ShardPool } from '../pool/shard-pool.js';
import { urlWithoutPassword } from '../config.js';
import type { ResolvedShardConfig } from '../config.js';
import { ShardRouterError } from '../errors.js';
import { assignSlotIn } from '../ids/slots.js';
import { BucketMap } from '../placement/bucket-map.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { Transaction } from '../twopc/coordinator.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import type { RebalanceContext, RebalanceRun } from './context.js';
import { insertJsonSql } from './copy.js';
import { notifyMapChange, switchMapIn } from './map-switch.js';
import { bucketIndexDdl, bucketIndexState } from './bucket-index.js';
import { registerOnShard } from './register-table.js';
import { planMoves, runPlan } from './run-plan.js';
import type { AddShardReport, RebalanceReport } from './types.js';
import { q } from '../sql.js';

/**
 * Adding and removing shards. A new shard joins owning no buckets (a rebalance then gives it
 * some); a removed one is first drained by moves, then marked removed. Both end in a map switch
 * over all shards, so every router learns of the change.
 */

/** Rows per INSERT when a reference table is copied to a new shard. */
const REFERENCE_BATCH_ROWS = 2_000;

/** Adds a shard (see Rebalancer.addShard), holding the rebalance lock unless a dry run. */
export async function addShard(context: RebalanceContext, shard: ResolvedShardConfig, dryRun: boolean): Promise<AddShardReport> {
  await context.refresh();
  const registered = context.registeredShards.find((entry) => entry.shardId === shard.id);
  if (registered)
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `shard id ${shard.id} is already ${registered.state === 'active' ? 'in' : 'removed from'} the cluster`,
    );
  const pool = context.addPool(shard);
  const ready = await prepareNewShard(context, pool, shard, dryRun);
  if (!ready) return { shardId: shard.id, dryRun: true, referenceRows: {}, mapVersion: context.map.version };
  const { referenceRows, mapVersion } = await joinCluster(context, shard);
  await pool.query(`UPDATE "${context.config.catalogSchema}".shard_identity SET complete = true WHERE NOT complete`, []);
  await notifyMapChange(context, mapVersion);
  await context.refresh();
  return { shardId: shard.id, dryRun: false, referenceRows, mapVersion };
}

/**
 * Checks the new shard (reachable, not another cluster's, the registered tables there) and,
 * unless a dry run, installs the catalog on it. Returns false for a dry run.
 */
async function prepareNewShard(context: RebalanceContext, pool: ShardPool, shard: ResolvedShardConfig, dryRun: boolean): Promise<boolean> {
  const schema = context.config.catalogSchema;
  const session = await pool.acquire();
  try {
    const capabilities = await probeCapabilities(session);
    const identity = await readIdentity(session, schema);
    if (identity && (identity.clusterId !== context.clusterId || identity.shardId !== shard.id)) {
      throw new ShardRouterError(
        'SHARD_IDENTITY_MISMATCH',
        `${shard.displayUrl} already is shard ${identity.shardId} of cluster ${identity.clusterId}`,
        {
          shardId: shard.id,
        },
      );
    }
    await checkTablesOnNewShard(context, session, shard.id);
    if (dryRun) return false;
    context.setCapabilities(shard.id, capabilities);
    const before = context.map;
    await installCatalog(
      session,
      schema,
      { clusterId: context.clusterId, shardId: shard.id, bucketCount: before.bucketCount, complete: false },
      before,
    );
    await ensureRegistries(session, schema);
    for (const extension of context.extensions) await extension.ensure(session, schema);
    return true;
  } finally {
    session.release();
  }
}

/** Checks that every registered table exists on a new shard with the same columns, and that its sharded tables are empty. */
async function checkTablesOnNewShard(context: RebalanceContext, session: Queryable, shardId: string): Promise<void> {
  const reference = context.shardIds()[0]!;
  const referenceSession = context.pool(reference);
  const problems: string[] = [];
  for (const table of context.tables) {
    // The library's own tables (idempotency records, the outbox's) live in the catalog schema: the extensions install them.
    if (registryNameParts(table.table)[0] === context.config.catalogSchema) continue;
    const shape = await describeTable(session, table.table);
    if (!shape) {
      problems.push(`${table.table} does not exist`);
      continue;
    }
    const expected = await describeTable(referenceSession, table.table);
    const differs = expected && [...expected.types].some(([column, type]) => shape.types.get(column) !== type);
    if (differs || shape.types.size !== expected?.types.size)
      problems.push(`${table.table} has different columns than on shard ${reference}`);
    if (table.kind === 'sharded') {
      const { rows } = await session.query<{ any: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${shape.name}) AS any`);
      if (rows[0]?.any) problems.push(`${table.table} is not empty (a new shard's sharded tables must be)`);
    }
  }
  if (problems.length > 0) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `shard ${shardId} is not ready: ${problems.join('; ')}. Create the registered tables on it first (run your migrations against it)`,
      { shardId },
    );
  }
}

/**
 * One transaction over all shards, the new one included: its tables registered, the reference
 * tables copied to it, every shard registry told, and a new map version (same owners).
 */
async function joinCluster(
  context: RebalanceContext,
  shard: ResolvedShardConfig,
): Promise<{ referenceRows: Record<string, number>; mapVersion: number }> {
  const schema = context.config.catalogSchema;
  const existing = context.shardIds().sort();
  const all = [...existing, shard.id].sort();
  context.requirePreparedTransactions(all);
  const before = context.map;
  const next = BucketMap.fromOwners(before.version + 1, before.owners);
  const options2pc = resolveTransactionOptions({ timeoutMillis: 600_000 }, context.config.transactions);
  const referenceRows = await runTransaction(context.coordinator, all, existing[0]!, options2pc, async (tx) => {
    const copied: Record<string, number> = {};
    for (const table of context.tables) {
      await registerOnShard(tx, shard.id, schema, before.bucketCount, table.table, table.kind, table.shardKey);
      if (table.kind === 'sharded') await copyBucketIndex(tx, existing, shard.id, schema, table, before.bucketCount);
      if (table.kind !== 'reference') continue;
      const rows = await copyReferenceTable(tx, existing[0]!, shard.id, table);
      // The report lists the application's tables; the library's own (catalog schema) are copied silently.
      if (registryNameParts(table.table)[0] !== schema) copied[table.table] = rows;
    }
    await addToShardRegistries(tx, context, shard, all);
    // Its id slot commits with its membership: a shard never issues ids without one of its own.
    await assignSlotIn(tx, schema, existing, shard.id);
    await switchMapIn(tx, schema, all, before, next, existing);
    return copied;
  });
  return { referenceRows, mapVersion: next.version };
}

/**
 * A sharded table with a bucket index on an existing shard gets one on the new shard too. Its
 * table is empty there (checked before), so a plain CREATE INDEX inside the join is instant.
 */
async function copyBucketIndex(
  tx: Transaction,
  existing: readonly string[],
  newShard: string,
  schema: string,
  table: RegisteredTable,
  bucketCount: number,
): Promise<void> {
  for (const shardId of existing) {
    if ((await bucketIndexState(tx.on(shardId), schema, table.table)) !== 'valid') continue;
    await tx.executeOn(newShard, bucketIndexDdl(schema, table.table, table.shardKey!, bucketCount, false));
    return;
  }
}

/** Copies a reference table's rows from `from` to the new shard `to`; returns how many. */
async function copyReferenceTable(tx: Transaction, from: string, to: string, table: RegisteredTable): Promise<number> {
  // Reference writes wait for this lock on the copy's source; the raised fences then
  // refuse the ones routed without the new shard, so none can miss it.
  await tx.executeOn(from, `LOCK TABLE ${table.table} IN SHARE MODE`);
  const { rows } = await tx.executeOn<{ j: string }>(from, `SELECT row_to_json(r)::text AS j FROM ${table.table} r`);
  await tx.executeOn(to, `DELETE FROM ${table.table}`);
  const shape = (await describeTable(tx.on(to), table.table))!;
  for (let offset = 0; offset < rows.length; offset += REFERENCE_BATCH_ROWS) {
    const json = `[${rows
      .slice(offset, offset + REFERENCE_BATCH_ROWS)
      .map((row) => row.j)
      .join(',')}]`;
    await tx.executeOn(to, insertJsonSql(shape), [json]);
  }
  return rows.length;
}

/**
 * Every shard's registry lists every shard that ever joined: the new one gets the whole
 * registry (removed shards included), the others the new shard's row.
 */
async function addToShardRegistries(
  tx: Transaction,
  context: RebalanceContext,
  shard: ResolvedShardConfig,
  all: readonly string[],
): Promise<void> {
  const rows = [
    ...context.registeredShards,
    { shardId: shard.id, url: urlWithoutPassword(shard.connectionString), state: 'active' as const },
  ];
  await Promise.all(
    all.map((shardId) => {
      const added = shardId === shard.id ? rows : rows.slice(-1);
      return tx.executeOn(
        shardId,
        `INSERT INTO "${context.config.catalogSchema}".shards (shard_id, url, state) SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT (shard_id) DO NOTHING`,
        [added.map((row) => row.shardId), added.map((row) => row.url), added.map((row) => row.state)],
      );
    }),
  );
}

/** The active shards, once `shardId` is checked to be one that can be removed. */
export function removableShards(context: RebalanceContext, shardId: string): string[] {
  const active = context.shardIds();
  if (!active.includes(shardId)) throw new ShardRouterError('INVALID_ARGUMENT', `unknown or removed shard "${String(shardId)}"`);
  if (active.length === 1) throw new ShardRouterError('INVALID_ARGUMENT', 'the last shard cannot be removed');
  return active;
}

/** Removes a shard (see Rebalancer.removeShard): moves its buckets to the others, then marks it removed. */
export async function removeShard(
  run: RebalanceRun,
  shardId: string,
  active: readonly string[],
  dryRun: boolean,
): Promise<RebalanceReport> {
  const remaining = active.filter((id) => id !== shardId);
  const plan = await planMoves(run, remaining, 'count');
  const report = await runPlan(run, plan, dryRun);
  if (dryRun) return report;
  const { context } = run;
  const schema = context.config.catalogSchema;
  const before = await context.refresh();
  if (before.owners.includes(shardId))
    throw new ShardRouterError('REBALANCE_CONFLICT', `shard ${shardId} still owns buckets after draining it`);
  const next = BucketMap.fromOwners(before.version + 1, before.owners);
  const all = [...active].sort();
  await runTransaction(
    context.coordinator,
    all,
    remaining.sort()[0]!,
    resolveTransactionOptions(undefined, context.config.transactions),
    async (tx) => {
      await Promise.all(
        all.map((id) => tx.executeOn(id, `UPDATE ${q(schema)}.shards SET state = 'removed' WHERE shard_id = $1`, [shardId])),
      );
      await switchMapIn(tx, schema, all, before, next, [shardId]);
    },
  );
  await notifyMapChange(context, next.version);
  const after = await context.refresh();
  return { ...report, mapVersion: after.version, bucketsPerShard: Object.fromEntries(after.bucketsPerShard()) };
}
