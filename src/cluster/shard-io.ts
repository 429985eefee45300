import type { QueryResult, QueryResultRow } from 'pg';

/**
 * A connection borrowed from one shard: the single seam through which everything above the
 * cluster layer talks to PostgreSQL. Unit tests substitute a recording fake.
 */
export interface ShardSession {
  readonly shardId: string;
  /** The connection has failed: nothing more can be sent on it, and nothing sent later was received. */
  readonly broken: boolean;
  /** The server process serving this connection (pg_stat_activity.pid), when known. */
  readonly backendPid: number | undefined;
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
  /**
   * Runs parameterless `preamble` statements and then `sql` in one round trip; resolves to one
   * result per statement. If one fails, the rest are skipped and the call rejects.
   */
  queryPipelined(preamble: readonly string[], sql: string, params?: readonly unknown[]): Promise<QueryResult[]>;
  /** Returns the connection (or destroys it if it broke or was left inside a transaction). Idempotent. */
  release(): void;
}
