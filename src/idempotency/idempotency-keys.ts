import { ShardRouterError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import type { ShardKey } from '../placement/hash.js';
import type { QueryResultRow, ShardQueryResult } from '../pool/session.js';
import type { Transaction } from '../twopc/coordinator.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';
import { decodeExecuteResult, encodeExecuteResult } from './execute-result.js';
import { claimSql, lookupSql, storeSql } from './records.js';
import type { StoredRecord } from './records.js';
import { checkIdempotencyKey, fingerprintOf, parseTransactionResult, transactionResultText } from './shape.js';

/**
 * Idempotent `execute` and `transaction` (docs/idempotency.md has the invariant and the
 * argument). Every call, first or retry, does the same:
 *
 * 1. Lookup: one point read of the record (anchor, idempotency key) on the anchor's owner. A
 *    committed, unexpired record is the answer: IDEMPOTENCY_KEY_REUSED if its fingerprint
 *    differs, else its result, marked as a replay. Nothing runs.
 * 2. Otherwise the guarded transaction, through the router's own `transaction` with the anchor
 *    as first key (so the anchor's shard decides the commit): the claim first (it waits for a
 *    concurrent claim of the same key to end), then `work`, then the result into the record,
 *    all in the same commit. A claim that finds a committed record rolls back and goes to 1.
 *
 * Invariant: `work`'s effects and the record commit together or not at all, on the anchor's
 * owner; so a committed record exists iff the work took effect, and a second run needs a
 * successful claim, which a committed unexpired record prevents.
 */

/** What the idempotency keys need of the router: its point read and its transaction. */
/** `Tx` is the router's transaction handle (with its extras, e.g. `publish`): work gets it unchanged. */
export interface IdempotencyContext<Tx extends Transaction = Transaction> {
  readonly catalogSchema: string;
  readonly ttlMillis: number;
  /** One statement on the owner of `key` by the current map (the router's execute). */
  read<R extends QueryResultRow>(key: ShardKey, sql: string, params: readonly unknown[]): Promise<ShardQueryResult<R>>;
  /** The router's transaction; the shard of `keys[0]` decides its commit. */
  transaction<T>(keys: readonly ShardKey[], work: (tx: Tx) => Promise<T>, options: TransactionOptions | undefined): Promise<T>;
}

/** Passed to `onReplay` when a transaction resolved from its record instead of running. */
export interface IdempotentReplay {
  readonly idempotencyKey: string;
  /** When the first call's transaction began, on the record's shard's clock. */
  readonly firstRunAt: Date;
  /** The shard the record was read from. */
  readonly shardId: string;
}

/** The idempotency options of `router.transaction`. */
export interface IdempotencyOptions {
  /**
   * Makes the transaction idempotent: the first call that commits stores what `work` returned
   * (JSON), and a later call with the same key and the same keys resolves to it without running
   * `work`. 1-200 characters, chosen by the caller (an HTTP Idempotency-Key, a message id).
   */
  readonly idempotencyKey?: string;
  /** Called, before the call resolves, when the result is a replay of an earlier call. */
  readonly onReplay?: (replay: IdempotentReplay) => void;
}

/** The options of an idempotent `router.execute`. */
export interface IdempotentExecuteOptions {
  /** See {@link IdempotencyOptions.idempotencyKey}; the stored result is rows, rowCount, command and fields. */
  readonly idempotencyKey?: string;
}

/** An idempotent execute's result: `replayed` is true when it came from the record. */
export type IdempotentExecuteResult<R extends QueryResultRow = QueryResultRow> = ShardQueryResult<R> & { readonly replayed: boolean };

/** How many times a call goes back to the lookup after its claim found a record (each time means one was just committed). */
const CLAIM_ROUNDS = 3;

/** Thrown inside the guarded transaction when the claim found a committed record: roll back, look it up. */
class ClaimTaken extends Error {}

/** What one idempotent call is, for the shared loop. */
interface Call<T, Tx extends Transaction> {
  readonly anchor: ShardKey;
  readonly idempotencyKey: string;
  readonly fingerprint: string;
  replay(record: StoredRecord, shardId: string): T;
  firstRun(guard: (tx: Tx, work: () => Promise<string>) => Promise<void>): Promise<T>;
}

export class IdempotencyKeys<Tx extends Transaction = Transaction> {
  readonly #context: IdempotencyContext<Tx>;
  /** The statements, built once (the catalog schema is fixed). */
  readonly #sql: { readonly lookup: string; readonly claim: string; readonly store: string };

  constructor(context: IdempotencyContext<Tx>) {
    this.#context = context;
    const schema = context.catalogSchema;
    this.#sql = { lookup: lookupSql(schema), claim: claimSql(schema), store: storeSql(schema) };
  }

  /** `router.transaction` with an idempotency key (keys and work already checked by the router). */
  transaction<T>(keys: readonly ShardKey[], work: (tx: Tx) => Promise<T>, options: TransactionOptions & IdempotencyOptions): Promise<T> {
    const { idempotencyKey, onReplay, ...transactionOptions } = options;
    const key = checkIdempotencyKey(idempotencyKey);
    if (onReplay !== undefined && typeof onReplay !== 'function')
      throw new ShardRouterError('INVALID_ARGUMENT', 'onReplay must be a function');
    if (transactionOptions.readOnly)
      throw new ShardRouterError('INVALID_ARGUMENT', 'a readOnly transaction commits nothing, so it cannot take an idempotencyKey');
    let value!: T;
    return this.#call<T>({
      anchor: keys[0]!,
      idempotencyKey: key,
      fingerprint: fingerprintOf(['transaction', keys.map(String)]),
      replay: (record, shardId) => {
        const replayed = parseTransactionResult(record.result) as T;
        onReplay?.({ idempotencyKey: key, firstRunAt: new Date(record.createdAtMillis), shardId });
        return replayed;
      },
      firstRun: async (guard) => {
        await this.#context.transaction(
          keys,
          (tx) =>
            guard(tx, async () => {
              value = await work(tx);
              return transactionResultText(value);
            }),
          transactionOptions,
        );
        return value;
      },
    });
  }

  /** `router.execute` with an idempotency key: one statement in a guarded one-shard transaction. */
  execute<R extends QueryResultRow>(
    key: ShardKey,
    sql: string,
    params: readonly unknown[] | undefined,
    options: IdempotentExecuteOptions,
  ): Promise<IdempotentExecuteResult<R>> {
    checkExecuteOptions(options);
    const idempotencyKey = checkIdempotencyKey(options.idempotencyKey);
    if (typeof sql !== 'string' || sql.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'sql must be a non-empty string');
    if (params !== undefined && !Array.isArray(params)) throw new ShardRouterError('INVALID_ARGUMENT', 'params must be an array');
    let result!: ShardQueryResult<R>;
    return this.#call<IdempotentExecuteResult<R>>({
      anchor: key,
      idempotencyKey,
      fingerprint: fingerprintOf(['execute', String(key), sql, params ?? []]),
      replay: (record, shardId) => ({ ...decodeExecuteResult<R>(record.result, shardId), replayed: true }),
      firstRun: async (guard) => {
        await this.#context.transaction(
          [key],
          (tx) =>
            guard(tx, async () => {
              result = await tx.execute<R>(key, sql, params);
              return encodeExecuteResult(result);
            }),
          undefined,
        );
        return { ...result, replayed: false };
      },
    });
  }

  async #call<T>(call: Call<T, Tx>): Promise<T> {
    const ids = [String(call.anchor), call.idempotencyKey];
    const guard = async (tx: Tx, work: () => Promise<string>): Promise<void> => {
      await this.#claim(tx, call);
      const resultText = await work();
      await tx.execute(call.anchor, this.#sql.store, [...ids, resultText, this.#context.ttlMillis]);
    };
    try {
      for (let round = 0; round < CLAIM_ROUNDS; round++) {
        const found = await this.#context.read<{ fingerprint: string; result: string; created_ms: number }>(
          call.anchor,
          this.#sql.lookup,
          ids,
        );
        const row = found.rows[0];
        if (row) {
          if (row.fingerprint !== call.fingerprint) throw reused(call.idempotencyKey);
          return call.replay({ fingerprint: row.fingerprint, result: row.result, createdAtMillis: row.created_ms }, found.shardId);
        }
        try {
          return await call.firstRun(guard);
        } catch (error) {
          if (!(error instanceof ClaimTaken)) throw error;
        }
      }
    } catch (error) {
      throw retryableWithKey(error);
    }
    throw new ShardRouterError(
      'TRANSACTION_ABORTED',
      `idempotency key ${JSON.stringify(call.idempotencyKey)}: other calls kept committing it while this one ran; nothing was committed by this call`,
      { retryable: true },
    );
  }

  /** The claim: first statement on the anchor's shard; ClaimTaken when a committed record is there. */
  async #claim<T>(tx: Tx, call: Call<T, Tx>): Promise<void> {
    const params = [String(call.anchor), call.idempotencyKey, call.fingerprint, this.#context.ttlMillis];
    try {
      const claimed = await tx.execute(call.anchor, this.#sql.claim, params);
      if (claimed.rows.length === 0) throw new ClaimTaken();
    } catch (error) {
      // REPEATABLE READ / SERIALIZABLE: the record committed after this transaction's snapshot.
      if ((error as { sqlState?: unknown }).sqlState === '40001') throw new ClaimTaken();
      throw error;
    }
  }
}

