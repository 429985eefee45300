import { randomBytes } from 'node:crypto';
import type { DedicatedConnection, Queryable } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import { BucketMap } from '../placement/bucket-map.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { Transaction } from '../twopc/coordinator.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import type { ClusterAccess } from './cluster-access.js';
import { notifyMapChange, switchMapIn } from './map-switch.js';
import { describeTable } from '../catalog/registries.js';
import type { TableShape } from '../catalog/registries.js';
import { ROLE_SETTING, captureFunctionName, captureTriggerName } from './schema.js';
import { q, quoteIdent } from '../sql.js';
import { rebalanceHooks } from './test-hooks.js';
import type { MoveStep } from './test-hooks.js';

/**
 * One move: a set of buckets from a source shard to a target shard, as a persisted state
 * machine (docs/rebalance.md has the full argument). The invariants:
 *
 * I1. Until the map switch commits, the source owns the buckets and holds every acknowledged
 *     write to them; the target's copy lives in one open transaction on the target, invisible,
 *     and dies with the rebalancer (so a crash before the switch leaves nothing to undo there).
 * I2. The switch is one two-phase commit over all shards: the target's copy (snapshot +
 *     catch-up + the final catch-up taken while the buckets' writers wait), the new map version
 *     on every shard, the source's raised write fence and the move row's 'switched' state.
 * I3. Every write to a moving bucket on the source either commits before the cutover locks the
 *     move row (and is then in the snapshot or the change log, so in the copy), or waits for
 *     that lock and is refused afterwards (STALE_BUCKET_MAP; the router retries on the target).
 * I4. The source's rows are deleted only after every transaction older than the switch has
 *     ended there, so no statement that began under the old map can still write them.
 */

export interface MoveProgress {
  readonly moveId: string;
  readonly buckets: readonly number[];
  readonly source: string;
  readonly target: string;
  /**
   * Where the move is: 'copying' and 'catching-up' repeat while rows flow; every MOVE_STEPS
   * step is reported once it is reached ('switched': the target owns the buckets, the source's
   * rows are not yet deleted); 'done' when the move is closed.
   */
  readonly step: MoveStep | 'copying' | 'catching-up' | 'done';
  /** True for a move left open by an earlier rebalancer and finished or restarted by a resume. */
  readonly resumed: boolean;
  readonly rowsCopied: number;
  readonly bytesCopied: number;
}

export interface MoveOptions {
  /** lock_timeout of the cutover's lock on the move row; on timeout it is tried again. */
  readonly cutoverLockTimeoutMillis: number;
  /** How many times the cutover lock is tried before the move gives up (and is undone). */
  readonly cutoverAttempts: number;
  /** Catch-up rounds stop when one finds at most this many changed keys. */
  readonly catchUpThreshold: number;
  /** Rows per copy batch. */
  readonly batchRows: number;
  /** How long to wait for transactions older than the switch before deleting the source rows. */
  readonly drainTimeoutMillis: number;
  onProgress?(progress: MoveProgress): void;
}

export interface MoveReport {
  readonly moveId: string;
  readonly buckets: readonly number[];
  readonly source: string;
  readonly target: string;
  readonly rowsCopied: number;
  readonly bytesCopied: number;
  /** How long writes to the moving buckets waited at the cutover (lock taken to switch committed). */
  readonly pauseMillis: number;
  readonly copyMillis: number;
  readonly mapVersion: number;
}

/** A move row as stored on its source shard. */
export interface StoredMove {
  readonly moveId: string;
  readonly buckets: number[];
  readonly source: string;
  readonly target: string;
  readonly state: 'copying' | 'switched' | 'done' | 'undone';
  readonly mapVersion: number | null;
}

const COPY_TIMEOUT_MS = 3_600_000;
/** How long the rebalancer keeps trying to take its table locks before it gives up. */
const DDL_RETRY_BUDGET_MS = 60_000;
/** The longest a lock request of the rebalancer waits (shorter when the server's deadlock_timeout is short). */
const DDL_LOCK_TIMEOUT_MS = 200;

