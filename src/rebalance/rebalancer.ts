import { installCatalog, probeCapabilities, readIdentity } from '../catalog/catalog.js';
import { describeTable, ensureRegistries } from '../catalog/registries.js';
import type { DedicatedConnection, Queryable } from '../pool/session.js';
import { resolveShard, urlWithoutPassword } from '../config.js';
import { ShardRouterError } from '../errors.js';
import { BucketMap } from '../placement/bucket-map.js';
import { runTransaction } from '../twopc/coordinator.js';
import { decisionLogExtension } from '../twopc/decision-log.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import type { ClusterAccess } from './cluster-access.js';
import { notifyMapChange, switchMapIn } from './map-switch.js';
import { MOVE_LOCK_CLASS, finishSwitched, readOpenMoves, runMove, undoCopying } from './move.js';
import type { MoveOptions, MoveProgress, MoveReport, StoredMove } from './move.js';
import { rebalanceHooks } from './test-hooks.js';
import type { MoveStep } from './test-hooks.js';
import { groupMoves, planByCount, planBySize } from './plan.js';
import type { BucketMove, PlannedMove } from './plan.js';
import { registerOnShard } from './register-table.js';
import { ROLE_SETTING, rebalanceExtension } from './schema.js';
import { q, quoteIdent } from '../sql.js';
import { verifyPlacement } from './verify.js';
import type { VerifyReport } from './verify.js';

export type { MoveProgress, MoveReport } from './move.js';
export type { PlannedMove } from './plan.js';
export type { VerifyReport, MisplacedRows, DivergentReferenceTable } from './verify.js';

/** Progress of a rebalance, reported after every copy batch and step. */
export interface RebalanceProgress {
  /** 1-based index of the running move, and how many the plan has. */
  readonly move: number;
  readonly moves: number;
  /** Buckets whose move finished, of all the plan moves. */
  readonly bucketsDone: number;
  readonly bucketsTotal: number;
  /** Totals over the whole rebalance so far. */
  readonly rowsCopied: number;
  readonly bytesCopied: number;
  readonly elapsedMillis: number;
  /** The running move. */
  readonly current: MoveProgress;
}

export interface RebalancerOptions {
  /** Buckets copied and switched together when a plan moves many from one shard to another (default 16). */
  readonly bucketsPerMove?: number;
  /** How long the cutover waits for the moving buckets' in-flight writers before trying again (default 1000). */
  readonly cutoverLockTimeoutMillis?: number;
  /** How long clean-up waits for transactions older than a switch on the source (default 60000). */
  readonly drainTimeoutMillis?: number;
  readonly onProgress?: (progress: RebalanceProgress) => void;
}

export interface RebalanceOptions {
  /** 'count' (default): every shard ends with the mean number of buckets +-1. 'size': even out bytes. */
  readonly by?: 'count' | 'size';
  /** Only plan; change nothing. */
  readonly dryRun?: boolean;
  /** First finish (or undo) moves left open by a rebalancer that died. */
  readonly resume?: boolean;
}

export interface RebalanceReport {
  readonly dryRun: boolean;
  /** What the resume did first (only with `resume: true`). */
  readonly resumed?: ResumeReport;
  readonly plan: readonly PlannedMove[];
  readonly moves: readonly MoveReport[];
  readonly mapVersion: number;
  readonly bucketsPerShard: Readonly<Record<string, number>>;
}

export interface AddShardReport {
  readonly shardId: string;
  readonly dryRun: boolean;
  /** Reference tables copied to the new shard, with their row counts. */
  readonly referenceRows: Readonly<Record<string, number>>;
  readonly mapVersion: number;
}

export interface ResumeReport {
  readonly finished: readonly string[];
  readonly restarted: readonly MoveReport[];
  readonly undone: readonly string[];
}

/** Advisory-lock class of the one-rebalancer-at-a-time lock ("PSRB"). */
const REBALANCE_LOCK_CLASS = 0x50535242;

/**
 * Adds and removes shards and moves buckets between them while routers keep reading and
 * writing (docs/rebalance.md). One rebalancer works on a cluster at a time (an advisory lock on
 * the lowest shard); a second gets REBALANCE_CONFLICT. Obtain one with `router.rebalancer()`.
 */
