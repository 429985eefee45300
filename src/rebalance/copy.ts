import type { CopyOut, DedicatedConnection, Queryable } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import type { EngineTransaction } from '../twopc/coordinator.js';
import { describeTable } from '../catalog/registries.js';
import type { TableShape } from '../catalog/registries.js';
import { q, quoteIdent } from '../sql.js';
import type { RebalanceContext } from './context.js';
import { LOCK_TOKENS_KEY, lockTokensShape } from './lock-space.js';
import { rebalanceHooks } from './test-hooks.js';

/**
 * The rows of a move: the snapshot copy, the catch-up rounds from the change log and the
 * sequence advance, all written into the target inside the switch transaction (I1, I2 in
 * move.ts). Every column type round-trips through its own text form: the snapshot as COPY text
 * (a pipe from the source's COPY TO STDOUT into the target's COPY FROM STDIN), the catch-up's
 * few keys as JSON (row_to_json on the source, json_populate_recordset on the target), since
 * their key values must travel as parameters, which COPY cannot take.
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
  readonly tx: EngineTransaction;
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

/** SQL condition: the row's bucket is one of `buckets`, an SQL int[] (by default the parameter $1). */
export function inBuckets(schema: string, table: TableCopy, bucketCount: number, buckets = '$1::int[]'): string {
  return `${q(schema)}.bucket_of(${quoteIdent(table.keyColumn)}::text, ${bucketCount}) = ANY (${buckets})`;
}

/**
 * The buckets as an SQL int[] literal, for COPY, which takes no parameters: only numbers
 * checked to be bucket numbers of the map (integers 0..bucketCount-1) are written into it.
 */
export function bucketListLiteral(buckets: readonly number[], bucketCount: number): string {
  if (!Number.isSafeInteger(bucketCount) || bucketCount < 1)
    throw new ShardRouterError('INVALID_ARGUMENT', `bad bucket count ${bucketCount}`);
  for (const bucket of buckets) {
    if (!Number.isSafeInteger(bucket) || bucket < 0 || bucket >= bucketCount)
      throw new ShardRouterError('INVALID_ARGUMENT', `bad bucket ${String(bucket)} (the map has ${bucketCount})`);
  }
  return `'{${buckets.join(',')}}'::int[]`;
}

/** The snapshot copy's rows: those of `buckets`, in COPY FROM's column order (through the bucket index where there is one). */
export function bucketRowsSql(schema: string, table: TableCopy, bucketCount: number, buckets: readonly number[]): string {
  const columns = table.shape.insertColumns.map(quoteIdent).join(', ');
  const where = inBuckets(schema, table, bucketCount, bucketListLiteral(buckets, bucketCount));
  return `SELECT ${columns} FROM ${table.shape.name} t WHERE ${where}`;
}

/** The clean-up's statement: deletes the rows of the buckets in $1 (on the source, after the switch). */
export function deleteBucketRowsSql(schema: string, table: TableCopy, bucketCount: number): string {
  return `DELETE FROM ${table.shape.name} WHERE ${inBuckets(schema, table, bucketCount)}`;
}

/** The target's side of the pipe: COPY FROM STDIN into this table's columns (identity ones included: COPY overrides). */
export function copyInSql(shape: TableShape): string {
  return `COPY ${shape.name} (${shape.insertColumns.map(quoteIdent).join(', ')}) FROM STDIN`;
}

/**
 * The session settings that make the source's text unambiguous to any target, in the snapshot's
 * COPY text and in the catch-up's JSON alike: ISO dates (year first, read alike whatever the
 * target's DateStyle), ISO 8601 intervals, every float digit (servers before 12 round by
 * default), hex bytea. Sent in the startup packet of the move's own source connections (opened
 * and closed by the move), so every statement on them reads alike and none is spent setting them.
 */
export const SOURCE_TEXT_FORMS: Readonly<Record<string, string>> = Object.freeze({
  DateStyle: 'ISO',
  IntervalStyle: 'iso_8601',
  extra_float_digits: '3',
  bytea_output: 'hex',
});

/**
 * The snapshot copy of the moving buckets: each table's rows piped with `COPY (SELECT ...) TO
 * STDOUT` on one REPEATABLE READ snapshot of the source straight into `COPY ... FROM STDIN` in
 * the target's switch transaction, the bytes forwarded as they arrive (held back while the
 * target is slower). The change log is emptied first: a change committed before the snapshot is
 * in it, one committed after is logged (the trigger predates both). Tables that are empty in
 * the snapshot are skipped: their copy would be empty (the library's tables often are, and each
 * pipe costs a few round trips on both sides).
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
  // The snapshot's first statement: it is taken here, so the emptiness test belongs to it.
  const filled = job.tables.map((table) => `EXISTS (SELECT FROM ${table.shape.name})`).join(', ');
  const { rows } = await snapshot.query<{ filled: boolean[] }>(`SELECT ARRAY[${filled}]::boolean[] AS filled`);
  const nonEmpty = job.tables.filter((_, index) => rows[0]?.filled[index] !== false);
  for (const table of nonEmpty) {
    const out = snapshot.copyOut(`COPY (${bucketRowsSql(job.schema, table, bucketCount, buckets)}) TO STDOUT`);
    try {
      const copied = await job.tx.copyInOn(
        job.target,
        copyInSql(table.shape),
        counted(out, job.moveId, (bytes) => onBatch(0, bytes)),
      );
      onBatch(copied, 0);
    } finally {
      out.abort(); // only if the target failed first: the source then stops too
    }
  }
  await snapshot.query('COMMIT');
}

/** `out`, reporting the bytes of each batch read (and running the test hook there). */
function counted(out: CopyOut, moveId: string, onBytes: (bytes: number) => void): CopyOut {
  return {
    read: async () => {
      const batch = await out.read();
      if (batch !== null) {
        onBytes(batch.length);
        await rebalanceHooks.copyBatch?.(moveId);
      }
      return batch;
    },
    abort: () => out.abort(),
    get rows() {
      return out.rows;
    },
  };
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