async function step(name: MoveStep, moveId: string): Promise<void> {
  await rebalanceHooks.step?.(name, moveId);
}

/** Open (copying or switched) moves recorded on one shard. */
export async function readOpenMoves(client: Queryable, schema: string): Promise<StoredMove[]> {
  const { rows } = await client.query<{ move_id: string; buckets: number[]; source_shard: string; target_shard: string; state: StoredMove['state']; map_version: string | null }>(
    `SELECT move_id, buckets, source_shard, target_shard, state, map_version::text FROM ${q(schema)}.moves WHERE state IN ('copying', 'switched') ORDER BY started_at`,
  );
  return rows.map((row) => ({
    moveId: row.move_id,
    buckets: row.buckets,
    source: row.source_shard,
    target: row.target_shard,
    state: row.state,
    mapVersion: row.map_version === null ? null : Number(row.map_version),
  }));
}

interface TableCopy {
  readonly shape: TableShape;
  readonly keyColumn: string;
  readonly keyType: string;
}

/**
 * Runs a move from the start (or restarts one left in 'copying' by a crashed rebalancer, given
 * its stored row) through cleanup.
 */
export async function runMove(
  access: ClusterAccess,
  request: { buckets: readonly number[]; source: string; target: string; resume?: StoredMove },
  options: MoveOptions,
): Promise<MoveReport> {
  const { source, target } = request;
  const buckets = [...request.buckets].sort((a, b) => a - b);
  const schema = access.config.catalogSchema;
  const bucketCount = access.map.bucketCount;
  const moveId = request.resume?.moveId ?? `m${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
  let rowsCopied = 0;
  let bytesCopied = 0;
  const resumed = request.resume !== undefined;
  const report = (stepName: MoveProgress['step']) =>
    options.onProgress?.({ moveId, buckets, source, target, step: stepName, rowsCopied, bytesCopied, resumed });
  const reached = async (name: MoveStep) => {
    report(name);
    await step(name, moveId);
  };

  const sourceLog = await access.pool(source).openDedicated({ [ROLE_SETTING]: 'rebalancer' }, 'rebalancer');
  const sourceSnapshot = await access.pool(source).openDedicated({ [ROLE_SETTING]: 'rebalancer' }, 'rebalancer');
  try {
    // A move's lease: held by whoever runs it, released by the server if that process dies.
    const lease = await sourceLog.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', [MOVE_LOCK_CLASS, moveId]);
    if (!lease.rows[0]?.locked) throw new ShardRouterError('REBALANCE_CONFLICT', `move ${moveId} is being run by another rebalancer`);

    const tables = await tablesToCopy(access, sourceLog);
    if (!request.resume) await recordMove(sourceLog, schema, moveId, buckets, source, target);
    // Also on a resume: a rebalancer that died while installing them may have left some out.
    await installCaptureTriggers(sourceLog, schema, tables);
    if (!request.resume) await reached('started');

    const copyStarted = Date.now();
    let pauseStarted = 0;
    const allShards = [...access.shardIds()].sort();
    access.requirePreparedTransactions(allShards);
    const transactionOptions = resolveTransactionOptions(
      { timeoutMillis: COPY_TIMEOUT_MS, lockTimeoutMillis: options.cutoverLockTimeoutMillis },
      access.config.transactions,
    );
    const before = await access.refresh();
    for (const bucket of buckets) {
      if (before.ownerOf(bucket) !== source) throw new ShardRouterError('REBALANCE_CONFLICT', `bucket ${bucket} is owned by ${before.ownerOf(bucket)}, not ${source}`);
    }
    let mapVersion = 0;
    await runTransaction(access.coordinator, allShards, target, transactionOptions, async (tx) => {
      // Snapshot copy. The change log is emptied first: a change committed before the
      // snapshot is in it, one committed after is logged (the trigger predates both).
      report('copying');
      await sourceLog.query(`DELETE FROM ${q(schema)}.move_changes WHERE move_id = $1`, [moveId]);
      await sourceSnapshot.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      for (const table of tables) {
        const where = `${q(schema)}.bucket_of(${quoteIdent(table.keyColumn)}::text, ${bucketCount}) = ANY ($1::int[])`;
        await copyRows(sourceSnapshot, tx, target, table, where, [buckets], options.batchRows, (rows, bytes) => {
          rowsCopied += rows;
          bytesCopied += bytes;
          report('copying');
        });
      }
      await sourceSnapshot.query('COMMIT');
      await reached('copied');

      // Catch up while writes continue, until a round finds little to do.
      report('catching-up');
      for (let round = 0; round < 20; round++) {
        const changed = await catchUp(sourceLog, tx, target, schema, moveId, tables, options.batchRows);
        if (changed <= options.catchUpThreshold) break;
      }
      await reached('caught-up');

      // Cutover: lock the move row. Writers of these buckets that already passed the capture
      // trigger hold FOR SHARE on it, so this waits for them; new ones wait behind it.
      await lockMoveRow(tx, source, schema, moveId, options);
      pauseStarted = Date.now();
      await reached('paused');
      while ((await catchUp(sourceLog, tx, target, schema, moveId, tables, options.batchRows)) > 0);

      await advanceSequences(tx, target, tables);
      const owners = [...before.owners];
      for (const bucket of buckets) owners[bucket] = target;
      const next = BucketMap.fromOwners(before.version + 1, owners);
      mapVersion = next.version;
      await tx.executeOn(source, `UPDATE ${q(schema)}.moves SET state = 'switched', map_version = $2, rows_copied = $3, bytes_copied = $4, updated_at = now() WHERE move_id = $1`, [
        moveId,
        next.version,
        rowsCopied,
        bytesCopied,
      ]);
      await switchMapIn(tx, schema, allShards, before, next, [source]);
      await reached('before-switch');
    });
    const pauseMillis = Date.now() - pauseStarted;
    await reached('switched');
    await notifyMapChange(access, mapVersion);
    await access.refresh();
    await finishSwitched(access, sourceLog, { moveId, buckets, source, target, state: 'switched', mapVersion }, tables, { ...options, onStep: reached });
    report('done');
    return { moveId, buckets, source, target, rowsCopied, bytesCopied, pauseMillis, copyMillis: pauseStarted - copyStarted, mapVersion };
  } finally {
    await sourceSnapshot.end().catch(() => undefined);
    await sourceLog.end().catch(() => undefined);
  }
}

/** Advisory-lock class of move leases ("PSRM"). */
export const MOVE_LOCK_CLASS = 0x5053524d;

/** The sharded tables with their shape on the source. */
export async function tablesToCopy(access: ClusterAccess, source: Queryable): Promise<TableCopy[]> {
  const tables: TableCopy[] = [];
  for (const table of access.tables) {
    if (table.kind !== 'sharded') continue;
    const shape = await describeTable(source, table.table);
    if (!shape) throw new ShardRouterError('REBALANCE_CONFLICT', `registered table ${table.table} is missing on the source shard`);
    tables.push({ shape, keyColumn: table.shardKey!, keyType: shape.types.get(table.shardKey!)! });
  }
  return tables;
}

/** Records a new move on its source (state 'copying'). */
async function recordMove(client: DedicatedConnection, schema: string, moveId: string, buckets: readonly number[], source: string, target: string): Promise<void> {
  await client.query(`INSERT INTO ${q(schema)}.moves (move_id, buckets, source_shard, target_shard, state) VALUES ($1, $2, $3, $4, 'copying')`, [
    moveId,
    buckets,
    source,
    target,
  ]);
}

/**
 * Installs the capture trigger on every sharded table of the source (idempotent), one table per
 * transaction: the rebalancer then never holds one table's lock while it waits for another's,
 * so it can never close a lock cycle with an application transaction. All of them commit
 * before the snapshot copy starts, which is all the copy needs (I3).
 */
async function installCaptureTriggers(client: DedicatedConnection, schema: string, tables: readonly TableCopy[]): Promise<void> {
  for (const table of tables) {
    await withDdlRetries(client, async () => {
      await client.query(
        `CREATE OR REPLACE TRIGGER ${captureTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE ON ${table.shape.name}
           FOR EACH ROW EXECUTE FUNCTION ${captureFunctionName(schema, table.shape.oid)}()`,
      );
    });
  }
}

/**
 * Runs `work` (one lock-taking statement, such as DDL on one busy table) in a transaction whose
 * lock request gives up quickly, and retries it until DDL_RETRY_BUDGET_MS has passed. The
 * rebalancer must never be the reason an application transaction dies: `work` holds no other
 * lock while it waits, so it cannot be part of a lock cycle, and its queued request (which holds
 * up the table's writers) is withdrawn within half the server's deadlock_timeout.
 */
async function withDdlRetries(client: DedicatedConnection, work: () => Promise<void>): Promise<void> {
  const lockTimeout = await ddlLockTimeout(client);
  const deadline = Date.now() + DDL_RETRY_BUDGET_MS;
  for (let attempt = 1; ; attempt++) {
    await client.query('BEGIN');
    try {
      await client.query(`SET LOCAL lock_timeout = ${lockTimeout}`);
      await work();
      await client.query('COMMIT');
      return;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      // 55P03: our lock_timeout; 40P01: PostgreSQL chose us as a deadlock victim. Both changed nothing.
      const code = (error as { code?: string }).code;
      if ((code !== '55P03' && code !== '40P01') || Date.now() > deadline) throw error;
      // Jittered, so the writers the attempt held up get through before the next one queues.
      await new Promise((resolve) => setTimeout(resolve, Math.min(20 * attempt, 250) * (0.5 + Math.random())));
    }
  }
}

/** lock_timeout (ms) for the rebalancer's DDL: DDL_LOCK_TIMEOUT_MS, or less than half the server's deadlock_timeout. */
async function ddlLockTimeout(client: DedicatedConnection): Promise<number> {
  const { rows } = await client.query<{ ms: string }>(
    "SELECT (extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000)::bigint::text AS ms",
  );
  const deadlockTimeout = Number(rows[0]?.ms ?? 1_000);
  return Math.max(1, Math.min(DDL_LOCK_TIMEOUT_MS, Math.floor(deadlockTimeout / 2) - 1));
}

/** Locks the move row inside the switch transaction, retrying (via a savepoint) when writers hold it too long. */
async function lockMoveRow(tx: Transaction, source: string, schema: string, moveId: string, options: MoveOptions): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await tx.executeOn(source, 'SAVEPOINT cutover');
    try {
      const locked = await tx.executeOn(source, `SELECT 1 FROM ${q(schema)}.moves WHERE move_id = $1 AND state = 'copying' FOR UPDATE`, [moveId]);
      if (locked.rowCount !== 1) throw new ShardRouterError('REBALANCE_CONFLICT', `move ${moveId} is no longer copying`);
      return;
    } catch (error) {
      const timedOut = error instanceof ShardRouterError && error.code === 'LOCK_TIMEOUT';
      if (!timedOut || attempt >= options.cutoverAttempts) throw error;
      await tx.executeOn(source, 'ROLLBACK TO SAVEPOINT cutover');
      await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
    }
  }
}

/**
 * Copies the rows matched by `where` (on the source client's snapshot) into the target inside
 * the switch transaction, as JSON batches: row_to_json on the source, json_populate_recordset
 * on the target, so every column type round-trips through its own text form.
 */
async function copyRows(
  source: DedicatedConnection,
  tx: Transaction,
  target: string,
  table: TableCopy,
  where: string,
  params: unknown[],
  batchRows: number,
  onBatch: (rows: number, bytes: number) => void,
): Promise<void> {
  const cursor = quoteIdent(`psr_copy_${table.shape.oid}`);
  await source.query(`DECLARE ${cursor} NO SCROLL CURSOR FOR SELECT row_to_json(t)::text AS j FROM ${table.shape.name} t WHERE ${where}`, params);
  try {
    for (;;) {
      const { rows } = await source.query<{ j: string }>(`FETCH ${batchRows} FROM ${cursor}`);
      if (rows.length === 0) break;
      const json = `[${rows.map((row) => row.j).join(',')}]`;
      await tx.executeOn(target, insertJsonSql(table.shape), [json]);
      onBatch(rows.length, json.length);
      if (rows.length < batchRows) break;
    }
  } finally {
    await source.query(`CLOSE ${cursor}`).catch(() => undefined);
  }
}

function insertJsonSql(shape: TableShape): string {
  const columns = shape.insertColumns.map(quoteIdent).join(', ');
  const overriding = shape.hasAlwaysIdentity ? ' OVERRIDING SYSTEM VALUE' : '';
  return `INSERT INTO ${shape.name} (${columns})${overriding} SELECT ${columns} FROM json_populate_recordset(NULL::${shape.name}, $1::json)`;
}

/**
 * One catch-up round: takes (and deletes) the logged changes, then re-copies the current rows
 * of those keys from the source (committed state) over the target's. Taking the log entries
 * before reading the rows means a change committed after the read is logged anew. Returns how
 * many distinct keys it handled.
 */
async function catchUp(
  source: DedicatedConnection,
  tx: Transaction,
  target: string,
  schema: string,
  moveId: string,
  tables: readonly TableCopy[],
  batchRows: number,
): Promise<number> {
  const { rows } = await source.query<{ table_name: string; key: string }>(
    `DELETE FROM ${q(schema)}.move_changes WHERE move_id = $1 RETURNING table_name, key`,
    [moveId],
  );
  if (rows.length === 0) return 0;
  let handled = 0;
  for (const table of tables) {
    const keys = [...new Set(rows.filter((row) => row.table_name === table.shape.name).map((row) => row.key))];
    for (let offset = 0; offset < keys.length; offset += batchRows) {
      const batch = keys.slice(offset, offset + batchRows);
      const match = `${quoteIdent(table.keyColumn)} = ANY ($1::text[]::${table.keyType}[])`;
      await tx.executeOn(target, `DELETE FROM ${table.shape.name} WHERE ${match}`, [batch]);
      const current = await source.query<{ j: string }>(`SELECT row_to_json(t)::text AS j FROM ${table.shape.name} t WHERE ${match}`, [batch]);
      if (current.rows.length > 0) await tx.executeOn(target, insertJsonSql(table.shape), [`[${current.rows.map((row) => row.j).join(',')}]`]);
    }
    handled += keys.length;
  }
  return handled;
}

/**
 * Moves the target's serial/identity sequences past the largest copied value, so ids it hands
 * out next cannot collide with the rows that just arrived (each shard has its own sequences).
 */
async function advanceSequences(tx: Transaction, target: string, tables: readonly TableCopy[]): Promise<void> {
  for (const table of tables) {
    for (const { column, sequence } of table.shape.sequences) {
      const { rows } = await tx.executeOn<{ top: string | null }>(target, `SELECT max(${quoteIdent(column)})::text AS top FROM ${table.shape.name}`);
      const top = rows[0]?.top;
      if (top === null || top === undefined) continue;
      await tx.executeOn(target, 'SELECT setval($1::regclass, $2::bigint) WHERE $2::bigint > coalesce(pg_sequence_last_value($1::regclass), 0)', [sequence, top]);
    }
  }
}

/**
 * After the switch: wait for transactions older than it on the source (I4), delete the moved
 * rows there, and close the move (capture trigger dropped when no other move from the source is open).
 */
export async function finishSwitched(
  access: ClusterAccess,
  sourceClient: DedicatedConnection,
  move: StoredMove,
  tables: readonly TableCopy[] | undefined,
  options: Pick<MoveOptions, 'drainTimeoutMillis'> & { onStep(step: MoveStep): Promise<void> },
): Promise<void> {
  const schema = access.config.catalogSchema;
  const bucketCount = access.map.bucketCount;
  const copies = tables ?? (await tablesToCopy(access, sourceClient));
  await drainOlderTransactions(sourceClient, options.drainTimeoutMillis);
  await options.onStep('drained');
  for (const table of copies) {
    await sourceClient.query(`DELETE FROM ${table.shape.name} WHERE ${q(schema)}.bucket_of(${quoteIdent(table.keyColumn)}::text, ${bucketCount}) = ANY ($1::int[])`, [
      move.buckets,
    ]);
  }
  await options.onStep('cleaned');
  await closeMove(sourceClient, schema, move.moveId, 'done', copies);
}

/** Marks a move done or undone, drops its change log and, if no other move from the source is open, its capture triggers. */
export async function closeMove(client: DedicatedConnection, schema: string, moveId: string, state: 'done' | 'undone', tables: readonly TableCopy[]): Promise<void> {
  // Triggers first, each in a transaction of its own (DROP TRIGGER takes ACCESS EXCLUSIVE on its
  // table and nothing else): a writer holds its table's lock and then share-locks the move row in
  // the trigger, so holding the move row, or another table, while waiting would invite a cycle.
  // A crash between them leaves the move open with fewer triggers, which resume handles: a
  // copying move reinstalls them, a switched one needs none (the fence refuses stale writers).
  const others = await client.query(`SELECT 1 FROM ${q(schema)}.moves WHERE state IN ('copying', 'switched') AND move_id <> $1`, [moveId]);
  if (others.rowCount === 0) {
    for (const table of tables) {
      await withDdlRetries(client, async () => {
        await client.query(`DROP TRIGGER IF EXISTS ${captureTriggerName(schema)} ON ${table.shape.name}`);
      });
    }
  }
  await withDdlRetries(client, async () => {
    await client.query(`UPDATE ${q(schema)}.moves SET state = $2, updated_at = now() WHERE move_id = $1`, [moveId, state]);
    await client.query(`DELETE FROM ${q(schema)}.move_changes WHERE move_id = $1`, [moveId]);
  });
}

/** Undoes a move still copying (a crashed rebalancer's): nothing was switched, so only the source's bookkeeping goes. */
export async function undoCopying(access: ClusterAccess, sourceClient: DedicatedConnection, move: StoredMove): Promise<void> {
  await closeMove(sourceClient, access.config.catalogSchema, move.moveId, 'undone', await tablesToCopy(access, sourceClient));
}


/**
 * Waits until no other session on the source is inside a transaction that began before now
 * (PostgreSQL's own clock): any statement routed by the old map has then ended.
 */
async function drainOlderTransactions(client: DedicatedConnection, timeoutMillis: number): Promise<void> {
  const { rows } = await client.query<{ now: string }>('SELECT clock_timestamp()::text AS now');
  const since = rows[0]!.now;
  const deadline = Date.now() + timeoutMillis;
  for (;;) {
    const older = await client.query(
      `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start < $1::timestamptz LIMIT 1`,
      [since],
    );
    if (older.rowCount === 0) return;
    if (Date.now() > deadline) {
      throw new ShardRouterError(
        'REBALANCE_CONFLICT',
        `transactions older than the map switch are still open on the source after ${timeoutMillis} ms; the move is switched and its clean-up resumes with rebalance --resume`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
