import { randomBytes } from 'node:crypto';
import type { DedicatedConnection } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import { BucketMap } from '../placement/bucket-map.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { Transaction } from '../twopc/coordinator.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import { q } from '../sql.js';
import type { RebalanceContext } from './context.js';
import {
  advanceSequences,
  catchUpAll,
  catchUpWhileWriting,
  copySnapshot,
  deleteBucketRowsSql,
  SOURCE_TEXT_FORMS,
  tablesToCopy,
} from './copy.js';
import type { CopyJob, TableCopy } from './copy.js';
import { drainOlderTransactions, dropCaptureTriggers, installCaptureTriggers, withDdlRetries } from './ddl.js';
import { notifyMapChange, switchMapIn } from './map-switch.js';
import { closeLockGates } from './lock-space.js';
import { recordMove, takeMoveLease } from './move-record.js';
import type { StoredMove } from './move-record.js';
import { ROLE_SETTING } from './schema.js';
import { rebalanceHooks } from './test-hooks.js';
import type { MoveStep } from './test-hooks.js';
import type { MoveOptions, MoveProgress, MoveReport } from './types.js';

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
 *
 * The steps: start (move row, capture triggers) -> copy (snapshot, catch-up) -> cutover (move
 * row locked, last catch-up) -> switch (two-phase commit) -> finish (drain, clean-up, close).
 * Each MOVE_STEPS step runs rebalanceHooks.step, where the chaos tests kill the process.
 */

const COPY_TIMEOUT_MS = 3_600_000;

/** What to move; `resume` is the stored row of a move left in 'copying' by a crashed rebalancer. */
export interface MoveRequest {
  readonly buckets: readonly number[];
  readonly source: string;
  readonly target: string;
  readonly resume?: StoredMove;
}

/** The rebalancer's two connections to the source: the change log and bookkeeping, and the snapshot. */
interface SourceConnections {
  readonly log: DedicatedConnection;
  readonly snapshot: DedicatedConnection;
}

/** A move under way: who it is, what it copied so far, and how it reports each step. */
class MoveRun {
  readonly moveId: string;
  readonly buckets: number[];
  readonly source: string;
  readonly target: string;
  readonly resumed: boolean;
  readonly schema: string;
  readonly bucketCount: number;
  readonly #options: MoveOptions;
  rowsCopied = 0;
  bytesCopied = 0;

