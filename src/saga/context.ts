import type { IdempotentExecuteResult } from '../idempotency/idempotency-keys.js';
import type { ShardKey } from '../placement/hash.js';
import type { QueryResultRow, ShardQueryResult } from '../pool/session.js';
import type { Transaction } from '../twopc/coordinator.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';

/** What the saga engine needs of the router (built in router/shard-router.ts). */
export interface SagaContext {
  readonly catalogSchema: string;
  /** This router's identity as a lease owner (shows in the log). */
  readonly owner: string;
  readonly leaseMillis: number;
  /** Throws INVALID_KEY for a key the router cannot hash. */
  checkKey(key: ShardKey): void;
  /** One statement on the owner of `key` (the router's execute: fenced, re-sent after a move). */
  execute<R extends QueryResultRow>(key: ShardKey, sql: string, params: readonly unknown[]): Promise<ShardQueryResult<R>>;
  idempotentExecute<R extends QueryResultRow>(
    key: ShardKey,
    sql: string,
    params: readonly unknown[] | undefined,
    idempotencyKey: string,
  ): Promise<IdempotentExecuteResult<R>>;
  transaction<T>(
    keys: readonly ShardKey[],
    work: (tx: Transaction) => Promise<T>,
    options: TransactionOptions & { readonly idempotencyKey: string },
  ): Promise<T>;
  /** The current members, for reads of every shard's log. */
  shardIds(): readonly string[];
  /** The shard that owns `key` by the current map. */
  ownerOf(key: ShardKey): string;
  executeOn<R extends QueryResultRow>(shardId: string, sql: string, params: readonly unknown[]): Promise<ShardQueryResult<R>>;
  /**
   * `sql` on every member shard at one map version, its rows limited by `guard` (a condition on
   * `keyColumn`) to the buckets the shard owns, so a moved bucket's old copy is not counted;
   * read again after a stale map.
   */
  readOwned<R extends QueryResultRow>(
    sql: (guard: string) => string,
    keyColumn: string,
    params: readonly unknown[],
  ): Promise<{ readonly shardId: string; readonly rows: R[] }[]>;
}

/** @internal Test-only: runs around every log write of a runner (a chaos test SIGKILLs itself here). */
export const sagaTestHooks: {
  logWrite:
    | ((event: { readonly sagaId: string; readonly phase: 'before' | 'after'; readonly n: number; readonly state: string }) => void)
    | undefined;
} = { logWrite: undefined };
