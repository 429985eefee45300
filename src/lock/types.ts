import type { QueryResultRow, ShardQueryResult } from '../pool/session.js';
import type { Transaction } from '../twopc/coordinator.js';

/** Options of {@link ShardRouter.withLock}. */
export interface LockOptions {
  /**
   * How long to wait for the lock, in ms (default 10 000). 0: try once, never wait. Bounds each
   * of at most two waits: the lock itself, then (only while a move of the key's bucket cuts
   * over) the bucket's gate.
   */
  readonly waitMillis?: number;
  /**
   * The lease, in ms (default 30 000, at least 300): the lock's connection is probed every
   * leaseMillis / 3, and the server ends the lock's session (releasing the lock) after leaseMillis
   * without a word from this process (PostgreSQL's idle_session_timeout, 14 and newer).
   */
  readonly leaseMillis?: number;
}

/** The lock as `fn` sees it: its fencing token and the helpers that make writes carry it. */
export interface HeldLockInfo {
  readonly key: string;
  /** Grows with every acquisition of this lock key, across processes, crashes and bucket moves. */
  readonly token: number;
  /** The shard the lock is held on (the owner of the key's bucket). */
  readonly shardId: string;
  /** Fires when the lock may be lost (the same signal `fn` gets as its first argument). */
  readonly signal: AbortSignal;
  /**
   * Inside `router.transaction([lockKey, ...], tx => ...)`: checks that this token is still the
   * lock key's newest and keeps it so until the transaction ends, so a later holder's token is
   * issued after this transaction. Call it before the writes it guards.
   * @throws ShardRouterError LOCK_FENCED (a later holder took the lock), KEY_NOT_IN_TRANSACTION
   * (the transaction does not include the lock key's shard)
   */
  fence(tx: Transaction): Promise<void>;
  /**
   * One statement on the lock key's shard, fenced by this token in one transaction.
   * @throws ShardRouterError LOCK_FENCED and the errors of `router.transaction`
   */
  execute<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<ShardQueryResult<R>>;
}

/** The locks of this router, in {@link ShardRouter.status}. */
export interface LockStatus {
  readonly held: readonly { readonly key: string; readonly shardId: string; readonly token: number; readonly heldMillis: number }[];
  readonly waiting: readonly { readonly key: string; readonly waitingMillis: number }[];
}