  constructor(context: RebalanceContext, request: MoveRequest, options: MoveOptions) {
    this.source = request.source;
    this.target = request.target;
    this.buckets = [...request.buckets].sort((a, b) => a - b);
    this.schema = context.config.catalogSchema;
    this.bucketCount = context.map.bucketCount;
    this.moveId = request.resume?.moveId ?? `m${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
    this.resumed = request.resume !== undefined;
    this.#options = options;
  }

  report(step: MoveProgress['step']): void {
    const { moveId, buckets, source, target, rowsCopied, bytesCopied, resumed } = this;
    this.#options.onProgress?.({ moveId, buckets, source, target, step, rowsCopied, bytesCopied, resumed });
  }

  /** Reports a step of MOVE_STEPS and runs the test hook there. */
  async reached(step: MoveStep): Promise<void> {
    this.report(step);
    await rebalanceHooks.step?.(step, this.moveId);
  }

  copied(rows: number, bytes: number): void {
    this.rowsCopied += rows;
    this.bytesCopied += bytes;
    this.report('copying');
  }
}

/**
 * Runs a move from the start (or restarts one left in 'copying' by a crashed rebalancer, given
 * its stored row) through cleanup.
 */
export async function runMove(context: RebalanceContext, request: MoveRequest, options: MoveOptions): Promise<MoveReport> {
  const move = new MoveRun(context, request, options);
  context.observer?.moveStarted(move);
  try {
    const report = await runMoveSteps(context, move, options);
    context.observer?.moveFinished(report);
    return report;
  } catch (error) {
    context.observer?.moveFailed(move, error);
    throw error;
  }
}

async function runMoveSteps(context: RebalanceContext, move: MoveRun, options: MoveOptions): Promise<MoveReport> {
  const settings = { ...SOURCE_TEXT_FORMS, [ROLE_SETTING]: 'rebalancer' };
  const log = await context.pool(move.source).openDedicated(settings, 'rebalancer');
  const snapshot = await context
    .pool(move.source)
    .openDedicated(settings, 'rebalancer')
    .catch(async (error: unknown) => {
      await log.end();
      throw error;
    });
  try {
    const tables = await start(context, log, move);
    const copyStarted = Date.now();
    const { pauseStarted, mapVersion } = await copyAndSwitch(context, { log, snapshot }, move, tables, options);
    const pauseMillis = Date.now() - pauseStarted;
    await move.reached('switched');
    await notifyMapChange(context, mapVersion);
    await context.refresh();
    const { moveId, buckets, source, target } = move;
    const switched: StoredMove = { moveId, buckets, source, target, state: 'switched', mapVersion };
    await finishSwitched(context, log, switched, tables, { ...options, onStep: (step) => move.reached(step) });
    move.report('done');
    const { rowsCopied, bytesCopied } = move;
    return { moveId, buckets, source, target, rowsCopied, bytesCopied, pauseMillis, copyMillis: pauseStarted - copyStarted, mapVersion };
  } finally {
    await snapshot.end().catch(() => undefined);
    await log.end().catch(() => undefined);
  }
}

/** Start: the move's lease, its row (unless resumed) and the capture triggers, committed on the source. */
async function start(context: RebalanceContext, log: DedicatedConnection, move: MoveRun): Promise<TableCopy[]> {
  await takeMoveLease(log, move.moveId);
  const tables = await tablesToCopy(context, log);
  if (!move.resumed) await recordMove(log, move.schema, move.moveId, move.buckets, move.source, move.target);
  // Also on a resume: a rebalancer that died while installing them may have left some out.
  await installCaptureTriggers(log, move.schema, tables);
  if (!move.resumed) await move.reached('started');
  return tables;
}

/**
 * Copy, catch-up, cutover and switch, all in one transaction over every shard (I1, I2).
 * Resolves once the switch committed, with when the pause of the buckets' writers began.
 */
async function copyAndSwitch(
  context: RebalanceContext,
  source: SourceConnections,
  move: MoveRun,
  tables: readonly TableCopy[],
  options: MoveOptions,
): Promise<{ pauseStarted: number; mapVersion: number }> {
  const allShards = [...context.shardIds()].sort();
  context.requirePreparedTransactions(allShards);
  const transactionOptions = resolveTransactionOptions(
    { timeoutMillis: COPY_TIMEOUT_MS, lockTimeoutMillis: options.cutoverLockTimeoutMillis },
    context.config.transactions,
  );
  const before = await context.refresh();
  for (const bucket of move.buckets) {
    if (before.ownerOf(bucket) !== move.source)
      throw new ShardRouterError('REBALANCE_CONFLICT', `bucket ${bucket} is owned by ${before.ownerOf(bucket)}, not ${move.source}`);
  }
  const result = { pauseStarted: 0, mapVersion: 0 };
  await runTransaction(context.coordinator, allShards, move.target, transactionOptions, async (tx) => {
    const job: CopyJob = {
      source: source.log,
      tx,
      target: move.target,
      schema: move.schema,
      moveId: move.moveId,
      tables,
      batchRows: options.batchRows,
    };
    await copy(job, source.snapshot, move, options);
    result.pauseStarted = await cutover(job, move, options);
    result.mapVersion = await switchMap(job, move, before, allShards);
    await move.reached('before-switch');
  });
  return result;
}

/** Copy: the snapshot, then catch-up rounds while writes continue, until a round finds little to do. */
async function copy(job: CopyJob, snapshot: DedicatedConnection, move: MoveRun, options: MoveOptions): Promise<void> {
  move.report('copying');
  await copySnapshot(job, snapshot, move.buckets, move.bucketCount, (rows, bytes) => move.copied(rows, bytes));
  await move.reached('copied');
  move.report('catching-up');
  await catchUpWhileWriting(job, options.catchUpThreshold);
  await move.reached('caught-up');
}

/**
 * Cutover: lock the move row. Writers of these buckets that already passed the capture
 * trigger hold FOR SHARE on it, so this waits for them; new ones wait behind it (I3). Then the
 * last changes are copied. Returns when the pause began.
 */
async function cutover(job: CopyJob, move: MoveRun, options: MoveOptions): Promise<number> {
  // First the lock gates of these buckets (docs/locks.md, L1): waits for their lock holders,
  // holds new ones back until the move row is locked, when the capture trigger takes over.
  const openGates = await closeGatesFor(job.source, move, options);
  try {
    await lockMoveRow(job.tx, move.source, move.schema, move.moveId, options);
  } finally {
    await openGates();
  }
  const pauseStarted = Date.now();
  await move.reached('paused');
  await catchUpAll(job);
  return pauseStarted;
}

/** closeLockGates for the move's buckets, its timeout error typed (the move stays open for a resume). */
async function closeGatesFor(source: DedicatedConnection, move: MoveRun, options: MoveOptions): Promise<() => Promise<void>> {
  const timeoutMillis = options.cutoverLockTimeoutMillis * options.cutoverAttempts;
  try {
    return await closeLockGates(source, move.buckets, timeoutMillis);
  } catch (error) {
    if ((error as { code?: unknown }).code !== '55P03') throw error;
    throw new ShardRouterError(
      'LOCK_TIMEOUT',
      `the cutover of move ${move.moveId} waited ${timeoutMillis} ms for withLock holders of its buckets`,
      {
        shardId: move.source,
        cause: error,
      },
    );
  }
}

/** Locks the move row inside the switch transaction, retrying (via a savepoint) when writers hold it too long. */
async function lockMoveRow(tx: Transaction, source: string, schema: string, moveId: string, options: MoveOptions): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await tx.executeOn(source, 'SAVEPOINT cutover');
    try {
      const locked = await tx.executeOn(source, `SELECT 1 FROM ${q(schema)}.moves WHERE move_id = $1 AND state = 'copying' FOR UPDATE`, [
        moveId,
      ]);
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
 * Switch (I2), prepared with the copy: the target's sequences advanced, the move row
 * 'switched', the new map on every shard and the source's fence raised. Returns the new map version.
 */
async function switchMap(job: CopyJob, move: MoveRun, before: BucketMap, allShards: readonly string[]): Promise<number> {
  await advanceSequences(job);
  const owners = [...before.owners];
  for (const bucket of move.buckets) owners[bucket] = move.target;
  const next = BucketMap.fromOwners(before.version + 1, owners);
  await job.tx.executeOn(
    move.source,
    `UPDATE ${q(move.schema)}.moves SET state = 'switched', map_version = $2, rows_copied = $3, bytes_copied = $4, updated_at = now() WHERE move_id = $1`,
    [move.moveId, next.version, move.rowsCopied, move.bytesCopied],
  );
  await switchMapIn(job.tx, job.schema, allShards, before, next, [move.source]);
  return next.version;
}

/**
 * After the switch: wait for transactions older than it on the source (I4), delete the moved
 * rows there, and close the move (capture trigger dropped when no other move from the source is open).
 */
export async function finishSwitched(
  context: RebalanceContext,
  sourceClient: DedicatedConnection,
  move: StoredMove,
  tables: readonly TableCopy[] | undefined,
  options: Pick<MoveOptions, 'drainTimeoutMillis'> & { onStep(step: MoveStep): Promise<void> },
): Promise<void> {
  const schema = context.config.catalogSchema;
  const bucketCount = context.map.bucketCount;
  const copies = tables ?? (await tablesToCopy(context, sourceClient));
  await drainOlderTransactions(sourceClient, options.drainTimeoutMillis);
  await options.onStep('drained');
  for (const table of copies) {
    await sourceClient.query(deleteBucketRowsSql(schema, table, bucketCount), [move.buckets]);
  }
  await options.onStep('cleaned');
  await closeMove(sourceClient, schema, move.moveId, 'done', copies);
}

/** Marks a move done or undone, drops its change log and, if no other move from the source is open, its capture triggers. */
export async function closeMove(
  client: DedicatedConnection,
  schema: string,
  moveId: string,
  state: 'done' | 'undone',
  tables: readonly TableCopy[],
): Promise<void> {
  // Triggers first, each in a transaction of its own (DROP TRIGGER takes ACCESS EXCLUSIVE on its
  // table and nothing else): a writer holds its table's lock and then share-locks the move row in
  // the trigger, so holding the move row, or another table, while waiting would invite a cycle.
  // A crash between them leaves the move open with fewer triggers, which resume handles: a
  // copying move reinstalls them, a switched one needs none (the fence refuses stale writers).
  const others = await client.query(`SELECT 1 FROM ${q(schema)}.moves WHERE state IN ('copying', 'switched') AND move_id <> $1`, [moveId]);
  if (others.rowCount === 0) await dropCaptureTriggers(client, schema, tables);
  await withDdlRetries(client, async () => {
    await client.query(`UPDATE ${q(schema)}.moves SET state = $2, updated_at = now() WHERE move_id = $1`, [moveId, state]);
    await client.query(`DELETE FROM ${q(schema)}.move_changes WHERE move_id = $1`, [moveId]);
  });
}

/** Undoes a move still copying (a crashed rebalancer's): nothing was switched, so only the source's bookkeeping goes. */
export async function undoCopying(context: RebalanceContext, sourceClient: DedicatedConnection, move: StoredMove): Promise<void> {
  await closeMove(sourceClient, context.config.catalogSchema, move.moveId, 'undone', await tablesToCopy(context, sourceClient));
}
