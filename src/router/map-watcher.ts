import type { ShardPool } from '../pool/shard-pool.js';
import type { Listener } from '../pool/session.js';

/**
 * How a router learns of a new bucket map promptly: LISTEN on one shard for the rebalancer's
 * NOTIFY (sent on every shard after each map switch), plus a periodic version check in case a
 * notification is lost (the listening connection broke, the rebalancer died before notifying).
 * Neither is needed for correctness: a write routed by a stale map is refused by the old owner's
 * fence and retried after a refresh. They keep reads fresh and retries rare.
 */
export interface MapWatcherContext {
  readonly channel: string;
  readonly intervalMillis: number;
  readonly listen: boolean;
  readonly catalogSchema: string;
  currentVersion(): number;
  pools(): ShardPool[];
  refresh(): Promise<void>;
}

const RELISTEN_DELAY_MS = 1_000;

export class MapWatcher {
  readonly #context: MapWatcherContext;
  readonly #timer: NodeJS.Timeout | undefined;
  #listener: Listener | undefined;
  #relisten: NodeJS.Timeout | undefined;
  #closed = false;
  /** Which pool the next poll or LISTEN uses: rotates, so one dead shard does not blind the router. */
  #next = 0;

  constructor(context: MapWatcherContext) {
    this.#context = context;
    if (context.intervalMillis > 0) {
      this.#timer = setInterval(() => void this.#poll(), context.intervalMillis);
      this.#timer.unref();
    }
    if (context.listen) void this.#listen();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#relisten);
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.close();
  }

  #pickPool(): ShardPool | undefined {
    const pools = this.#context.pools();
    if (pools.length === 0) return undefined;
    return pools[this.#next++ % pools.length];
  }

  async #poll(): Promise<void> {
    const pool = this.#pickPool();
    if (!pool || this.#closed) return;
    try {
      const { rows } = await pool.query<{ version: string | null }>(
        `SELECT max(version)::text AS version FROM "${this.#context.catalogSchema}".bucket_map`,
        [],
      );
      if (Number(rows[0]?.version ?? 0) > this.#context.currentVersion()) await this.#context.refresh();
    } catch {
      // The next tick asks another shard; fenced writes still refresh on their own.
    }
  }

  async #listen(): Promise<void> {
    const pool = this.#pickPool();
    if (!pool || this.#closed) return;
    let listener: Listener | undefined;
    const onNotification = (payload: string) => {
      if (Number(payload) > this.#context.currentVersion()) void this.#context.refresh().catch(() => undefined);
    };
    const onLost = () => {
      if (this.#listener === listener) this.#listener = undefined;
      this.#scheduleRelisten();
    };
    try {
      listener = await pool.listen(this.#context.channel, onNotification, onLost);
    } catch {
      this.#scheduleRelisten();
      return;
    }
    if (this.#closed) {
      await listener.close();
      return;
    }
    this.#listener = listener;
    // A change made while we were not listening is caught up at once.
    void this.#poll();
  }

  #scheduleRelisten(): void {
    if (this.#closed || this.#relisten) return;
    this.#relisten = setTimeout(() => {
      this.#relisten = undefined;
      void this.#listen();
    }, RELISTEN_DELAY_MS);
    this.#relisten.unref();
  }
}
