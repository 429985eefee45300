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
 * default), hex bytea. SET LOCAL on the snapshot; for the session on the catch-up's connection
 * (the move's own, closed with it).
 */
const TEXT_FORMS = [
  ['DateStyle', 'ISO'],
  ['IntervalStyle', 'iso_8601'],
  ['extra_float_digits', '3'],
  ['bytea_output', 'hex'],
] as const;

/** set_config calls for TEXT_FORMS, for the transaction (SET LOCAL) or the session. */
function textForms(scope: 'transaction' | 'session'): string {
  return TEXT_FORMS.map(([name, value]) => `set_config('${name}', '${value}', ${scope === 'transaction'})`).join(', ');
}

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
  // The catch-up reads rows as JSON on this connection: the same text forms, for its session.
  await job.source.query(`SELECT ${textForms('session')}`);
  await job.source.query(`DELETE FROM ${q(job.schema)}.move_changes WHERE move_id = $1`, [job.moveId]);
  await snapshot.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  // The snapshot's first statement: it is taken here, so the emptiness test belongs to it.
  const filled = job.tables.map((table) => `EXISTS (SELECT FROM ${table.shape.name})`).join(', ');
  const { rows } = await snapshot.query<{ filled: boolean[] }>(`SELECT ${textForms('transaction')}, ARRAY[${filled}]::boolean[] AS filled`);
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
 * What a catch-up round's source statement returns: a changed key of table `t` (its index in
 * job.tables) with the number of log entries taken, or a current row of table `t`.
 */
interface TakenChange {
  readonly t: number | null;
  readonly key: string | null;
  readonly taken: number | null;
  readonly j: string | null;
}

/**
 * The source's side of a catch-up round in one statement: takes (deletes) the move's logged
 * changes and returns their distinct keys, and, when it took at most $2 entries, the current
 * rows of those keys too (as JSON), read in the same statement's snapshot. A change whose log
 * entry is taken committed before that snapshot, so its row is read with its effect; one
 * committed later keeps its entry for the next round. Only the rebalancer deletes log entries
 * (never updated), so the DELETE waits on no writer. $3 names the tables, in job.tables order.
 */
function takeChangesSql(schema: string, tables: readonly TableCopy[]): string {
  const rows = tables.map(
    (table, index) =>
      `SELECT ${index} AS t, NULL::text AS key, NULL::int AS taken, row_to_json(r)::text AS j FROM ${table.shape.name} r
        WHERE (SELECT count(*) FROM taken) <= $2
          AND ${quoteIdent(table.keyColumn)} = ANY (ARRAY(SELECT key FROM taken WHERE table_name = ($3::text[])[${index + 1}])::${table.keyType}[])`,
  );
  return `WITH taken AS (DELETE FROM ${q(schema)}.move_changes WHERE move_id = $1 RETURNING table_name, key)
    SELECT array_position($3::text[], table_name) - 1 AS t, key, (SELECT count(*) FROM taken)::int AS taken, NULL::text AS j
      FROM (SELECT DISTINCT table_name, key FROM taken) k
    ${rows.map((row) => `UNION ALL ${row}`).join('\n    ')}`;
}

/**
 * The target's side for one table, in one statement: deletes the rows of the keys in $1, then
 * inserts the JSON rows in $2. The insert's one-time filter reads the DELETE to its end before
 * the first row goes in (a data-modifying WITH runs when it is read), and rows this transaction
 * deleted do not count against a unique index, so a key's new row replaces its old one.
 */
function replaceRowsSql(table: TableCopy): string {
  const columns = table.shape.insertColumns.map(quoteIdent).join(', ');
  const overriding = table.shape.hasAlwaysIdentity ? ' OVERRIDING SYSTEM VALUE' : '';
  const name = table.shape.name;
  return `WITH gone AS (DELETE FROM ${name} WHERE ${quoteIdent(table.keyColumn)} = ANY ($1::text[]::${table.keyType}[]) RETURNING 1)
    INSERT INTO ${name} (${columns})${overriding}
    SELECT ${columns} FROM json_populate_recordset(NULL::${name}, $2::json) WHERE (SELECT count(*) FROM gone) >= 0`;
}

/**
 * One catch-up round: takes (and deletes) the logged changes, then replaces the target's rows
 * of those keys with the source's current ones (committed state). Taking the log entries no
 * later than reading the rows means a change committed after the read is logged anew. A round
 * that took at most batchRows entries costs one statement on the source and one per changed
 * table on the target; a larger one reads the rows in batches of batchRows keys. Returns how
 * many distinct keys it handled.
 */
async function catchUp(job: CopyJob): Promise<number> {
  const { source, tx, target, tables } = job;
  const names = tables.map((table) => table.shape.name);
  const { rows } = await source.query<TakenChange>(takeChangesSql(job.schema, tables), [job.moveId, job.batchRows, names]);
  // The statement read the rows when it took at most batchRows entries (then each table has at most that many keys).
  const readWithLog = (rows[0]?.taken ?? 0) <= job.batchRows;
  let handled = 0;
  for (const [index, table] of tables.entries()) {
    const keys = rows.filter((row) => row.t === index && row.key !== null).map((row) => row.key!);
    if (keys.length === 0) continue;
    const read = readWithLog ? rows.filter((row) => row.t === index && row.j !== null).map((row) => row.j!) : undefined;
    for (let offset = 0; offset < keys.length; offset += job.batchRows) {
      const batch = keys.slice(offset, offset + job.batchRows);
      const json = read ?? (await readRows(source, table, batch));
      await tx.executeOn(target, replaceRowsSql(table), [batch, `[${json.join(',')}]`]);
    }
    handled += keys.length;
  }
  return handled;
}

/** The current rows of `keys` on the source, as JSON (rounds too large to read with the log). */
async function readRows(source: Queryable, table: TableCopy, keys: readonly string[]): Promise<string[]> {
  const match = `${quoteIdent(table.keyColumn)} = ANY ($1::text[]::${table.keyType}[])`;
  const { rows } = await source.query<{ j: string }>(`SELECT row_to_json(t)::text AS j FROM ${table.shape.name} t WHERE ${match}`, [keys]);
  return rows.map((row) => row.j);
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
