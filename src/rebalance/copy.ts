import type { DedicatedConnection, Queryable } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import type { Transaction } from '../twopc/coordinator.js';
import { describeTable } from '../catalog/registries.js';
import type { TableShape } from '../catalog/registries.js';
import { q, quoteIdent } from '../sql.js';
import type { RebalanceContext } from './context.js';
import { LOCK_TOKENS_KEY, lockTokensShape } from './lock-space.js';

/**
 * The rows of a move: the snapshot copy, the catch-up rounds from the change log and the
 * sequence advance, all written into the target inside the switch transaction (I1, I2 in
 * move.ts). Rows travel as JSON: row_to_json on the source, json_populate_recordset on the
 * target, so every column type round-trips through its own text form.
 */

/** A sharded table as the copy sees it on the source. */
export interface TableCopy {
  readonly shape: TableShape;
  readonly keyColumn: string;
  readonly keyType: string;
}

/** One move's copy into the target, inside the switch transaction. */
export interface CopyJob {
  /** The rebalancer's connection to the source: reads the change log and the committed rows. */
  readonly source: DedicatedConnection;
  readonly tx: Transaction;
  readonly target: string;
  readonly schema: string;
  readonly moveId: string;
  readonly tables: readonly TableCopy[];
  readonly batchRows: number;
}

/** The sharded tables with their shape on the source. */
export async function tablesToCopy(context: RebalanceContext, source: Queryable): Promise<TableCopy[]> {
  const tables: TableCopy[] = [];
  for (const table of context.tables) {
    if (table.kind !== 'sharded') continue;
    const shape = await describeTable(source, table.table);
    if (!shape) throw new ShardRouterError('REBALANCE_CONFLICT', `registered table ${table.table} is missing on the source shard`);
    tables.push({ shape, keyColumn: table.shardKey!, keyType: shape.types.get(table.shardKey!)! });
  }
  // The fencing tokens of withLock move with their buckets too (docs/locks.md, L2).
  const tokens = await lockTokensShape(source, context.config.catalogSchema);
  if (tokens) tables.push({ shape: tokens, keyColumn: LOCK_TOKENS_KEY, keyType: 'text' });
  return tables;
}

/** SQL condition: the row's bucket is one of the array parameter $1. */
export function inBuckets(schema: string, table: TableCopy, bucketCount: number): string {
  return `${q(schema)}.bucket_of(${quoteIdent(table.keyColumn)}::text, ${bucketCount}) = ANY ($1::int[])`;
}

/** The snapshot copy's query: the rows of the buckets in $1, as JSON (through the bucket index where there is one). */
export function bucketRowsSql(schema: string, table: TableCopy, bucketCount: number): string {
  return `SELECT row_to_json(t)::text AS j FROM ${table.shape.name} t WHERE ${inBuckets(schema, table, bucketCount)}`;
}

/** The clean-up's statement: deletes the rows of the buckets in $1 (on the source, after the switch). */
export function deleteBucketRowsSql(schema: string, table: TableCopy, bucketCount: number): string {
  return `DELETE FROM ${table.shape.name} WHERE ${inBuckets(schema, table, bucketCount)}`;
}

/**
 * The snapshot copy of the moving buckets. The change log is emptied first: a change committed
 * before the snapshot is in it, one committed after is logged (the trigger predates both).
 */
export async function copySnapshot(
  job: CopyJob,
  snapshot: DedicatedConnection,
  buckets: readonly number[],
  bucketCount: number,
  onBatch: (rows: number, bytes: number) => void,
): Promise<void> {
  await job.source.query(`DELETE FROM ${q(job.schema)}.move_changes WHERE move_id = $1`, [job.moveId]);
  await snapshot.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  for (const table of job.tables) {
    await copyRows(snapshot, job, table, bucketRowsSql(job.schema, table, bucketCount), [buckets], onBatch);
  }
  await snapshot.query('COMMIT');
}

