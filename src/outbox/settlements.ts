import type { ClaimedKey, KeyOutcome } from './claims.js';
import { settleKeys } from './claims.js';
import type { OutboxContext } from './context.js';

/**
 * A consumer's writes of key outcomes (docs/outbox.md, O4): each outcome is queued for its key's
 * owner and written with the others queued meanwhile, one statement per shard, by token. Each
 * shard has its own loop, so a slow shard does not hold back the keys of the others.
 */
export class SettlementWriter {
  readonly #context: OutboxContext;
  readonly #group: string;
  readonly #leaseMillis: number;
  readonly #report: (error: unknown) => void;
  /** Outcomes waiting for their write, per shard that owned the key when they were queued. */
  readonly #queues = new Map<string, { outcome: KeyOutcome; done: (kept: boolean) => void }[]>();
  readonly #flushing = new Map<string, Promise<void>>();

  constructor(context: OutboxContext, group: string, leaseMillis: number, report: (error: unknown) => void) {
    this.#context = context;
    this.#group = group;
    this.#leaseMillis = leaseMillis;
    this.#report = report;
  }

  /** Resolves once every queued outcome was written (or its write failed). */
  async drained(): Promise<void> {
    while (this.#flushing.size > 0) await Promise.all(this.#flushing.values());
  }

  /** Queues an outcome for the next batched write; resolves to whether this consumer still held the key's lease. */
  write(item: KeyOutcome): Promise<boolean> {
    const shardId = this.#context.routing().ownerOf(item.key);
    return new Promise<boolean>((done) => {
      const queue = this.#queues.get(shardId);
      if (queue) queue.push({ outcome: item, done });
      else this.#queues.set(shardId, [{ outcome: item, done }]);
      if (!this.#flushing.has(shardId)) this.#flushing.set(shardId, this.#flush(shardId));
    });
  }

  /**
   * Writes a shard's queued outcomes, one statement for everything queued meanwhile. Each shard
   * has its own loop, so a slow shard does not hold back the keys of the others.
   */
  async #flush(shardId: string): Promise<void> {
    try {
      for (;;) {
        // One turn of the event loop first: the handlers that the previous batch released queue
        // their next outcomes in it, so they share this write instead of waiting for the next.
        await new Promise<void>((resolve) => setImmediate(resolve));
        const batch = this.#queues.get(shardId)?.splice(0) ?? [];
        if (batch.length === 0) return;
        let changed = new Set<string>();
        try {
          // By owner again: a key whose bucket moved since it was queued is written where it is now.
          changed = await this.#context.retryingStaleMap(() => this.#settleByOwner(batch.map((item) => item.outcome)));
        } catch (error) {
          // The leases then run out and the events are delivered again (at least once).
          this.#report(error);
        }
        for (const item of batch) item.done(changed.has(item.outcome.key));
      }
    } finally {
      this.#flushing.delete(shardId);
    }
  }

  /** Writes outcomes to each key's owner by the current map (a key whose bucket moved has its offsets there). */
  async #settleByOwner(outcomes: readonly KeyOutcome[]): Promise<Set<string>> {
    const routing = this.#context.routing();
    const byShard = groupBy(outcomes, (item) => routing.ownerOf(item.key));
    const { catalogSchema } = this.#context;
    const results = await Promise.all(
      [...byShard].map(([shardId, items]) =>
        settleKeys(stamped(this.#context, shardId, routing.version), catalogSchema, this.#group, items, this.#leaseMillis),
      ),
    );
    return new Set(results.flatMap((keys) => [...keys]));
  }
}

export function outcome(
  key: ClaimedKey,
  ackedSeq: number,
  attempt: number,
  parkedSeq: number | null,
  error: string | null,
  backoffMillis: number | null,
  release: boolean,
): KeyOutcome {
  return { key: key.key, token: key.token, ackedSeq, attempt: Math.max(0, attempt), parkedSeq, error, backoffMillis, release };
}

export function groupBy<T>(items: readonly T[], by: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const name = by(item);
    const list = groups.get(name);
    if (list) list.push(item);
    else groups.set(name, [item]);
  }
  return groups;
}

/** A shard's pool as a Queryable whose statements carry the routed map version. */
export function stamped(context: OutboxContext, shardId: string, version: number) {
  const pool = context.pool(shardId);
  return { query: <R extends Record<string, unknown>>(sql: string, params?: readonly unknown[]) => pool.query<R>(sql, params, version) };
}
