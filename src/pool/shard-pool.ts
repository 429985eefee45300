import genericPool from 'generic-pool';
import pg from 'pg';
import type { QueryConfig, QueryResultRow } from 'pg';
import type { PoolConfig, ResolvedShardConfig } from '../config.js';
import { ShardRouterError, closedError } from '../errors.js';
import { NO_POOL_OBSERVER } from '../observe/hooks.js';
import type { PoolObserver } from '../observe/hooks.js';
import { awaitRetired, cancel } from './cancel.js';
import type { CancelTarget } from './cancel.js';
import { ShardCursor } from './cursor.js';
import { dedicated, listenOn, openClient, startupOptions } from './dedicated.js';
import { HandOffQueue } from './hand-off.js';
import { isConnectionLevel, translateError, unavailableError } from './pg-errors.js';
import { PooledSession } from './pooled-session.js';
import { RAW_TEXT } from './raw-text.js';
import { pgSslOption } from './tls.js';
import type { DedicatedConnection, Listener, RawQueryResult, RowCursor, ShardQueryResult, ShardSession } from './session.js';

export type { RawQueryResult, ShardQueryResult } from './session.js';

/** Session setting that carries a router connection's map version, which the shards' write fence checks (unset: not a router). */
export const MAP_VERSION_SETTING = 'pg_shard_router.map_version';

