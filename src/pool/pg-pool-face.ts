import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { QueryResult } from 'pg';
import { QueryError, STALE_MAP_SQLSTATE, ShardRouterError, isDatabaseError, isStaleMap } from '../errors.js';
import { runAbortable } from './abortable.js';
import type { ShardPool } from './shard-pool.js';

/**
 * A pg.Pool face over one of the router's shard pools, for ORMs and query builders that take a
 * node-postgres Pool (Kysely's PostgresDialect, drizzle-orm's node-postgres driver, Prisma's
 * PrismaPg). It is a real `pg.Pool` subclass because drizzle-orm decides with
 * `client instanceof Pool` whether a transaction needs a dedicated connection
 * (drizzle-orm/node-postgres/session.js); without it BEGIN and COMMIT would hop between
 * connections. None of pg.Pool's own machinery is used: connections come from the ShardPool.
 *
 * Errors: PostgreSQL's errors pass through untouched (ORMs map SQLSTATEs themselves), except a
 * write refused by a shard's map fence, which is STALE_BUCKET_MAP; failures to get a connection
 * are the pool's typed errors (POOL_TIMEOUT, SHARD_UNAVAILABLE, ROUTER_CLOSED).
 */

/** Where the next statement or lent connection goes, and the map version it carries. */
export interface PgPoolRoute {
  readonly pool: ShardPool;
  /** undefined: the router's newest (the stamp of statements not routed by a key). */
  readonly version: number | undefined;
}

export interface ShardPgPoolOptions {
  /** Called for every `query` and `connect`: a key's owner is looked up then, by the map of the moment. */
  route(): PgPoolRoute;
  /** Runs a single statement again after a map refresh when a fence refused it (it did nothing); undefined: no retry. */
  readonly retryStale?: (<T>(attempt: () => Promise<T>, first: unknown) => Promise<T>) | undefined;
  /** Told when a fence refused a statement on a lent connection: refreshes the router's map (the error is raised after it). */
  onStale(): Promise<void>;
  /** The router's bound on a `query` (its connections carry the server's statement_timeout anyway). */
  readonly timeoutMillis?: number | undefined;
}

type Callback = (error: Error | undefined, result?: unknown) => void;

/** A pg.Pool whose connections are the router's (see the file comment). */
export class ShardPgPool extends pg.Pool {
  readonly #face: ShardPgPoolOptions;

  constructor(options: ShardPgPoolOptions) {
    // pg.Pool's constructor only stores options; it opens nothing.
    super({ max: 1 });
    this.#face = options;
  }

  /** Runs one statement on a connection of the routed shard (text or pg's query config, values). */
  // biome-ignore lint/suspicious/noExplicitAny: pg.Pool's overloads return any-typed results
  override query(config: unknown, values?: unknown, callback?: unknown): any {
    const done = (typeof values === 'function' ? values : callback) as Callback | undefined;
    const params = typeof values === 'function' ? undefined : values;
    const running = this.#query(config, params);
    if (!done) return running;
    running.then(
      (result) => done(undefined, result),
      (error: Error) => done(error),
    );
    return undefined;
  }

  async #query(config: unknown, values: unknown): Promise<QueryResult> {
    const attempt = () => this.#queryOnce(config, values);
    try {
      return await attempt();
    } catch (error) {
      if (!isStaleMap(error) || !this.#face.retryStale) throw error;
      return this.#face.retryStale(attempt, error);
    }
  }

  async #queryOnce(config: unknown, values: unknown): Promise<QueryResult> {
    const { pool, version } = this.#face.route();
    const timeoutMillis = this.#face.timeoutMillis;
    const send = (client: pg.Client) => client.query(config as pg.QueryConfig, values as unknown[] | undefined);
    try {
      if (timeoutMillis !== undefined) return await runAbortable(pool, version, { timeoutMillis }, send, false);
      const client = await pool.acquireClient(undefined, version);
      try {
        const result = await send(client);
        pool.releaseClient(client);
        return result;
      } catch (error) {
        pool.releaseClient(client, error);
        throw error;
      }
    } catch (error) {
      throw fenced(pool.shardId, error);
    }
  }

  /** Lends a connection of the routed shard (for a transaction); give it back with `release()`. */
  // biome-ignore lint/suspicious/noExplicitAny: pg.Pool's connect overloads
  override connect(callback?: (error: Error | undefined, client: any, done: (release?: unknown) => void) => void): any {
    const lending = this.#connect();
    if (!callback) return lending;
    lending.then(
      (client) => callback(undefined, client, (release) => client.release(release as Error | boolean | undefined)),
      (error: Error) => callback(error, undefined, () => undefined),
    );
    return undefined;
  }

  async #connect(): Promise<LentClient> {
    const { pool, version } = this.#face.route();
    return new LentClient(pool, await pool.acquireClient(undefined, version), () => this.#face.onStale());
  }

  /** A no-op: the connections belong to the router (`router.close()` closes them). */
  override end(callback?: () => void): Promise<void> {
    callback?.();
    return Promise.resolve();
  }

  /** @internal The routed shard pool's counters. */
  shardStats(): ReturnType<ShardPool['stats']> {
    return this.#face.route().pool.stats();
  }
}

