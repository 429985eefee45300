import { resolveShard } from '../config.js';
import { ShardRouterError } from '../errors.js';
import type { RebalanceContext, RebalanceRun } from './context.js';
import { addShard, removableShards, removeShard } from './membership.js';
import type { PlannedMove } from './move-plan.js';
import { resumeOpenMoves } from './resume.js';
import { planMoves, runPlan } from './run-plan.js';
import type { AddShardReport, RebalanceOptions, RebalanceReport, RebalancerOptions, ResumeReport } from './types.js';
import { verifyCluster } from './verify.js';
import type { VerifyReport } from './verify.js';

export type {
  AddShardReport,
  MoveProgress,
  MoveReport,
  RebalanceOptions,
  RebalanceProgress,
  RebalanceReport,
  RebalancerOptions,
  ResumeReport,
} from './types.js';
export type { PlannedMove } from './move-plan.js';
export type { VerifyReport, MisplacedRows, DivergentReferenceTable } from './verify.js';

/** Advisory-lock class of the one-rebalancer-at-a-time lock ("PSRB"). */
const REBALANCE_LOCK_CLASS = 0x50535242;

/**
 * Adds and removes shards and moves buckets between them while routers keep reading and
 * writing (docs/rebalance.md). One rebalancer works on a cluster at a time (an advisory lock on
 * the lowest shard); a second gets REBALANCE_CONFLICT. Obtain one with `router.rebalancer()`.
 *
 * The public face: it checks arguments, takes the lock and hands the work to run-plan.ts,
 * membership.ts, resume.ts and verify.ts; a move itself is move.ts's state machine.
 */
export class Rebalancer {
  readonly #run: RebalanceRun;

  /** @internal use router.rebalancer() */
  constructor(context: RebalanceContext, options: RebalancerOptions) {
    const bucketsPerMove = positive('bucketsPerMove', options.bucketsPerMove, 16);
    this.#run = {
      context,
      bucketsPerMove,
      onProgress: options.onProgress,
      moveOptions: {
        cutoverLockTimeoutMillis: positive('cutoverLockTimeoutMillis', options.cutoverLockTimeoutMillis, 1_000),
        cutoverAttempts: 30,
        catchUpThreshold: 100,
        batchRows: 2_000,
        drainTimeoutMillis: positive('drainTimeoutMillis', options.drainTimeoutMillis, 60_000),
      },
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
      const resumed = options.resume && !options.dryRun ? await resumeOpenMoves(this.#run, false) : undefined;
      const shardIds = this.#run.context.shardIds();
      const plan = await planMoves(this.#run, shardIds, options.by ?? 'count');
      const report = await runPlan(this.#run, plan, options.dryRun ?? false);
      return resumed ? { ...report, resumed } : report;
    });
  }

  /**
   * Moves one bucket to another shard (copy, catch-up, a brief pause of that bucket's writes,
   * map switch, clean-up).
   * @throws ShardRouterError INVALID_ARGUMENT, REBALANCE_CONFLICT
   */
  async moveBucket(bucket: number, toShard: string, options: { dryRun?: boolean } = {}): Promise<RebalanceReport> {
    const context = this.#run.context;
    const map = context.map;
    if (!Number.isSafeInteger(bucket) || bucket < 0 || bucket >= map.bucketCount) {
      throw new ShardRouterError('INVALID_ARGUMENT', `bucket must be an integer from 0 to ${map.bucketCount - 1}`);
    }
    if (!context.shardIds().includes(toShard))
      throw new ShardRouterError('INVALID_ARGUMENT', `unknown or removed shard "${String(toShard)}"`);
    return this.#exclusive(!options.dryRun, async () => {
      const current = await context.refresh();
      const from = current.ownerOf(bucket);
      const plan = from === toShard ? [] : [{ buckets: [bucket], source: from, target: toShard }];
      return runPlan(this.#run, plan, options.dryRun ?? false);
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
    return this.#exclusive(!options.dryRun, () => addShard(this.#run.context, resolved, options.dryRun ?? false));
  }

  /**
   * Moves every bucket off a shard (spreading them evenly over the others), then marks it
   * removed: routers stop using it. Its data stays on the server; drop it yourself.
   * @throws ShardRouterError INVALID_ARGUMENT, REBALANCE_CONFLICT
   */
  async removeShard(shardId: string, options: { dryRun?: boolean } = {}): Promise<RebalanceReport> {
    const active = removableShards(this.#run.context, shardId);
    return this.#exclusive(!options.dryRun, () => removeShard(this.#run, shardId, active, options.dryRun ?? false));
  }

  /**
   * Finishes moves a dead rebalancer left open: switched ones are cleaned up; ones still copying
   * are copied again from the start (or, with `undo`, abandoned: the source still owns them).
   * Settles in-doubt map switches first.
   */
  async resume(options: { undo?: boolean } = {}): Promise<ResumeReport> {
    return this.#exclusive(true, () => resumeOpenMoves(this.#run, options.undo ?? false));
  }

  /** Checks that every sharded row lives on its bucket's owner and that reference tables agree on all shards. */
  async verify(): Promise<VerifyReport> {
    return verifyCluster(this.#run.context);
  }

  /** The moves a rebalance would make now (nothing changes). */
  async plan(options: { by?: 'count' | 'size' } = {}): Promise<PlannedMove[]> {
    await this.#run.context.refresh();
    return planMoves(this.#run, this.#run.context.shardIds(), options.by ?? 'count');
  }

  /** Runs `work` holding the cluster's rebalance lock (when `exclusive`). */
  async #exclusive<T>(exclusive: boolean, work: () => Promise<T>): Promise<T> {
    if (!exclusive) return work();
    const context = this.#run.context;
    const lowest = [...context.shardIds()].sort()[0]!;
    const client = await context.pool(lowest).openDedicated();
    try {
      const lockArgs = [REBALANCE_LOCK_CLASS, context.config.catalogSchema];
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', lockArgs);
      if (!rows[0]?.locked) throw new ShardRouterError('REBALANCE_CONFLICT', 'another rebalancer is working on this cluster');
      return await work();
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new ShardRouterError('INVALID_ARGUMENT', `${name} must be a positive integer`);
  return value;
}
