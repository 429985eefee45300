import { ShardRouterError } from '../errors.js';
import type { QueryResultRow, ShardQueryResult } from '../pool/session.js';
import { LOCK_TOKENS_KEY, lockTokensTable } from '../rebalance/lock-space.js';
import type { Transaction } from '../twopc/coordinator.js';
import type { Acquired } from './acquire.js';
import type { LockConnection } from './connections.js';
import type { LockContext } from './context.js';
import type { LockIdentity } from './lock-key.js';
import type { HeldLockInfo } from './types.js';

/**
 * A lock while `fn` runs: watches its connection and aborts `signal` as soon as the lock may be
 * lost (docs/locks.md, "Losing the lock while fn runs"): the connection's error/end events, a
 * failed or unanswered probe (one every lease / 3), or a probe tick that finds the process was
 * paused past two probe periods. It cannot see anything while the process itself is paused.
 */
export class HeldLock implements HeldLockInfo {
  readonly key: string;
  readonly token: number;
  readonly shardId: string;
  readonly acquiredAt = Date.now();
  readonly #acquired: Acquired;
  readonly #context: LockContext;
  readonly #controller = new AbortController();
  readonly #period: number;
  #timer: NodeJS.Timeout | undefined;
  /** The deadline of the probe in flight, if one is. */
  #overdue: NodeJS.Timeout | undefined;
  #unsubscribe: () => void = () => undefined;
  /** When the newest answered probe was sent (the server heard from us at or after that). */
  #confirmedAt = Date.now();

  constructor(context: LockContext, identity: LockIdentity, acquired: Acquired, leaseMillis: number) {
    this.key = identity.key;
    this.token = acquired.token;
    this.shardId = acquired.connection.shardId;
    this.#acquired = acquired;
    this.#context = context;
    this.#period = Math.floor(leaseMillis / 3);
  }

  /** The connection the lock is held on. */
  get connection(): LockConnection {
    return this.#acquired.connection;
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Why the lock may be lost, once it may. */
  get lostReason(): ShardRouterError | undefined {
    return this.#controller.signal.aborted ? (this.#controller.signal.reason as ShardRouterError) : undefined;
  }

  /** Starts watching: the connection's events now, a probe every lease / 3. */
  watch(): void {
    const connection = this.#acquired.connection;
    if (connection.lost !== undefined) this.#lose('its connection broke', connection.lost);
    this.#unsubscribe = connection.connection.onLost((cause) => this.#lose('its connection broke', cause));
    this.#timer = setInterval(() => this.#probe(), this.#period);
    this.#timer.unref();
  }

  /** Stops watching (before the lock is released or the connection ended). */
  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#overdue);
    this.#unsubscribe();
  }

  #probe(): void {
    const sent = Date.now();
    if (sent - this.#confirmedAt > 2 * this.#period) {
      this.#lose(`this process was not heard from for ${sent - this.#confirmedAt} ms (lease ${3 * this.#period} ms)`);
      return;
    }
    if (this.#overdue !== undefined) return; // the previous probe is still out; its deadline stands
    this.#overdue = setTimeout(() => this.#lose(`a probe of its connection went unanswered for ${this.#period} ms`), this.#period);
    this.#overdue.unref();
    this.#acquired.connection.connection.query('SELECT 1').then(
      () => {
        clearTimeout(this.#overdue);
        this.#overdue = undefined;
        this.#confirmedAt = Math.max(this.#confirmedAt, sent);
      },
      (error: unknown) => {
        clearTimeout(this.#overdue);
        this.#overdue = undefined;
        this.#lose('a probe of its connection failed', error);
      },
    );
  }

  #lose(why: string, cause?: unknown): void {
    if (this.#controller.signal.aborted) return;
    this.stop();
    const error = new ShardRouterError(
      'LOCK_LOST',
      `lock "${this.key}" (token ${this.token}) on shard ${this.shardId} may be lost: ${why}`,
      {
        shardId: this.shardId,
        cause,
      },
    );
    this.#controller.abort(error);
  }

  async fence(tx: Transaction): Promise<void> {
    // A write, so the shard's fence and a move's capture trigger apply to it as to the token itself;
    // its row lock holds the next acquisition's token back until this transaction ends.
    const { rowCount } = await tx.execute(
      this.key,
      `UPDATE ${lockTokensTable(this.#context.catalogSchema)} SET token = token WHERE ${LOCK_TOKENS_KEY} = $1 AND token = $2`,
      [this.key, this.token],
    );
    if (rowCount !== 1)
      throw new ShardRouterError('LOCK_FENCED', `lock "${this.key}": token ${this.token} is stale, a later holder took the lock`, {
        shardId: this.shardId,
      });
  }

  execute<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<ShardQueryResult<R>> {
    return this.#context.transaction([this.key], async (tx) => {
      await this.fence(tx);
      return tx.execute<R>(this.key, sql, params);
    });
  }
}
