import type { FieldDef, QueryResult, QueryResultRow } from 'pg';
import type { PipelinedStatement } from './pipelined-query.js';

/**
 * The seam: every layer above pool/ talks to PostgreSQL through these interfaces and never
 * touches the driver (test/unit/layers.test.ts checks it). Unit tests substitute recording fakes.
 * The driver's result types are re-exported here so that nothing above imports `pg`.
 */
export type { FieldDef, PipelinedStatement, QueryResult, QueryResultRow };

/** What a statement returned, as far as callers that only read rows need. */
export interface QueryRows<R> {
  readonly rows: R[];
  readonly rowCount: number | null;
}

/** pg's result shape plus the shard that produced it. */
export interface ShardQueryResult<R extends QueryResultRow = QueryResultRow> {
  readonly rows: R[];
  readonly rowCount: number | null;
  readonly fields: FieldDef[];
  /** The command tag's verb: 'SELECT', 'INSERT', ... */
  readonly command: string;
  readonly shardId: string;
}

/** A shard's rows exactly as the server sent them: text forms by column, null for NULL. */
export interface RawQueryResult {
  readonly fields: FieldDef[];
  readonly rows: (string | null)[][];
  readonly rowCount: number | null;
  readonly command: string;
  readonly shardId: string;
}

/** Anything that runs one statement: a pool, a borrowed session, a transaction on one shard, a dedicated connection. */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<QueryRows<R>>;
}

/**
 * A connection borrowed from one shard for several statements (a transaction). Released to the
 * pool exactly once.
 */
export interface ShardSession extends Queryable {
  readonly shardId: string;
  /** The connection has failed: nothing more can be sent on it, and nothing sent later was received. */
  readonly broken: boolean;
  /** The server process serving this connection (pg_stat_activity.pid), when known. */
  readonly backendPid: number | undefined;
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
  /**
   * Runs `preamble` statements (parameterless text, or text with values) and then `sql` in one
   * round trip; resolves to one result per statement. If one fails, the rest are skipped and the
   * call rejects. `raw`: every result as queryRaw reads it (rows as arrays of text).
   */
  queryPipelined(preamble: readonly PipelinedStatement[], sql: string, params?: readonly unknown[], raw?: boolean): Promise<QueryResult[]>;
  /**
   * Runs one statement and returns every value as the server's text, rows as arrays (no type
   * parsing): what an exact merge of several shards' rows reads (tx.query over several shards).
   */
  queryRaw(sql: string, params?: readonly unknown[]): Promise<RawQueryResult>;
  /** Returns the connection (or destroys it if it broke or was left inside a transaction). Idempotent. */
  release(): void;
  /**
   * Asks the server to cancel the statement running on this connection, if any; the connection
   * is then destroyed on release (a late cancel can never hit a later statement).
   */
  cancel?(): Promise<void>;
  /**
   * Runs `sql`, a `COPY ... FROM STDIN`, fed with the bytes of `from` as they arrive (a COPY
   * pipe from another server); resolves with the rows the server reports. If `from` fails,
   * the COPY is failed and the call rejects with `from`'s error, untranslated; if this
   * connection fails, `from` is aborted. Optional: recording fakes may leave it out.
   */
  copyIn?(sql: string, from: CopyOut): Promise<number>;
}

/**
 * A connection of its own outside the pool, held as long as its owner needs it and then ended:
 * session advisory locks (a move's lease), a snapshot copy, DDL with lock timeouts. Errors are
 * PostgreSQL's own (with `code`), since its owner reacts to SQLSTATEs such as 55P03.
 */
export interface DedicatedConnection extends Queryable {
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
  /** Closes the connection; the server releases its session locks. Never throws. */
  end(): Promise<void>;
  /**
   * Calls `listener` once when the connection breaks or ends (socket error, the server ending
   * the session, end()), so a holder of session locks learns at once that it lost them.
   * Returns the function that removes the listener.
   */
  onLost(listener: (cause: unknown) => void): () => void;
  /**
   * Starts `sql`, a `COPY ... TO STDOUT`, and returns its reader; nothing else may run on the
   * connection until it is read to the end or aborted (an abort closes the connection).
   */
  copyOut(sql: string): CopyOut;
}

/**
 * A `COPY ... TO STDOUT` under way (DedicatedConnection.copyOut): its CopyData bytes, a batch
 * at a time, as the server sent them. The server is held back while batches wait unread.
 */
export interface CopyOut {
  /** The next batch of bytes, or null once the COPY completed. Rejects with the server's error if it failed. */
  read(): Promise<Buffer | null>;
  /** Stops a COPY still running by closing its connection (a COPY TO STDOUT cannot be stopped otherwise); later reads return null. */
  abort(): void;
  /** The rows the server reported, once the COPY completed. */
  readonly rows: number;
}

/** A LISTEN on one channel, over a dedicated connection. */
export interface Listener {
  /** Stops listening and closes the connection. Never throws. */
  close(): Promise<void>;
}

/** A streaming read of one statement's rows as raw text, a batch at a time (see ShardPool.openCursor). */
export interface RowCursor {
  /** Reads the first batch (kept for next()) and returns the result's columns. */
  open(): Promise<FieldDef[]>;
  /** The next batch; empty when the rows are exhausted (the connection is then returned). */
  next(): Promise<(string | null)[][]>;
  /** Closes the cursor and returns (or, after a failure or cancel, retires) the connection. Idempotent. */
  close(): Promise<void>;
}
