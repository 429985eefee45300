import type pg from 'pg';
import type { QueryResult, QueryResultRow } from 'pg';
import { ShardRouterError } from '../errors.js';
import { CopySourceError, copyIn } from './copy-stream.js';
import { isConnectionLevel } from './pg-errors.js';
import { PipelinedQuery } from './pipelined-query.js';
import type { PipelinedStatement } from './pipelined-query.js';
import { RAW_TEXT } from './raw-text.js';
import type { ShardPool } from './shard-pool.js';
import type { CopyOut, RawQueryResult, ShardSession } from './session.js';

/** A connection borrowed from a ShardPool for several statements (ShardPool.acquire). */
export class PooledSession implements ShardSession {
  readonly #pool: ShardPool;
  readonly #client: pg.Client;
  #released = false;
  #lastError: unknown;

  constructor(pool: ShardPool, client: pg.Client) {
    this.#pool = pool;
    this.#client = client;
  }

  get shardId(): string {
    return this.#pool.shardId;
  }

  get broken(): boolean {
    return this.#lastError !== undefined || this.#pool.isBroken(this.#client);
  }

  get backendPid(): number | undefined {
    return (this.#client as unknown as { processID?: number | null }).processID ?? undefined;
  }

  async query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    this.#checkOpen();
    try {
      return await this.#client.query<R>(sql, params as unknown[] | undefined);
    } catch (error) {
      throw this.#failed(error);
    }
  }

  async queryPipelined(
    preamble: readonly PipelinedStatement[],
    sql: string,
    params?: readonly unknown[],
    raw = false,
  ): Promise<QueryResult[]> {
    this.#checkOpen();
    try {
      return await new Promise<QueryResult[]>((resolve, reject) => {
        // pg accepts any submittable; its types only describe QueryConfig.
        const submittable = new PipelinedQuery(
          preamble,
          sql,
          (params ?? []) as unknown[],
          (error, results) => (error ? reject(error) : resolve(results)),
          raw,
        );
        this.#client.query(submittable as unknown as pg.QueryConfig);
      });
    } catch (error) {
      throw this.#failed(error);
    }
  }

  async queryRaw(sql: string, params?: readonly unknown[]): Promise<RawQueryResult> {
    this.#checkOpen();
    try {
      const result = await this.#client.query<(string | null)[]>({
        text: sql,
        values: (params ?? []) as unknown[],
        rowMode: 'array',
        types: RAW_TEXT,
        queryMode: 'extended',
      } as pg.QueryConfig);
      return { fields: result.fields, rows: result.rows, rowCount: result.rowCount, command: result.command, shardId: this.shardId };
    } catch (error) {
      throw this.#failed(error);
    }
  }

  async copyIn(sql: string, from: CopyOut): Promise<number> {
    this.#checkOpen();
    try {
      return await copyIn(this.#client, sql, from);
    } catch (error) {
      // The source's failure is its own: this connection is fine (its COPY was failed cleanly).
      if (error instanceof CopySourceError) throw error.cause;
      throw this.#failed(error);
    }
  }

  async cancel(): Promise<void> {
    if (this.#released) return;
    await this.#pool.cancelAndDiscard(this.#client);
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#pool.releaseClient(this.#client, this.#lastError);
  }

  #checkOpen(): void {
    if (this.#released) {
      throw new ShardRouterError('INVALID_ARGUMENT', `shard ${this.shardId}: session used after release`, { shardId: this.shardId });
    }
  }

  /** Remembers a connection-level failure (the connection is destroyed on release) and returns the typed error. */
  #failed(error: unknown): unknown {
    if (isConnectionLevel(error)) this.#lastError = error;
    return this.#pool.translateError(this.#client, error);
  }
}
