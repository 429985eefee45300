import type { PlannedMove } from './move-plan.js';
import type { MoveStep } from './test-hooks.js';

/** The rebalancer's public types (the package index exports them through rebalancer.ts), and MoveOptions (internal). */

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

/** How a move runs (internal: the Rebalancer sets it from RebalancerOptions). */
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