function checkExecuteOptions(options: unknown): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new ShardRouterError('INVALID_ARGUMENT', 'execute options must be an object');
  const unknown = Object.keys(options).filter((name) => name !== 'idempotencyKey');
  if (unknown.length > 0) throw new ShardRouterError('INVALID_ARGUMENT', `execute options: unknown option(s) ${unknown.join(', ')}`);
}

function reused(idempotencyKey: string): ShardRouterError {
  return new ShardRouterError(
    'IDEMPOTENCY_KEY_REUSED',
    `idempotency key ${JSON.stringify(idempotencyKey)} was already used for a different call (other keys, SQL or params); nothing ran`,
  );
}

/**
 * Errors after which calling again with the same idempotency key is safe and may succeed,
 * whatever this attempt did: the record settles it (a committed attempt is replayed, an
 * uncommitted one left nothing). They get `retryable: true` on idempotent calls.
 */
const SAFE_WITH_KEY = new Set<ErrorCode>(['CONNECTION_LOST', 'SHARD_UNAVAILABLE', 'IN_DOUBT', 'POOL_TIMEOUT']);

function retryableWithKey(error: unknown): unknown {
  if (!(error instanceof ShardRouterError) || !SAFE_WITH_KEY.has(error.code) || error.retryable) return error;
  return new ShardRouterError(error.code, `${error.message} (idempotent call: retrying with the same idempotency key is safe)`, {
    shardId: error.shardId,
    gid: error.gid,
    cause: error,
    retryable: true,
  });
}
