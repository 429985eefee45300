import { randomUUID } from 'node:crypto';
import { ShardRouterError } from '../errors.js';
import type { ShardKey } from '../placement/hash.js';
import { q } from '../sql.js';
import type { Transaction as CoreTransaction } from '../twopc/coordinator.js';
import { checkJson, checkOptionKeys, isPlainObject } from './json.js';

/** JSON as the outbox stores it (jsonb). */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [name: string]: JsonValue };

export interface PublishOptions {
  /** JSON object delivered with the event (trace context, content type, ...). Default `{}`. */
  readonly headers?: { readonly [name: string]: JsonValue };
}

/** What tx.publish returns once the event row is written (it exists only if the transaction commits). */
export interface PublishedEvent {
  /** Unique across the cluster and stable forever (moves keep it): consumers use it as their idempotency key. */
  readonly id: string;
  /** The event's position in its key's stream (1, 2, ...): publish order = commit order per key. */
  readonly seq: number;
  readonly shardId: string;
}

/**
 * The handle a transaction callback gets: statements, and events published atomically with them.
 *
 * @example
 * await router.transaction([orderId], async (tx) => {
 *   await tx.execute(orderId, 'INSERT INTO orders (id, country, total) VALUES ($1, $2, $3)', [orderId, 'NO', 42]);
 *   await tx.publish(orderId, 'order.placed', { orderId, country: 'NO', total: 42 });
 * });
 */
export interface Transaction extends CoreTransaction {
  /**
   * Writes an event on `key`'s shard inside this transaction: it exists if and only if the
   * transaction commits. Events of one key are delivered to each consumer group in publish
   * order (docs/outbox.md).
   * @throws ShardRouterError INVALID_ARGUMENT (topic not 1-200 printable characters, payload or
   * headers not JSON; nothing written) and the errors of {@link CoreTransaction.execute}
   * (KEY_NOT_IN_TRANSACTION, ...)
   */
  publish(key: ShardKey, topic: string, payload: JsonValue, options?: PublishOptions): Promise<PublishedEvent>;
}

const TOPIC = /^\P{C}+$/u;
export const MAX_TOPIC_LENGTH = 200;

/** Throws INVALID_ARGUMENT unless `topic` is 1-200 printable characters. */
export function checkTopic(topic: unknown, what = 'topic'): asserts topic is string {
  if (typeof topic !== 'string' || topic.length === 0 || [...topic].length > MAX_TOPIC_LENGTH || !TOPIC.test(topic)) {
    throw new ShardRouterError('INVALID_ARGUMENT', `${what} must be 1-${MAX_TOPIC_LENGTH} printable characters`);
  }
}

/** The publish statement: the key's next sequence number (row-locked until commit) and the event, one round trip. */
export function publishSql(schema: string): string {
  const s = q(schema);
  return `WITH next AS (
       INSERT INTO ${s}.outbox_keys AS k (key, last_seq) VALUES ($1, 1)
       ON CONFLICT (key) DO UPDATE SET last_seq = k.last_seq + 1
       RETURNING last_seq)
     INSERT INTO ${s}.outbox_events (key, seq, id, topic, payload, headers, published_at)
     SELECT $1, last_seq, $2, $3, $4::jsonb, $5::jsonb, clock_timestamp() FROM next
     RETURNING seq::text AS seq`;
}

/**
 * The router's transaction handle: the engine's, plus publish. `published` collects the shards
 * that got an event, for the wake-up NOTIFY after the commit (a NOTIFY cannot be prepared, so
 * it is not sent inside the transaction).
 */
export function withPublish(tx: CoreTransaction, schema: string, published: Set<string>): Transaction {
  const sql = publishSql(schema);
  return Object.freeze({
    execute: tx.execute,
    executeOn: tx.executeOn,
    query: tx.query,
    shardIds: tx.shardIds,
    on: tx.on,
    async publish(key: ShardKey, topic: string, payload: JsonValue, options?: PublishOptions): Promise<PublishedEvent> {
      checkTopic(topic);
      checkJson(payload, 'payload');
      const { headers = {} } = checkOptionKeys(options, ['headers'], 'publish options') as PublishOptions;
      if (!isPlainObject(headers)) throw new ShardRouterError('INVALID_ARGUMENT', 'headers must be a JSON object');
      checkJson(headers, 'headers');
      const id = randomUUID();
      const result = await tx.execute<{ seq: string }>(key, sql, [
        String(key),
        id,
        topic,
        JSON.stringify(payload),
        JSON.stringify(headers),
      ]);
      published.add(result.shardId);
      return { id, seq: Number(result.rows[0]!.seq), shardId: result.shardId };
    },
  });
}
