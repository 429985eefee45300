import type { ShardPool } from '../pool/shard-pool.js';

/**
 * Wakes consumers after a commit that published: one NOTIFY per shard (a NOTIFY cannot run in a
 * transaction that is prepared, so it is sent after the commit, outside it). Coalesced: while one
 * is in flight to a shard, later publishes there ask for one more, not one each. Best effort:
 * consumers also poll, so a lost NOTIFY only delays delivery.
 */
export class PublishNotifier {
  readonly #channel: string;
  readonly #pool: (shardId: string) => ShardPool;
  readonly #state = new Map<string, 'sending' | 'again'>();

  constructor(channel: string, pool: (shardId: string) => ShardPool) {
    this.#channel = channel;
    this.#pool = pool;
  }

  notify(shardIds: Iterable<string>): void {
    for (const shardId of shardIds) {
      if (this.#state.has(shardId)) this.#state.set(shardId, 'again');
      else void this.#send(shardId);
    }
  }

  async #send(shardId: string): Promise<void> {
    this.#state.set(shardId, 'sending');
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
    if (this.#state.get(shardId) === 'again') void this.#send(shardId);
    else this.#state.delete(shardId);
  }
}
