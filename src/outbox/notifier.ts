import type { ShardPool } from '../pool/shard-pool.js';

/**
 * The shortest gap between two NOTIFYs to one shard. Each NOTIFY is a transaction of its own
 * with an xid, a commit record and, at commit, the server-wide NOTIFY lock: one per publishing
 * commit cost a busy shard about a tenth of its publishing throughput. A publish after a quiet
 * gap is still announced at once; a burst costs one NOTIFY per window, sent at its end.
 */
export const NOTIFY_WINDOW_MS = 25;

/**
 * Wakes consumers after a commit that published: one NOTIFY per shard (a NOTIFY cannot run in a
 * transaction that is prepared, so it is sent after the commit, outside it). Coalesced: while one
 * is in flight to a shard or its window has not passed, later publishes there ask for one more,
 * not one each. Best effort: consumers also poll, so a lost or unsent NOTIFY (this process died
 * between the commit and the send) only delays delivery, by at most the poll interval.
 */
export class PublishNotifier {
  readonly #channel: string;
  readonly #pool: (shardId: string) => ShardPool;
  readonly #windowMillis: number;
  /** Shards with a NOTIFY in flight or waiting for its window, and whether another was asked for. */
  readonly #state = new Map<string, { again: boolean }>();
  readonly #lastSent = new Map<string, number>();

  constructor(channel: string, pool: (shardId: string) => ShardPool, windowMillis = NOTIFY_WINDOW_MS) {
    this.#channel = channel;
    this.#pool = pool;
    this.#windowMillis = windowMillis;
  }

  notify(shardIds: Iterable<string>): void {
    for (const shardId of shardIds) {
      const state = this.#state.get(shardId);
      if (state) state.again = true;
      else this.#schedule(shardId);
    }
  }

  #schedule(shardId: string): void {
    this.#state.set(shardId, { again: false });
    const wait = (this.#lastSent.get(shardId) ?? Number.NEGATIVE_INFINITY) + this.#windowMillis - performance.now();
    if (wait <= 0) void this.#send(shardId);
    // Unref'd: a pending wake-up must not keep a process alive (the poll covers it).
    else setTimeout(() => void this.#send(shardId), wait).unref();
  }

  async #send(shardId: string): Promise<void> {
    const state = this.#state.get(shardId)!;
    state.again = false;
    this.#lastSent.set(shardId, performance.now());
    try {
      // A NOTIFY's transaction gets an xid and a commit record; waiting for that record's flush
      // would double the fsyncs of a publishing 1PC transaction for a best-effort wake-up.
      await this.#pool(shardId).query(
        `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`,
        [this.#channel, ''],
        undefined,
      );
    } catch {
      // Best effort (see above).
    }
    this.#state.delete(shardId);
    if (state.again) this.#schedule(shardId);
  }
}