export class Rebalancer {
  readonly #access: ClusterAccess;
  readonly #moveOptions: MoveOptions;
  readonly #bucketsPerMove: number;
  readonly #onProgress: RebalancerOptions['onProgress'];

  /** @internal use router.rebalancer() */
  constructor(access: ClusterAccess, options: RebalancerOptions) {
    this.#access = access;
    this.#bucketsPerMove = positive('bucketsPerMove', options.bucketsPerMove, 16);
    this.#onProgress = options.onProgress;
    this.#moveOptions = {
      cutoverLockTimeoutMillis: positive('cutoverLockTimeoutMillis', options.cutoverLockTimeoutMillis, 1_000),
      cutoverAttempts: 30,
      catchUpThreshold: 100,
      batchRows: 2_000,
      drainTimeoutMillis: positive('drainTimeoutMillis', options.drainTimeoutMillis, 60_000),
    };
  }

  /**
   * Plans moves so that every shard owns the mean number of buckets +-1 (or, with
   * `by: 'size'`, so that data sizes even out), then runs them one after another.
   *
   * @example
   * const { plan } = await router.rebalancer().rebalance({ dryRun: true });
   * @throws ShardRouterError REBALANCE_CONFLICT (another rebalancer, or open moves without `resume`)
   */
  async rebalance(options: RebalanceOptions = {}): Promise<RebalanceReport> {
    return this.#exclusive(!options.dryRun, async () => {
      const resumed = options.resume && !options.dryRun ? await this.#resume(false) : undefined;
      const shardIds = this.#access.shardIds();
      const plan = await this.#plan(shardIds, options.by ?? 'count');
      const report = await this.#runPlan(plan, options.dryRun ?? false);
      return resumed ? { ...report, resumed } : report;
    });
  }

  /**
   * Moves one bucket to another shard (copy, catch-up, a brief pause of that bucket's writes,
   * map switch, clean-up).
   * @throws ShardRouterError INVALID_ARGUMENT, REBALANCE_CONFLICT
   */
  async moveBucket(bucket: number, toShard: string, options: { dryRun?: boolean } = {}): Promise<RebalanceReport> {
    const map = this.#access.map;
    if (!Number.isSafeInteger(bucket) || bucket < 0 || bucket >= map.bucketCount) {
      throw new ShardRouterError('INVALID_ARGUMENT', `bucket must be an integer from 0 to ${map.bucketCount - 1}`);
    }
    if (!this.#access.shardIds().includes(toShard)) throw new ShardRouterError('INVALID_ARGUMENT', `unknown or removed shard "${String(toShard)}"`);
    return this.#exclusive(!options.dryRun, async () => {
      const current = await this.#access.refresh();
      const from = current.ownerOf(bucket);
      const plan = from === toShard ? [] : [{ buckets: [bucket], source: from, target: toShard }];
      return this.#runPlan(plan, options.dryRun ?? false);
    });
  }

  /**
   * Adds a server as a new shard that owns no buckets yet: installs the catalog there, registers
   * the tables (they must already exist there, empty: run your migrations on it first), copies
   * every reference table, and records the shard so every router learns of it. Follow with
   * rebalance() to give it buckets. Routers connect to it with the stored URL (no password) and
   * the password of a configured shard with the same user name.
   *
   * @example
   * await rebalancer.addShard({ id: 's4', connectionString: 'postgres://app:secret@db4:5432/app' });
   * @throws ShardRouterError INVALID_ARGUMENT, SHARD_UNAVAILABLE, SHARD_IDENTITY_MISMATCH,
   * PREPARED_TRANSACTIONS_DISABLED, REBALANCE_CONFLICT
   */
  async addShard(shard: { id: string; connectionString: string }, options: { dryRun?: boolean } = {}): Promise<AddShardReport> {
    const resolved = resolveShard(shard?.id, shard?.connectionString);
    return this.#exclusive(!options.dryRun, async () => {
      const access = this.#access;
      const schema = access.config.catalogSchema;
      await access.refresh();
      const registered = access.registeredShards.find((entry) => entry.shardId === resolved.id);
      if (registered) throw new ShardRouterError('INVALID_ARGUMENT', `shard id ${resolved.id} is already ${registered.state === 'active' ? 'in' : 'removed from'} the cluster`);
      const pool = access.addPool(resolved);
      const session = await pool.acquire();
      let referenceRows: Record<string, number> = {};
      try {
        const capabilities = await probeCapabilities(session);
        const identity = await readIdentity(session, schema);
        if (identity && (identity.clusterId !== access.clusterId || identity.shardId !== resolved.id)) {
          throw new ShardRouterError('SHARD_IDENTITY_MISMATCH', `${resolved.displayUrl} already is shard ${identity.shardId} of cluster ${identity.clusterId}`, {
            shardId: resolved.id,
          });
        }
        await this.#checkTablesOnNewShard(session, resolved.id);
        if (options.dryRun) return { shardId: resolved.id, dryRun: true, referenceRows, mapVersion: access.map.version };
        access.setCapabilities(resolved.id, capabilities);
        const before = access.map;
        await installCatalog(session, schema, { clusterId: access.clusterId, shardId: resolved.id, bucketCount: before.bucketCount, complete: false }, before);
        await ensureRegistries(session, schema);
        for (const extension of [decisionLogExtension, rebalanceExtension]) await extension.ensure(session, schema);
      } finally {
        session.release();
      }
      const existing = access.shardIds().sort();
      const all = [...existing, resolved.id].sort();
      access.requirePreparedTransactions(all);
      const before = access.map;
      const next = BucketMap.fromOwners(before.version + 1, before.owners);
      const options2pc = resolveTransactionOptions({ timeoutMillis: 600_000 }, access.config.transactions);
      referenceRows = await runTransaction(access.coordinator, all, existing[0]!, options2pc, async (tx) => {
        const copied: Record<string, number> = {};
        for (const table of access.tables) {
          await registerOnShard(tx, resolved.id, schema, before.bucketCount, table.table, table.kind, table.shardKey);
          if (table.kind !== 'reference') continue;
          // Reference writes wait for this lock on the copy's source; the raised fences then
          // refuse the ones routed without the new shard, so none can miss it.
          await tx.executeOn(existing[0]!, `LOCK TABLE ${table.table} IN SHARE MODE`);
          const { rows } = await tx.executeOn<{ j: string }>(existing[0]!, `SELECT row_to_json(r)::text AS j FROM ${table.table} r`);
          await tx.executeOn(resolved.id, `DELETE FROM ${table.table}`);
          const shape = (await describeTable(tx.on(resolved.id), table.table))!;
          for (let offset = 0; offset < rows.length; offset += 2_000) {
            const json = `[${rows.slice(offset, offset + 2_000).map((row) => row.j).join(',')}]`;
            const columns = shape.insertColumns.map(quoteIdent).join(', ');
            await tx.executeOn(
              resolved.id,
              `INSERT INTO ${shape.name} (${columns})${shape.hasAlwaysIdentity ? ' OVERRIDING SYSTEM VALUE' : ''} SELECT ${columns} FROM json_populate_recordset(NULL::${shape.name}, $1::json)`,
              [json],
            );
          }
          copied[table.table] = rows.length;
        }
        // Every shard's registry lists every shard that ever joined: the new one gets the
        // whole registry (removed shards included), the others the new shard's row.
        const rows = [...access.registeredShards, { shardId: resolved.id, url: urlWithoutPassword(resolved.connectionString), state: 'active' as const }];
        await Promise.all(
          all.map((shardId) => {
            const added = shardId === resolved.id ? rows : rows.slice(-1);
            return tx.executeOn(
              shardId,
              `INSERT INTO "${schema}".shards (shard_id, url, state) SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT (shard_id) DO NOTHING`,
              [added.map((row) => row.shardId), added.map((row) => row.url), added.map((row) => row.state)],
            );
          }),
        );
        await switchMapIn(tx, schema, all, before, next, existing);
        return copied;
      });
      await pool.query(`UPDATE "${schema}".shard_identity SET complete = true WHERE NOT complete`, []);
      await notifyMapChange(access, next.version);
      await access.refresh();
      return { shardId: resolved.id, dryRun: false, referenceRows, mapVersion: next.version };
    });
  }

  /**
   * Moves every bucket off a shard (spreading them evenly over the others), then marks it
   * removed: routers stop using it. Its data stays on the server; drop it yourself.
   * @throws ShardRouterError INVALID_ARGUMENT, REBALANCE_CONFLICT
   */
  async removeShard(shardId: string, options: { dryRun?: boolean } = {}): Promise<RebalanceReport> {
    const active = this.#access.shardIds();
    if (!active.includes(shardId)) throw new ShardRouterError('INVALID_ARGUMENT', `unknown or removed shard "${String(shardId)}"`);
    if (active.length === 1) throw new ShardRouterError('INVALID_ARGUMENT', 'the last shard cannot be removed');
    return this.#exclusive(!options.dryRun, async () => {
      const remaining = active.filter((id) => id !== shardId);
      const plan = await this.#plan(remaining, 'count');
      const report = await this.#runPlan(plan, options.dryRun ?? false);
      if (options.dryRun) return report;
      const access = this.#access;
      const schema = access.config.catalogSchema;
      const before = await access.refresh();
      if (before.owners.includes(shardId)) throw new ShardRouterError('REBALANCE_CONFLICT', `shard ${shardId} still owns buckets after draining it`);
      const next = BucketMap.fromOwners(before.version + 1, before.owners);
      const all = [...active].sort();
      await runTransaction(access.coordinator, all, remaining.sort()[0]!, resolveTransactionOptions(undefined, access.config.transactions), async (tx) => {
        await Promise.all(all.map((id) => tx.executeOn(id, `UPDATE "${schema}".shards SET state = 'removed' WHERE shard_id = $1`, [shardId])));
        await switchMapIn(tx, schema, all, before, next, [shardId]);
      });
      await notifyMapChange(access, next.version);
      const after = await access.refresh();
      return { ...report, mapVersion: after.version, bucketsPerShard: Object.fromEntries(after.bucketsPerShard()) };
    });
  }

  /**
   * Finishes moves a dead rebalancer left open: switched ones are cleaned up; ones still copying
   * are copied again from the start (or, with `undo`, abandoned: the source still owns them).
   * Settles in-doubt map switches first.
   */
  async resume(options: { undo?: boolean } = {}): Promise<ResumeReport> {
    return this.#exclusive(true, () => this.#resume(options.undo ?? false));
  }

  /** Checks that every sharded row lives on its bucket's owner and that reference tables agree on all shards. */
  async verify(): Promise<VerifyReport> {
    const access = this.#access;
    const map = await access.refresh();
    const members = access.shardIds();
    // Removed shards too: rows left there are misplaced, and a move from there may be open.
    // One that cannot be reached is listed, not fatal: its data takes no part in any answer.
    const unreachable: { shardId: string; error: string }[] = [];
    const reachable: string[] = [];
    let openMoves = 0;
    for (const shardId of access.knownShardIds()) {
      try {
        const { rows } = await access.pool(shardId).query<{ open: string }>(
          `SELECT count(*)::text AS open FROM "${access.config.catalogSchema}".moves WHERE state IN ('copying', 'switched')`,
          [],
        );
        openMoves += Number(rows[0]?.open ?? 0);
        reachable.push(shardId);
      } catch (error) {
        if (members.includes(shardId)) throw error;
        unreachable.push({ shardId, error: error instanceof Error ? error.message : String(error) });
      }
    }
    const placement = await verifyPlacement(map, access.tables, reachable, members, (id) => access.pool(id), access.config.catalogSchema);
    return { ...placement, openMoves, unreachable, ok: placement.misplaced.length === 0 && placement.divergent.length === 0 };
  }

  /** The moves a rebalance would make now (nothing changes). */
  async plan(options: { by?: 'count' | 'size' } = {}): Promise<PlannedMove[]> {
    await this.#access.refresh();
    return this.#plan(this.#access.shardIds(), options.by ?? 'count');
  }

  async #plan(shardIds: readonly string[], by: 'count' | 'size'): Promise<PlannedMove[]> {
    const map = await this.#access.refresh();
    let moves: BucketMove[];
    if (by === 'size') moves = planBySize(map, shardIds, await this.#bucketSizes(map));
    else if (by === 'count') moves = planByCount(map, shardIds);
    else throw new ShardRouterError('INVALID_ARGUMENT', `by must be 'count' or 'size'`);
    return groupMoves(moves, this.#bucketsPerMove);
  }

  async #bucketSizes(map: BucketMap): Promise<Map<number, number>> {
    const sizes = new Map<number, number>();
    const schema = this.#access.config.catalogSchema;
    for (const table of this.#access.tables) {
      if (table.kind !== 'sharded') continue;
      for (const shardId of new Set(map.owners)) {
        const { rows } = await this.#access.pool(shardId).query<{ bucket: number; bytes: string }>(
          `SELECT "${schema}".bucket_of(${quoteIdent(table.shardKey!)}::text, ${map.bucketCount}) AS bucket, sum(pg_column_size(t.*))::text AS bytes FROM ${table.table} t GROUP BY 1`,
          [],
        );
        for (const row of rows) sizes.set(row.bucket, (sizes.get(row.bucket) ?? 0) + Number(row.bytes));
      }
    }
    return sizes;
  }

  async #runPlan(plan: readonly PlannedMove[], dryRun: boolean): Promise<RebalanceReport> {
    const access = this.#access;
    const reports: MoveReport[] = [];
    if (!dryRun) {
      const open = await this.#openMoves();
      if (open.length > 0) {
        throw new ShardRouterError(
          'REBALANCE_CONFLICT',
          `${open.length} move(s) left open by an earlier rebalancer (e.g. ${open[0]!.move.moveId}); resume them first (rebalance({ resume: true }) or \`pg-shard-router rebalance --resume\`)`,
        );
      }
      const bucketsTotal = plan.reduce((sum, move) => sum + move.buckets.length, 0);
      const started = Date.now();
      let bucketsDone = 0;
      let rowsBefore = 0;
      let bytesBefore = 0;
      for (const [index, move] of plan.entries()) {
        const report = await runMove(access, move, {
          ...this.#moveOptions,
          onProgress: (current) =>
            this.#onProgress?.({
              move: index + 1,
              moves: plan.length,
              bucketsDone,
              bucketsTotal,
              rowsCopied: rowsBefore + current.rowsCopied,
              bytesCopied: bytesBefore + current.bytesCopied,
              elapsedMillis: Date.now() - started,
              current,
            }),
        });
        reports.push(report);
        bucketsDone += move.buckets.length;
        rowsBefore += report.rowsCopied;
        bytesBefore += report.bytesCopied;
      }
    }
    const map = dryRun ? access.map : await access.refresh();
    const owners = [...map.owners];
    if (dryRun) for (const move of plan) for (const bucket of move.buckets) owners[bucket] = move.target;
    const counts: Record<string, number> = Object.fromEntries(access.shardIds().map((id) => [id, 0]));
    for (const owner of owners) counts[owner] = (counts[owner] ?? 0) + 1;
    return { dryRun, plan, moves: reports, mapVersion: map.version, bucketsPerShard: counts };
  }

  /**
   * Open moves on every shard the cluster has had: a move's row lives on its source, which may
   * own no buckets any more (removeShard's last move). A removed shard that cannot be reached
   * is skipped: it was removed only after its last move closed.
   */
  async #openMoves(): Promise<{ move: StoredMove }[]> {
    const open: { move: StoredMove }[] = [];
    const active = new Set(this.#access.shardIds());
    for (const shardId of this.#access.knownShardIds()) {
      const client = this.#access.pool(shardId);
      try {
        const moves = await readOpenMoves(client, this.#access.config.catalogSchema);
        for (const move of moves) open.push({ move });
      } catch (error) {
        if (active.has(shardId)) throw error;
      }
    }
    return open;
  }

  async #resume(undo: boolean): Promise<ResumeReport> {
    const access = this.#access;
    // A map switch interrupted between PREPARE and COMMIT PREPARED is settled first, so the
    // move rows say what really happened.
    await access.recover();
    await access.refresh();
    const finished: string[] = [];
    const undone: string[] = [];
    const restarted: MoveReport[] = [];
    const open = await this.#openMoves();
    const started = Date.now();
    for (const [index, { move }] of open.entries()) {
      const progress = (current: MoveProgress) =>
        this.#onProgress?.({
          move: index + 1,
          moves: open.length,
          bucketsDone: 0,
          bucketsTotal: move.buckets.length,
          rowsCopied: current.rowsCopied,
          bytesCopied: current.bytesCopied,
          elapsedMillis: Date.now() - started,
          current,
        });
      const client = await access.pool(move.source).openDedicated({ [ROLE_SETTING]: 'rebalancer' });
      try {
        const lease = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', [MOVE_LOCK_CLASS, move.moveId]);
        if (!lease.rows[0]?.locked) throw new ShardRouterError('REBALANCE_CONFLICT', `move ${move.moveId} is being run by another rebalancer`);
        if (move.state === 'switched') {
          await this.#finishResumed(client, move, progress);
          finished.push(move.moveId);
        } else if (undo) {
          await undoCopying(access, client, move);
          progress(resumedProgress(move, 'done'));
          undone.push(move.moveId);
        } else {
          await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [MOVE_LOCK_CLASS, move.moveId]);
          const request = { buckets: move.buckets, source: move.source, target: move.target, resume: move };
          restarted.push(await runMove(access, request, { ...this.#moveOptions, onProgress: progress }));
        }
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    return { finished, restarted, undone };
  }

  /** Drains and cleans up a move a dead rebalancer left switched, reporting each step. */
  async #finishResumed(client: DedicatedConnection, move: StoredMove, progress: (current: MoveProgress) => void): Promise<void> {
    progress(resumedProgress(move, 'switched'));
    const onStep = async (step: MoveStep) => {
      progress(resumedProgress(move, step));
      await rebalanceHooks.step?.(step, move.moveId);
    };
    await finishSwitched(this.#access, client, move, undefined, { ...this.#moveOptions, onStep });
    progress(resumedProgress(move, 'done'));
  }

  /** Checks that every registered table exists on a new shard with the same columns, and that its sharded tables are empty. */
  async #checkTablesOnNewShard(session: Queryable, shardId: string): Promise<void> {
    const access = this.#access;
    const reference = access.shardIds()[0]!;
    const referenceSession = access.pool(reference);
    const problems: string[] = [];
    for (const table of access.tables) {
      const shape = await describeTable(session, table.table);
      if (!shape) {
        problems.push(`${table.table} does not exist`);
        continue;
      }
      const expected = await describeTable(referenceSession, table.table);
      const differs = expected && [...expected.types].some(([column, type]) => shape.types.get(column) !== type);
      if (differs || shape.types.size !== expected?.types.size) problems.push(`${table.table} has different columns than on shard ${reference}`);
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

  /** Runs `work` holding the cluster's rebalance lock (when `exclusive`). */
  async #exclusive<T>(exclusive: boolean, work: () => Promise<T>): Promise<T> {
    if (!exclusive) return work();
    const lowest = [...this.#access.shardIds()].sort()[0]!;
    const client = await this.#access.pool(lowest).openDedicated();
    try {
      const lockArgs = [REBALANCE_LOCK_CLASS, this.#access.config.catalogSchema];
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', lockArgs);
      if (!rows[0]?.locked) throw new ShardRouterError('REBALANCE_CONFLICT', 'another rebalancer is working on this cluster');
      return await work();
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

/** Progress of a resumed move that copies nothing (its rows are already where they go). */
function resumedProgress(move: StoredMove, step: MoveProgress['step']): MoveProgress {
  return { moveId: move.moveId, buckets: move.buckets, source: move.source, target: move.target, step, rowsCopied: 0, bytesCopied: 0, resumed: true };
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new ShardRouterError('INVALID_ARGUMENT', `${name} must be a positive integer`);
  return value;
}
