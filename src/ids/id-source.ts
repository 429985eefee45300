import { ShardRouterError } from '../errors.js';
import type { Queryable } from '../pool/session.js';
import { q } from '../sql.js';
import { idFromCounter } from './layout.js';

/**
 * Ids for the application without a round trip per id: each router reserves a block of a
 * shard's counter in one call (`reserve_ids(n)`, one advisory-locked step on the shard) and
 * hands the block out locally. The ids are the shard's own (its slot, its counter), so they
 * are unique with every next_id() the shard issues as a DEFAULT and with every other router's
 * blocks. A block is dropped unused after {@link BLOCK_MAX_AGE_MS}, so the ids stay roughly
 * time-ordered (at most that much older than the moment they are handed out).
 */

/** Ids reserved per round trip. */
export const ID_BLOCK_SIZE = 1_000;
/** A block older than this is dropped (its unused counters are simply never issued). */
export const BLOCK_MAX_AGE_MS = 1_000;

/** What the id source needs from the router. */
export interface IdSourceContext {
  readonly catalogSchema: string;
  /** The owner of a key (throws INVALID_KEY). */
  shardFor(key: unknown): string;
  /** The shards to take ids from when no key is given. */
  members(): readonly string[];
  /** A pooled connection to a shard. */
  shard(shardId: string): Queryable;
}

interface Block {
  readonly slot: number;
  next: bigint;
  readonly end: bigint;
  readonly takenAt: number;
}

export class IdSource {
  readonly #context: IdSourceContext;
  readonly #blocks = new Map<string, Block>();
  readonly #refilling = new Map<string, Promise<void>>();
  #turn = 0;

  constructor(context: IdSourceContext) {
    this.#context = context;
  }

  /** The next id from the key's shard (or from any shard), as a bigint. */
  async next(key?: unknown): Promise<bigint> {
    const shardId = key === undefined ? this.#anyShard() : this.#context.shardFor(key);
    for (;;) {
      const block = this.#blocks.get(shardId);
      if (block && block.next < block.end && Date.now() - block.takenAt < BLOCK_MAX_AGE_MS) {
        return idFromCounter(block.next++, block.slot);
      }
      await this.#refill(shardId);
    }
  }

  /** A shard with a live block, else the next member in turn. */
  #anyShard(): string {
    const now = Date.now();
    for (const [shardId, block] of this.#blocks) {
      if (block.next < block.end && now - block.takenAt < BLOCK_MAX_AGE_MS) return shardId;
    }
    const members = this.#context.members();
    if (members.length === 0) throw new ShardRouterError('SHARD_UNAVAILABLE', 'the cluster has no shards to take ids from');
    return members[this.#turn++ % members.length]!;
  }

  /** One reservation per shard at a time; concurrent callers wait for it. */
  #refill(shardId: string): Promise<void> {
    let refilling = this.#refilling.get(shardId);
    if (!refilling) {
      refilling = this.#reserve(shardId).finally(() => this.#refilling.delete(shardId));
      this.#refilling.set(shardId, refilling);
    }
    return refilling;
  }

  async #reserve(shardId: string): Promise<void> {
    const { rows } = await this.#context
      .shard(shardId)
      .query<{ first_counter: string; slot: number }>(
        `SELECT first_counter::text AS first_counter, slot FROM ${q(this.#context.catalogSchema)}.reserve_ids($1)`,
        [ID_BLOCK_SIZE],
      );
    const row = rows[0]!;
    const first = BigInt(row.first_counter);
    this.#blocks.set(shardId, { slot: row.slot, next: first, end: first + BigInt(ID_BLOCK_SIZE), takenAt: Date.now() });
  }
}
