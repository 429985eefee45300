import genericPool from 'generic-pool';
import pg from 'pg';
import type { QueryConfig, QueryResult, QueryResultRow } from 'pg';
import type { PoolConfig, ResolvedShardConfig } from '../config.js';
import { QueryError, ShardRouterError, isDatabaseError } from '../errors.js';
import type { ShardSession } from './shard-io.js';

/** How long a failed connection attempt holds its pool slot, so a down shard is not hammered. */
const CONNECT_RETRY_DELAY_MS = 250;

/** Point-in-time counters of one shard's pool. */
export interface PoolStats {
  /** Open connections, idle or lent out. */
  readonly size: number;
  readonly available: number;
  readonly borrowed: number;
  /** Callers waiting for a connection. */
  readonly pending: number;
  readonly min: number;
  readonly max: number;
}

/**
 * The one generic-pool internal we touch: its queue of waiting acquire() calls. generic-pool
 * retries a failed create silently and leaves callers waiting until their acquire timeout; we
 * reject them at once instead. The version is pinned in package.json; if the field ever goes
 * away, callers simply wait for POOL_TIMEOUT as before.
 */
interface WaitingQueue {
  readonly length: number;
  dequeue(): { reject(reason: unknown): void } | undefined;
}

/**
 * One generic-pool of pg.Client for one shard.
 *
 * Invariants:
 * - A client that saw a connection-level error (socket error, server-side FATAL such as
 *   pg_terminate_backend, unexpected end) is destroyed, never handed out again.
 * - A client is returned only when idle: one left inside a transaction (the caller ran BEGIN
 *   through `execute`) is destroyed, which makes the server roll that transaction back.
 * - A failed connection attempt fails every caller waiting at that moment with SHARD_UNAVAILABLE
 *   instead of letting them sit until the acquire timeout; further attempts are spaced out.
 */
export class ShardPool {
  readonly shardId: string;
  readonly #pool: genericPool.Pool<pg.Client>;
  readonly #config: Readonly<PoolConfig>;
  /** Clients that must be destroyed rather than reused. */
  readonly #broken = new WeakSet<pg.Client>();
  #closing: Promise<void> | undefined;

