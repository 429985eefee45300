import type { FieldDef, QueryResultRow } from '../pool/session.js';
import type { ShardRouterError } from '../errors.js';

/** Options of {@link ShardRouter.broadcast}. */
export interface BroadcastOptions {
  /**
   * Return the merged rows of the shards that answered plus one entry per failed shard in
   * `failures`, instead of failing the whole broadcast. Default false (all or error).
   * Writes (non-SELECT) are always all or nothing.
   */
  readonly partial?: boolean;
  /** Cancel the shard queries still running and fail with BROADCAST_TIMEOUT after this long. Default `broadcast.timeoutMillis` of the config. */
  readonly timeoutMillis?: number;
  /**
   * Aborting it cancels the shard queries of a read still running (on the servers) and rejects
   * with STATEMENT_CANCELLED. A write (one two-phase commit) is refused if the signal has
   * already aborted, and otherwise runs to its end.
   */
  readonly signal?: AbortSignal;
}

/** The broadcaster's own options: router.query narrows a read to the shards of its pinned keys. */
export interface ScopedBroadcastOptions extends BroadcastOptions {
  /**
   * Read only the members owning these buckets in the map each attempt routes by (the buckets
   * of a statement's pinned keys). Undefined: every member.
   */
  readonly buckets?: readonly number[];
}

/** Options of {@link ShardRouter.broadcastStream}. */
export interface BroadcastStreamOptions {
  /** Rows fetched from each shard per round trip; memory stays within a small multiple of shards x batchSize. Default 1000. */
  readonly batchSize?: number;
  /**
   * Cancel the shard statements on the servers, close the cursors and fail with BROADCAST_TIMEOUT
   * (retryable) if the whole stream has not finished after this long, the consumer's time
   * included. Default none (aggregate and DISTINCT queries, merged whole first: `broadcast.timeoutMillis`).
   */
  readonly timeoutMillis?: number;
  /**
   * Aborting it cancels every shard's running statement on the server (pg_cancel_backend),
   * closes the cursors and returns their connections; the iterator then rejects with
   * STATEMENT_CANCELLED (retryable), the signal's reason as its cause, even between two rows.
   */
  readonly signal?: AbortSignal;
}

/** A shard that failed in a partial broadcast. */
export interface ShardFailure {
  readonly shardId: string;
  readonly error: ShardRouterError;
}

/** What {@link ShardRouter.broadcast} returns: the shape of pg's result, as one server would give it. */
export interface BroadcastResult<R extends QueryResultRow = QueryResultRow> {
  /** Parsed by pg's type parsers, exactly as a pg.Client would parse the same query on one server. */
  readonly rows: R[];
  /** Rows returned for SELECT; rows affected, summed over the shards, for writes. */
  readonly rowCount: number;
  /** One per result column (helper columns the rewrite added are never included). */
  readonly fields: FieldDef[];
  /** The command tag's verb: 'SELECT', 'UPDATE', 'CREATE', ... */
  readonly command: string;
  /** Shards that failed; non-empty only with `partial: true`. */
  readonly failures: readonly ShardFailure[];
}