// pg.Pool declares its counters as properties; ours are read from the shard pool.
for (const [name, read] of [
  ['totalCount', (stats: ReturnType<ShardPool['stats']>) => stats.size],
  ['idleCount', (stats: ReturnType<ShardPool['stats']>) => stats.available],
  ['waitingCount', (stats: ReturnType<ShardPool['stats']>) => stats.pending],
  ['expiredCount', () => 0],
] as const) {
  Object.defineProperty(ShardPgPool.prototype, name, {
    configurable: true,
    get(this: ShardPgPool) {
      return read(this.shardStats());
    },
  });
}

/**
 * A connection lent by ShardPgPool.connect: `query` (text or config, values, or a submittable
 * such as a cursor), `release(err?)` exactly once, pg's escape helpers. Released with an error
 * (or `true`), or left inside a transaction, the connection is destroyed rather than reused.
 */
export class LentClient extends EventEmitter {
  readonly #pool: ShardPool;
  readonly #client: pg.Client;
  readonly #onStale: () => Promise<void>;
  #released = false;

  constructor(pool: ShardPool, client: pg.Client, onStale: () => Promise<void>) {
    super();
    this.#pool = pool;
    this.#client = client;
    this.#onStale = onStale;
  }

  /** The server process serving this connection (pg_stat_activity.pid). */
  get processID(): number | null {
    return (this.#client as unknown as { processID: number | null }).processID;
  }

  // biome-ignore lint/suspicious/noExplicitAny: pg's query overloads
  query(config: unknown, values?: unknown, callback?: unknown): any {
    if (this.#released) throw new Error('the connection was already released to the pool');
    // A submittable (pg-cursor, pg-query-stream) is handed to pg as it is.
    if (config !== null && typeof config === 'object' && typeof (config as { submit?: unknown }).submit === 'function') {
      return this.#client.query(config as pg.QueryConfig);
    }
    const done = (typeof values === 'function' ? values : callback) as Callback | undefined;
    const params = typeof values === 'function' ? undefined : values;
    const running = this.#client.query(config as pg.QueryConfig, params as unknown[] | undefined).catch(async (error: unknown) => {
      const typed = fenced(this.#pool.shardId, error);
      // The caller's next attempt (a new connect()) then routes by the refreshed map.
      if (typed !== error) await this.#onStale().catch(() => undefined);
      throw typed;
    });
    if (!done) return running;
    running.then(
      (result) => done(undefined, result),
      (error: Error) => done(error),
    );
    return undefined;
  }

  escapeIdentifier(text: string): string {
    return this.#client.escapeIdentifier(text);
  }

  escapeLiteral(text: string): string {
    return this.#client.escapeLiteral(text);
  }

  /** Gives the connection back; with an error (or `true`) it is destroyed instead. */
  release(error?: Error | boolean): void {
    if (this.#released) throw new Error('Release called on client which has already been released to the pool.');
    this.#released = true;
    const destroy = error === true ? new ShardRouterError('CONNECTION_LOST', 'released with destroy') : error || undefined;
    this.#pool.releaseClient(this.#client, destroy);
  }
}

/** A write refused by a shard's map fence becomes STALE_BUCKET_MAP; every other error passes through. */
function fenced(shardId: string, error: unknown): unknown {
  if (isDatabaseError(error) && error.code === STALE_MAP_SQLSTATE) return new QueryError(shardId, error, 'STALE_BUCKET_MAP');
  return error;
}
