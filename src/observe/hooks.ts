/**
 * The hooks the layers above call, as interfaces with no-op defaults: the pool, the 2PC engine,
 * the broadcaster and the rebalancer depend only on these, never on what is plugged in behind
 * them (observer.ts). Each is a plain object the router builds once per pool, transaction or
 * broadcast.
 */

/** What a shard's pool reports. */
export interface PoolObserver {
  /** A caller got a connection after waiting this long (0: an idle one was at hand). */
  acquired(waitSeconds: number): void;
  /** A new connection opened. */
  connected(): void;
  /** A connection attempt failed; `noLiveConnection`: the pool has none left, so the shard looks down. */
  connectFailed(error: unknown, noLiveConnection: boolean): void;
  /** An open connection failed (socket error, server-side FATAL). */
  connectionError(error: unknown): void;
}

export const NO_POOL_OBSERVER: PoolObserver = Object.freeze({
  acquired() {},
  connected() {},
  connectFailed() {},
  connectionError() {},
});

export type TxnProtocol = '1pc' | '2pc';

/** The two-phase commit's steps that get a span of their own. */
export type TxnStep = 'PREPARE TRANSACTION' | 'COMMIT' | 'COMMIT PREPARED' | 'ROLLBACK PREPARED';

/** What one transaction reports (the coordinator calls it; a broadcast write's transaction too). */
export interface TransactionObserver {
  /** How the transaction ended up committing (or would have): two-phase when it wrote to several shards. */
  protocol(protocol: TxnProtocol): void;
  /** The global id of its two-phase commit. */
  gid(gid: string): void;
  /** Runs one protocol step on one shard (`COMMIT` on the decision shard is the decision). */
  step<T>(step: TxnStep, shardId: string, work: () => Promise<T>): Promise<T>;
  /** Runs one statement of the callback (tx.execute, tx.executeOn, tx.query) on one shard. */
  statement<T extends { readonly command: string }>(
    shardId: string,
    sql: string,
    routed: StatementRouting,
    work: () => Promise<T>,
  ): Promise<T>;
}

/** How a transaction's statement was routed. */
export interface StatementRouting {
  /** The key's bucket; undefined for a statement sent to a shard by id. */
  readonly bucket: number | undefined;
  /** The version of the bucket map the transaction's attempt routes by. */
  readonly mapVersion: number | undefined;
}

export const NO_TRANSACTION_OBSERVER: TransactionObserver = Object.freeze({
  protocol() {},
  gid() {},
  step: <T>(_step: TxnStep, _shardId: string, work: () => Promise<T>) => work(),
  statement: <T>(_shardId: string, _sql: string, _routed: StatementRouting, work: () => Promise<T>) => work(),
});

/** What a broadcast reports: each shard's statement, and the transaction of a write. */
export interface BroadcastObserver extends TransactionObserver {
  /** Runs the statement `sql` sends to one shard (the rewritten shard query of a read). */
  shard<T extends { readonly command: string }>(shardId: string, sql: string, work: () => Promise<T>): Promise<T>;
}

export const NO_BROADCAST_OBSERVER: BroadcastObserver = Object.freeze({
  ...NO_TRANSACTION_OBSERVER,
  shard: <T>(_shardId: string, _sql: string, work: () => Promise<T>) => work(),
});

/**
 * What a streamed broadcast reports: its shards' statements (each cursor, from its open to its
 * close), and the whole stream as one operation (from its first read to its end).
 */
export interface StreamObserver extends BroadcastObserver {
  /** Runs the operation `work` stands for (it settles when the stream ends) and records how it ended. */
  run<T>(work: () => Promise<T>): Promise<T>;
}

export const NO_STREAM_OBSERVER: StreamObserver = Object.freeze({
  ...NO_BROADCAST_OBSERVER,
  run: <T>(work: () => Promise<T>) => work(),
});

/** A bucket move as the rebalancer reports it. */
export interface MoveInfo {
  readonly moveId: string;
  readonly buckets: readonly number[];
  readonly source: string;
  readonly target: string;
}

export interface MoveResult extends MoveInfo {
  readonly rowsCopied: number;
  readonly bytesCopied: number;
  readonly pauseMillis: number;
  readonly mapVersion: number;
}

/** What the rebalancer reports about its moves. */
export interface MoveObserver {
  moveStarted(move: MoveInfo): void;
  moveFinished(move: MoveResult): void;
  moveFailed(move: MoveInfo, error: unknown): void;
}

export const NO_MOVE_OBSERVER: MoveObserver = Object.freeze({
  moveStarted() {},
  moveFinished() {},
  moveFailed() {},
});