  constructor(shard: ResolvedShardConfig, config: Readonly<PoolConfig>, applicationName: string) {
    this.shardId = shard.id;
    this.#config = config;
    const connectionString = shard.connectionString;
    this.#pool = genericPool.createPool<pg.Client>(
      {
        create: async () => {
          const client = new pg.Client({
            connectionString,
            connectionTimeoutMillis: config.connectTimeoutMillis,
            application_name: applicationName,
          });
          // Without a listener an idle client's socket error would crash the process.
          client.on('error', () => this.#broken.add(client));
          client.on('end', () => this.#broken.add(client));
          try {
            await client.connect();
            return client;
          } catch (error) {
            void client.end().catch(() => undefined);
            this.#failWaiting(this.#unavailable(error));
            await new Promise((resolve) => setTimeout(resolve, CONNECT_RETRY_DELAY_MS));
            throw error;
          }
        },
        destroy: async (client) => {
          await client.end().catch(() => undefined);
        },
        validate: async (client) => !this.#broken.has(client),
      },
      {
        max: config.max,
        min: config.min,
        acquireTimeoutMillis: config.acquireTimeoutMillis,
        idleTimeoutMillis: config.idleTimeoutMillis,
        evictionRunIntervalMillis: Math.min(config.idleTimeoutMillis, 10_000),
        testOnBorrow: true,
        autostart: true,
      },
    );
  }

  /**
   * Runs one statement on a pooled connection, always with the extended protocol, so a string
   * holding several statements is an error rather than a way around parameters. PostgreSQL
   * errors become QUERY_FAILED (the pg error is the `cause`); a broken connection becomes
   * CONNECTION_LOST.
   */
  async query<R extends QueryResultRow = QueryResultRow>(sql: string, params: readonly unknown[]): Promise<QueryResult<R>> {
    const client = await this.acquireClient();
    try {
      // The extended protocol even without parameters: exactly one statement per call.
      const result = await client.query<R>({ text: sql, values: params as unknown[], queryMode: 'extended' } as QueryConfig);
      this.releaseClient(client);
      return result;
    } catch (error) {
      this.releaseClient(client, error);
      throw this.translateError(client, error);
    }
  }

  /** Borrows a connection for several statements; the session must be released exactly once. */
  async acquire(): Promise<ShardSession> {
    const client = await this.acquireClient();
    return new PooledSession(this, client);
  }

  /** @internal Borrow a raw client; pair with releaseClient. */
  async acquireClient(): Promise<pg.Client> {
    if (this.#closing) throw closedError();
    try {
      return await this.#pool.acquire();
    } catch (error) {
      throw this.#acquireError(error);
    }
  }

  /** @internal Return a client; it is destroyed if it broke, errored at connection level or sits in a transaction. */
  releaseClient(client: pg.Client, error?: unknown): void {
    if (this.#broken.has(client) || isConnectionLevel(error) || client.getTransactionStatus() !== 'I') {
      this.#broken.add(client);
      void this.#pool.destroy(client).catch(() => undefined);
    } else {
      void this.#pool.release(client).catch(() => undefined);
    }
  }

  /** @internal Map an error from client.query to this library's typed errors. */
  translateError(client: pg.Client, error: unknown): unknown {
    if (this.#broken.has(client) || isConnectionLevel(error)) {
      return new ShardRouterError(
        'CONNECTION_LOST',
        `shard ${this.shardId}: the connection broke during the statement, so it may or may not have taken effect`,
        { shardId: this.shardId, cause: error },
      );
    }
    if (error instanceof Error) return new QueryError(this.shardId, error);
    return error;
  }

  stats(): PoolStats {
    return {
      size: this.#pool.size,
      available: this.#pool.available,
      borrowed: this.#pool.borrowed,
      pending: this.#pool.pending,
      min: this.#config.min,
      max: this.#config.max,
    };
  }

  /** Fails waiting callers, waits for lent-out clients to come back, then closes every connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#failWaiting(closedError());
      await this.#pool.drain();
      await this.#pool.clear();
    })();
    return this.#closing;
  }

  #failWaiting(error: ShardRouterError): void {
    const waiting = (this.#pool as unknown as { _waitingClientsQueue?: WaitingQueue })._waitingClientsQueue;
    if (!waiting) return;
    for (let request = waiting.dequeue(); request; request = waiting.dequeue()) request.reject(error);
  }

  #unavailable(cause: unknown): ShardRouterError {
    const reason = cause instanceof Error ? cause.message : String(cause);
    return new ShardRouterError('SHARD_UNAVAILABLE', `shard ${this.shardId} is unavailable: ${reason}`, {
      shardId: this.shardId,
      cause,
    });
  }

  #acquireError(error: unknown): unknown {
    if (error instanceof ShardRouterError) return error;
    if (error instanceof Error && error.name === 'TimeoutError') {
      return new ShardRouterError(
        'POOL_TIMEOUT',
        `shard ${this.shardId}: no connection became free within ${this.#config.acquireTimeoutMillis} ms (pool max ${this.#config.max})`,
        { shardId: this.shardId, cause: error },
      );
    }
    if (this.#closing) return closedError();
    return this.#unavailable(error);
  }
}

class PooledSession implements ShardSession {
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

  async query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
    if (this.#released) {
      throw new ShardRouterError('INVALID_ARGUMENT', `shard ${this.shardId}: session used after release`, { shardId: this.shardId });
    }
    try {
      return await this.#client.query<R>(sql, params as unknown[] | undefined);
    } catch (error) {
      if (isConnectionLevel(error)) this.#lastError = error;
      throw this.#pool.translateError(this.#client, error);
    }
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#pool.releaseClient(this.#client, this.#lastError);
  }
}

/**
 * Errors after which a connection must not be reused: socket errors and "Connection terminated"
 * (anything that is neither a server error nor a client-side TypeError/RangeError from
 * serializing parameters), server errors that end the session (FATAL/PANIC, e.g.
 * pg_terminate_backend's 57P01), and connection-exception SQLSTATEs (class 08).
 */
function isConnectionLevel(error: unknown): boolean {
  if (error === undefined) return false;
  if (isDatabaseError(error)) {
    return error.severity === 'FATAL' || error.severity === 'PANIC' || error.code.startsWith('08');
  }
  return !(error instanceof TypeError || error instanceof RangeError);
}

function closedError(): ShardRouterError {
  return new ShardRouterError('ROUTER_CLOSED', 'the router is closed');
}