/** Copies the rows of `select` (JSON, on the snapshot connection's snapshot) into the target, in batches. */
async function copyRows(
  snapshot: DedicatedConnection,
  job: CopyJob,
  table: TableCopy,
  select: string,
  params: unknown[],
  onBatch: (rows: number, bytes: number) => void,
): Promise<void> {
  const cursor = quoteIdent(`psr_copy_${table.shape.oid}`);
  await snapshot.query(`DECLARE ${cursor} NO SCROLL CURSOR FOR ${select}`, params);
  const fetch = () => {
    const batch = snapshot.query<{ j: string }>(`FETCH ${job.batchRows} FROM ${cursor}`);
    batch.catch(() => undefined); // awaited below; this only keeps a failure during an INSERT from being unhandled
    return batch;
  };
  try {
    // The next batch is read on the source while this one is inserted on the target.
    let next = fetch();
    for (;;) {
      const { rows } = await next;
      if (rows.length === 0) break;
      const more = rows.length === job.batchRows;
      if (more) next = fetch();
      const json = `[${rows.map((row) => row.j).join(',')}]`;
      await job.tx.executeOn(job.target, insertJsonSql(table.shape), [json]);
      onBatch(rows.length, json.length);
      if (!more) break;
    }
  } finally {
    await snapshot.query(`CLOSE ${cursor}`).catch(() => undefined);
  }
}

/** INSERT of the rows of a JSON array (parameter $1) into a table of this shape. */
export function insertJsonSql(shape: TableShape): string {
  const columns = shape.insertColumns.map(quoteIdent).join(', ');
  const overriding = shape.hasAlwaysIdentity ? ' OVERRIDING SYSTEM VALUE' : '';
  return `INSERT INTO ${shape.name} (${columns})${overriding} SELECT ${columns} FROM json_populate_recordset(NULL::${shape.name}, $1::json)`;
}

/** Catch-up rounds while writes continue, until a round finds little to do (at most `threshold` keys, or 20 rounds). */
export async function catchUpWhileWriting(job: CopyJob, threshold: number): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const changed = await catchUp(job);
    if (changed <= threshold) break;
  }
}

/** Catch-up rounds until the change log is empty (at the cutover, where the buckets' writers wait). */
export async function catchUpAll(job: CopyJob): Promise<void> {
  while ((await catchUp(job)) > 0);
}

/**
 * One catch-up round: takes (and deletes) the logged changes, then re-copies the current rows
 * of those keys from the source (committed state) over the target's. Taking the log entries
 * before reading the rows means a change committed after the read is logged anew. Returns how
 * many distinct keys it handled.
 */
async function catchUp(job: CopyJob): Promise<number> {
  const { source, tx, target } = job;
  const { rows } = await source.query<{ table_name: string; key: string }>(
    `DELETE FROM ${q(job.schema)}.move_changes WHERE move_id = $1 RETURNING table_name, key`,
    [job.moveId],
  );
  if (rows.length === 0) return 0;
  let handled = 0;
  for (const table of job.tables) {
    const keys = [...new Set(rows.filter((row) => row.table_name === table.shape.name).map((row) => row.key))];
    for (let offset = 0; offset < keys.length; offset += job.batchRows) {
      const batch = keys.slice(offset, offset + job.batchRows);
      const match = `${quoteIdent(table.keyColumn)} = ANY ($1::text[]::${table.keyType}[])`;
      await tx.executeOn(target, `DELETE FROM ${table.shape.name} WHERE ${match}`, [batch]);
      const current = await source.query<{ j: string }>(`SELECT row_to_json(t)::text AS j FROM ${table.shape.name} t WHERE ${match}`, [
        batch,
      ]);
      if (current.rows.length > 0)
        await tx.executeOn(target, insertJsonSql(table.shape), [`[${current.rows.map((row) => row.j).join(',')}]`]);
    }
    handled += keys.length;
  }
  return handled;
}

/**
 * Moves the target's serial/identity sequences past the largest copied value, so ids it hands
 * out next cannot collide with the rows that just arrived (each shard has its own sequences).
 */
export async function advanceSequences(job: CopyJob): Promise<void> {
  for (const table of job.tables) {
    for (const { column, sequence } of table.shape.sequences) {
      const { rows } = await job.tx.executeOn<{ top: string | null }>(
        job.target,
        `SELECT max(${quoteIdent(column)})::text AS top FROM ${table.shape.name}`,
      );
      const top = rows[0]?.top;
      if (top === null || top === undefined) continue;
      await job.tx.executeOn(
        job.target,
        'SELECT setval($1::regclass, $2::bigint) WHERE $2::bigint > coalesce(pg_sequence_last_value($1::regclass), 0)',
        [sequence, top],
      );
    }
  }
}