/** What a statement without parameters sends (query is also a Queryable, whose callers may omit them). */
const NO_PARAMS: readonly unknown[] = Object.freeze([]);

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
  /**
   * Connections borrowed from generic-pool but idle: the hot path's own LIFO stack. A statement
   * takes one here and puts it back synchronously, without generic-pool's per-borrow promises and
   * objects. generic-pool still creates, counts and evicts: parked connections go back to it
   * whenever a caller waits in its queue, at every sweep (so its idle eviction sees them), and
   * at close.
   */
  readonly #parked: pg.Client[] = [];
  /** Callers waiting while every connection is lent out: a released one is handed straight over. */
  readonly #handOff: HandOffQueue<pg.Client>;
  readonly #sweeper: NodeJS.Timeout;
  #closing: Promise<void> | undefined;
  readonly #connectionString: string;
  readonly #applicationName: string;
  readonly #ssl: ResolvedShardConfig['ssl'];
  /**
   * The bucket-map version the router routes by, carried by every connection as the session
   * setting the shards' write fence checks (MAP_VERSION_SETTING). Undefined: not a router's
   * pool, nothing is set. A connection stamped with an older version is re-stamped when next
   * borrowed (one extra round trip per connection per map change).
   */
  #routingVersion: number | undefined;
  readonly #stamps = new WeakMap<pg.Client, number>();
  /** Where acquire waits, new connections and connection failures are reported (the router's observer). */
  observer: PoolObserver = NO_POOL_OBSERVER;

  constructor(
    shard: ResolvedShardConfig,
    config: Readonly<PoolConfig>,
    applicationName: string,
    settings: Readonly<Record<string, string>> = {},
  ) {
    this.shardId = shard.id;
    this.#config = config;
    this.#connectionString = shard.connectionString;
    this.#applicationName = applicationName;
    this.#ssl = shard.ssl;
    this.#handOff = new HandOffQueue(config.acquireTimeoutMillis, () => this.#timeoutError());
    this.#pool = genericPool.createPool<pg.Client>(
      {
        create: () => this.#create(settings),
        destroy: async (client) => {
          await client.end().catch(() => undefined);
        },
      },
      {
        max: config.max,
        min: config.min,
        // No acquireTimeoutMillis here: generic-pool would arm a timer on every acquire, even one
        // served at once from an idle connection; #borrow arms one only when the caller must wait.
        // Soft idle eviction keeps `min` connections open (the hard idleTimeoutMillis would close
        // them too, and _ensureMinimum would reopen them, churning every period).
        softIdleTimeoutMillis: config.idleTimeoutMillis,
        idleTimeoutMillis: Number.MAX_SAFE_INTEGER,
        evictionRunIntervalMillis: Math.min(config.idleTimeoutMillis, 10_000),
        numTestsPerEvictionRun: config.max,
        autostart: true,
      },
    );
    this.#sweeper = setInterval(() => this.#unpark(), Math.min(config.idleTimeoutMillis, 10_000));
    this.#sweeper.unref();
  }

  /** generic-pool's create: a connected client carrying `settings` and the routing version from its startup packet. */
  async #create(settings: Readonly<Record<string, string>>): Promise<pg.Client> {
    let client: pg.Client | undefined;
    try {
      // Inside the try: pg can throw while building a client (e.g. an sslrootcert file
      // that does not exist), and a create that fails without the delay below would let
      // generic-pool retry in a tight loop that starves the event loop.
      const version = this.#routingVersion;
      const startup = { ...settings, ...(version === undefined ? {} : { [MAP_VERSION_SETTING]: String(version) }) };
      const created = new pg.Client({
        connectionString: this.#connectionString,
        connectionTimeoutMillis: this.#config.connectTimeoutMillis,
        application_name: this.#applicationName,
        keepAlive: true,
        // Session settings ride in the startup packet: no extra round trip.
        ...startupOptions(startup),
        ...pgSslOption(this.#ssl),
      });
      if (version !== undefined) this.#stamps.set(created, version);
      client = created;
      // Without a listener an idle client's socket error would crash the process.
      created.on('error', (error) => {
        this.#markBroken(created);
        this.observer.connectionError(error);
      });
      created.on('end', () => this.#markBroken(created));
      await created.connect();
      this.observer.connected();
      return created;
    } catch (error) {
      void client?.end().catch(() => undefined);
      // No live connection at all (parked ones count as borrowed, broken ones are gone):
      // the shard looks down, so nobody waiting should sit until the acquire timeout.
      // With live connections, waiters get the next one back.
      const noLiveConnection = this.#pool.borrowed + this.#pool.available === 0;
      this.observer.connectFailed(error, noLiveConnection);
      if (noLiveConnection) this.#failWaiting(unavailableError(this.shardId, error));
      await new Promise((resolve) => setTimeout(resolve, CONNECT_RETRY_DELAY_MS));
      throw error;
    }
  }

  /**
   * Runs one statement on a pooled connection, always with the extended protocol, so a string
   * holding several statements is an error rather than a way around parameters. PostgreSQL
   * errors become QUERY_FAILED (the pg error is the `cause`); a broken connection becomes
   * CONNECTION_LOST. This is the router's hot path: one async frame from borrow to release.
   */
  async query<R extends QueryResultRow = QueryResultRow>(
    sql: string,
    params: readonly unknown[] = NO_PARAMS,
    version: number | undefined = this.#routingVersion,
  ): Promise<ShardQueryResult<R>> {
    if (this.#closing) throw closedError();
    let client = this.#parked.pop();
    if (client) this.observer.acquired(0);
    else client = await this.#borrowWaiting();
    try {
      if (this.#stamps.get(client) !== version) await this.#stamp(client, version);
      // pg uses the extended protocol by itself when there are values; the config-object form
      // (which pg copies, so it costs more) only when there are none.
      const result =
        params.length > 0
          ? await client.query<R>(sql, params as unknown[])
          : await client.query<R>({ text: sql, queryMode: 'extended' } as QueryConfig);
      this.releaseClient(client);
      return { rows: result.rows, rowCount: result.rowCount, fields: result.fields, command: result.command, shardId: this.shardId };
    } catch (error) {
      this.releaseClient(client, error);
      throw this.translateError(client, error);
    }
  }

  /**
   * Runs one statement and returns the raw text of every value (no type parsing), as arrays.
   * When `signal` aborts while the statement runs, the server is asked to cancel it, the
   * connection is discarded (so a late cancel can never hit a later statement), and the call
   * rejects with the signal's reason.
   */
  async queryRaw(sql: string, params: readonly unknown[], signal?: AbortSignal): Promise<RawQueryResult> {
    if (this.#closing) throw closedError();
    const client = await this.acquireClient(signal);
    if (signal?.aborted) {
      this.releaseClient(client);
      throw signal.reason;
    }
    const running = client.query<(string | null)[]>({
      text: sql,
      values: params as unknown[],
      rowMode: 'array',
      types: RAW_TEXT,
      queryMode: 'extended',
    } as QueryConfig);
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        reject(signal!.reason);
        // The caller has its answer; the connection is retired once the statement is over.
        running.catch(() => undefined);
        void this.#retire(client, running);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    try {
      const result = await (signal ? Promise.race([running, aborted]) : running);
      signal?.removeEventListener('abort', onAbort!);
      this.releaseClient(client);
      return {
        fields: result.fields,
        rows: result.rows as unknown as (string | null)[][],
        rowCount: result.rowCount,
        command: result.command,
        shardId: this.shardId,
      };
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      signal?.removeEventListener('abort', onAbort!);
      this.releaseClient(client, error);
      throw this.translateError(client, error);
    }
  }

  /**
   * Cancels the statement `client` runs and destroys the connection once the statement is
   * over (or after a grace period, by closing its socket): a cancel that arrives late can then
   * never hit a later statement.
   */
  async #retire(client: pg.Client, running: Promise<unknown>): Promise<void> {
    await this.cancelAndDiscard(client);
    await awaitRetired(client, running);
    this.releaseClient(client);
  }

  /** @internal Cancel whatever a borrowed client runs and mark it for destruction on release. */
  async cancelAndDiscard(client: pg.Client): Promise<void> {
    this.#broken.add(client);
    await cancel(client, this.cancelTarget);
  }

  /** @internal Where a canceller connects: this pool's server, TLS options and application name. */
  get cancelTarget(): CancelTarget {
    return { connectionString: this.#connectionString, applicationName: this.#applicationName, ssl: this.#ssl };
  }

  /** The map version this pool's connections carry (see #routingVersion). */
  get routingVersion(): number | undefined {
    return this.#routingVersion;
  }

  set routingVersion(version: number) {
    this.#routingVersion = version;
  }

  /**
   * Sets the map version a connection carries to the one the caller routed by. Never the pool's
   * newest instead: a statement routed by version v but stamped v+1 would pass the fence of a
   * shard that lost the bucket at v+1 and land on a non-owner.
   */
  async #stamp(client: pg.Client, version: number | undefined): Promise<void> {
    if (version === undefined) return;
    await client.query(`SELECT set_config('${MAP_VERSION_SETTING}', $1, false)`, [String(version)]);
    this.#stamps.set(client, version);
  }

  /**
   * A connection outside the pool, owned by the caller (who must end it): for session locks,
   * snapshot copies and DDL that must not hold a pool slot. `settings` ride in the startup
   * packet; `purpose` shows in pg_stat_activity's application_name.
   */
  async openDedicated(settings: Readonly<Record<string, string>> = {}, purpose?: string): Promise<DedicatedConnection> {
    return dedicated(await this.#openClient(settings, purpose));
  }

  /**
   * LISTENs on `channel` over a dedicated connection: `onNotification` gets each payload,
   * `onLost` is called once if the connection breaks (not after close()).
   */
  async listen(channel: string, onNotification: (payload: string) => void, onLost: () => void): Promise<Listener> {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`bad channel name ${channel}`);
    const client = await this.#openClient({}, 'map listener');
    return listenOn(client, channel, onNotification, onLost, (error) => this.translateError(client, error));
  }

  /**
   * A cursor over `sql` that reads `batchSize` rows at a time as raw text on a pooled
   * connection (taken at the first read). When `signal` aborts, the statement is cancelled and
   * the connection retired.
   */
  openCursor(sql: string, params: readonly unknown[], batchSize: number, signal: AbortSignal): RowCursor {
    return new ShardCursor(this, sql, params, batchSize, signal);
  }

  async #openClient(settings: Readonly<Record<string, string>>, purpose: string | undefined): Promise<pg.Client> {
    if (this.#closing) throw closedError();
    try {
      return await openClient(this.#connectionString, {
        // A named purpose shows in pg_stat_activity apart from the pool's connections.
        applicationName: purpose ? `${this.#applicationName} ${purpose}` : this.#applicationName,
        connectTimeoutMillis: this.#config.connectTimeoutMillis,
        settings,
        ssl: this.#ssl,
      });
    } catch (error) {
      throw unavailableError(this.shardId, error);
    }
  }

  /**
   * Borrows a connection for several statements; the session must be released exactly once.
   * `version`: the map version the caller routes by (default: the pool's newest).
   */
  async acquire(version?: number): Promise<ShardSession> {
    const client = await this.acquireClient(undefined, version);
    return new PooledSession(this, client);
  }

  /**
   * @internal Borrow a raw client; pair with releaseClient. When `signal` aborts while the caller
   * waits for a free connection, the call rejects with its reason at once, and the connection
   * that arrives later goes straight back.
   */
  async acquireClient(signal?: AbortSignal, version: number | undefined = this.#routingVersion): Promise<pg.Client> {
    const client = await this.#acquireClient(signal);
    if (this.#stamps.get(client) === version) return client;
    try {
      await this.#stamp(client, version);
      return client;
    } catch (error) {
      this.releaseClient(client, error);
      throw this.translateError(client, error);
    }
  }

  async #acquireClient(signal?: AbortSignal): Promise<pg.Client> {
    if (this.#closing) throw closedError();
    signal?.throwIfAborted();
    const parked = this.#parked.pop();
    if (parked) {
      this.observer.acquired(0);
      return parked;
    }
    if (!signal) return this.#borrowWaiting();
    const borrowing = this.#borrowWaiting();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        reject(signal.reason);
        borrowing.then(
          (client) => this.releaseClient(client),
          () => undefined,
        );
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([borrowing, aborted]);
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }

  /** #borrowHealthy, reporting how long the caller waited (a parked connection is a wait of 0, reported by the callers that pop one). */
  async #borrowWaiting(): Promise<pg.Client> {
    const started = performance.now();
    const client = await this.#borrowHealthy();
    this.observer.acquired((performance.now() - started) / 1000);
    return client;
  }

  /**
   * A client from generic-pool whose connection has not broken while it sat idle there (broken
   * ones are destroyed and another is borrowed). Checked with a synchronous look at a flag set
   * by the client's error/end events, rather than generic-pool's async validate-on-borrow,
   * which would add promise hops to every borrow. Parked clients need no check: one that
   * breaks is taken off the stack at once (#markBroken).
   */
  async #borrowHealthy(): Promise<pg.Client> {
    for (;;) {
      const client = await this.#borrow();
      if (!this.#broken.has(client)) return client;
      void this.#pool.destroy(client).catch(() => undefined);
    }
  }

  /** @internal Whether a client's connection has failed (set synchronously by its error/end events). */
  isBroken(client: pg.Client): boolean {
    return this.#broken.has(client);
  }

  #markBroken(client: pg.Client): void {
    this.#broken.add(client);
    const parkedAt = this.#parked.indexOf(client);
    if (parkedAt >= 0) {
      this.#parked.splice(parkedAt, 1);
      void this.#pool.destroy(client).catch(() => undefined);
    }
  }

  /**
   * generic-pool's acquire with our acquire timeout. An idle connection is handed over within
   * acquire() itself, so the timer is armed only when the caller has to wait. A request that
   * timed out stays in generic-pool's queue; the connection it eventually gets goes straight back.
   */
  #borrow(): Promise<pg.Client> {
    // Every connection of a full pool is lent out (parked ones count as lent): generic-pool could only queue us.
    if (this.#pool.borrowed >= this.#config.max && !this.#closing) return this.#handOff.wait();
    return this.#borrowFromPool();
  }

  async #borrowFromPoolHealthy(): Promise<pg.Client> {
    for (;;) {
      const client = await this.#borrowFromPool();
      if (!this.#broken.has(client)) return client;
      void this.#pool.destroy(client).catch(() => undefined);
    }
  }

  #borrowFromPool(): Promise<pg.Client> {
    const request = this.#pool.acquire();
    // The queue is FIFO: if nothing is left waiting, this request was served within acquire()
    // (and cannot fail: acquire rejects only while draining, which callers check first).
    if (this.#pool.pending === 0) return request;
    return new Promise<pg.Client>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(this.#timeoutError());
      }, this.#config.acquireTimeoutMillis);
      request.then(
        (client) => {
          if (settled) return this.releaseClient(client);
          settled = true;
          clearTimeout(timer);
          resolve(client);
        },
        (error: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          reject(this.#acquireError(error));
        },
      );
    });
  }

  /** @internal Return a client; it is destroyed if it broke, errored at connection level or sits in a transaction. */
  releaseClient(client: pg.Client, error?: unknown): void {
    if (this.#broken.has(client) || isConnectionLevel(error) || client.getTransactionStatus() !== 'I') {
      this.#broken.add(client);
      void this.#pool.destroy(client).catch(() => undefined);
      // Its slot is free now: the oldest hand-off waiter asks generic-pool, which opens a new one.
      const waiter = this.#handOff.take();
      if (waiter) this.#borrowFromPoolHealthy().then(waiter.resolve, waiter.reject);
    } else if (this.#pool.pending > 0 || this.#closing) {
      // Someone waits in generic-pool's queue (or we are closing): hand it over there.
      void this.#pool.release(client);
    } else if (!this.#handOff.give(client)) {
      this.#parked.push(client);
    }
  }

  /** Returns every parked connection to generic-pool. */
  #unpark(): void {
    for (let client = this.#parked.pop(); client; client = this.#parked.pop()) void this.#pool.release(client);
  }

  /** @internal Map an error from client.query to this library's typed errors. */
  translateError(client: pg.Client, error: unknown): unknown {
    return translateError(this.shardId, error, this.#broken.has(client));
  }

  stats(): PoolStats {
    return {
      size: this.#pool.size,
      available: this.#pool.available + this.#parked.length,
      borrowed: this.#pool.borrowed - this.#parked.length,
      pending: this.#pool.pending + this.#handOff.length,
      min: this.#config.min,
      max: this.#config.max,
    };
  }

  /** Fails waiting callers, waits for lent-out clients to come back, then closes every connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#sweeper);
      this.#failWaiting(closedError());
      this.#unpark();
      await this.#pool.drain();
      await this.#pool.clear();
    })();
    return this.#closing;
  }

  #failWaiting(error: ShardRouterError): void {
    this.#handOff.failAll(error);
    const waiting = (this.#pool as unknown as { _waitingClientsQueue?: WaitingQueue })._waitingClientsQueue;
    if (!waiting) return;
    for (let request = waiting.dequeue(); request; request = waiting.dequeue()) request.reject(error);
  }

  #acquireError(error: unknown): unknown {
    if (error instanceof ShardRouterError) return error;
    if (this.#closing) return closedError();
    return unavailableError(this.shardId, error);
  }

  #timeoutError(): ShardRouterError {
    if (this.#pool.borrowed + this.#pool.available === 0) {
      // Not one live connection, only attempts still under way: a blackholed shard.
      return new ShardRouterError(
        'SHARD_UNAVAILABLE',
        `shard ${this.shardId} is unavailable: no connection could be opened within ${this.#config.acquireTimeoutMillis} ms`,
        { shardId: this.shardId },
      );
    }
    return new ShardRouterError(
      'POOL_TIMEOUT',
      `shard ${this.shardId}: no connection became free within ${this.#config.acquireTimeoutMillis} ms (pool max ${this.#config.max})`,
      { shardId: this.shardId },
    );
  }
}
