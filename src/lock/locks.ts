import { ShardRouterError, closedError } from '../errors.js';
import { GATE_CLASS_ID, LOCK_CLASS_ID } from '../rebalance/lock-space.js';
import type { QueryResultRow } from '../pool/session.js';
import type { Transaction } from '../twopc/coordinator.js';
import { acquire } from './acquire.js';
import { LockConnections } from './connections.js';
import type { LockContext } from './context.js';
import { HeldLock } from './held-lock.js';
import { lockIdentity } from './lock-key.js';
import type { LockIdentity } from './lock-key.js';
import { resolveLockOptions } from './options.js';
import { lockHooks } from './test-hooks.js';
import type { HeldLockInfo, LockStatus } from './types.js';

/**
 * The distributed locks of one router (docs/locks.md): withLock, and what status() shows of
 * this router's held and waiting locks.
 */
export class Locks {
  readonly #context: LockContext;
  readonly #connections: LockConnections;
  readonly #held = new Set<HeldLock>();
  readonly #waiting = new Set<{ key: string; since: number }>();
  #closed = false;

  constructor(context: LockContext) {
    this.#context = context;
    this.#connections = new LockConnections(context);
  }

  /**
   * Takes the lock, runs `fn`, releases the lock when `fn` settles, and returns what `fn`
   * returned. Argument errors are thrown before any I/O.
   */
  async withLock<T>(lockKey: unknown, fn: unknown, options: unknown): Promise<T> {
    if (this.#closed) throw closedError();
    const identity = lockIdentity(lockKey, (key) => this.#context.bucketOf(key));
    const resolved = resolveLockOptions(options);
    if (typeof fn !== 'function') throw new ShardRouterError('INVALID_ARGUMENT', 'withLock needs a function (signal, lock) => Promise');
    const waiting = { key: identity.key, since: Date.now() };
    this.#waiting.add(waiting);
    let held: HeldLock;
    try {
      held = new HeldLock(
        this.#context,
        identity,
        await acquire(this.#context, this.#connections, identity, resolved),
        resolved.leaseMillis,
      );
    } finally {
      this.#waiting.delete(waiting);
    }
    this.#held.add(held);
    held.watch();
    try {
      return await this.#run(held, identity, fn as (signal: AbortSignal, lock: HeldLockInfo) => T | Promise<T>);
    } finally {
      this.#held.delete(held);
    }
  }

  /** Runs `fn`, then releases: a lost or doubtful connection is ended (that releases everything it held). */
  async #run<T>(held: HeldLock, identity: LockIdentity, fn: (signal: AbortSignal, lock: HeldLockInfo) => T | Promise<T>): Promise<T> {
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    // fn sees the lock's public face only, not the connection or the watcher.
    const info: HeldLockInfo = Object.freeze({
      key: held.key,
      token: held.token,
      shardId: held.shardId,
      signal: held.signal,
      fence: (tx: Transaction) => held.fence(tx),
      execute: <R extends QueryResultRow>(sql: string, params?: readonly unknown[]) => held.execute<R>(sql, params),
    });
    try {
      outcome = { ok: true, value: await fn(held.signal, info) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    held.stop();
    await lockHooks.step?.('releasing', identity.key);
    const lost = held.lostReason;
    if (lost) await this.#connections.discard(held.connection);
    else await this.#release(held, identity);
    if (!outcome.ok) throw outcome.error;
    if (lost) throw lost;
    return outcome.value;
  }

  async #release(held: HeldLock, identity: LockIdentity): Promise<void> {
    const connection = held.connection;
    try {
      const { rows } = await connection.connection.query<{ key: boolean; gate: boolean }>(
        'SELECT pg_advisory_unlock($1, $2) AS key, pg_advisory_unlock_shared($3, $4) AS gate',
        [LOCK_CLASS_ID, identity.objectId, GATE_CLASS_ID, identity.bucket],
      );
      // Both must have been held; anything else and the connection's state is not ours to trust.
      if (rows[0]?.key === true && rows[0]?.gate === true) this.#connections.give(connection);
      else await this.#connections.discard(connection);
    } catch {
      await this.#connections.discard(connection);
    }
  }

  status(): LockStatus {
    const now = Date.now();
    return {
      held: [...this.#held].map((lock) => ({ key: lock.key, shardId: lock.shardId, token: lock.token, heldMillis: now - lock.acquiredAt })),
      waiting: [...this.#waiting].map((waiter) => ({ key: waiter.key, waitingMillis: now - waiter.since })),
    };
  }

  /** Ends the idle lock connections; held locks are released when their `fn` settles. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#connections.close();
  }
}
