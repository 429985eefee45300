import { createHash, randomUUID } from 'node:crypto';
import { ShardRouterError } from '../errors.js';
import type { ShardKey } from '../placement/hash.js';
import { q } from '../sql.js';
import type { Transaction as CoreTransaction, DeferredWrites } from '../twopc/coordinator.js';
import { checkJson, checkOptionKeys, isPlainObject } from './json.js';

/** JSON as the outbox stores it (jsonb). */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [name: string]: JsonValue };

export interface PublishOptions {
  /** JSON object delivered with the event (trace context, content type, ...). Default `{}`. */
  readonly headers?: { readonly [name: string]: JsonValue };
}

/**
 * What tx.publish returns: the event's identity, known before its row is written (the write is
 * deferred to the shard's next message, docs/outbox.md "Deferred publish"; it exists if and only
 * if the transaction commits). The event's position in its key's stream (`seq`) is assigned when
 * the row is written, under the key's row lock, and is delivered with the event
 * (`OutboxEvent.seq`); identify events by `id`.
 */
export interface PublishedEvent {
  /** Unique across the cluster and stable forever (moves keep it): consumers use it as their idempotency key. */
  readonly id: string;
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
   * order (docs/outbox.md). The write costs no round trip of its own: it is sent with the
   * shard's next statement in this transaction, or with its commit step. If the server refuses
   * it, that statement (or the commit: TRANSACTION_ABORTED with the refusal as cause) fails and
   * the whole transaction rolls back.
   * @throws ShardRouterError INVALID_ARGUMENT (topic not 1-200 printable characters, payload or
   * headers not JSON; nothing written), KEY_NOT_IN_TRANSACTION, TRANSACTION_CLOSED
   */
  publish(key: ShardKey, topic: string, payload: JsonValue, options?: PublishOptions): Promise<PublishedEvent>;
}

const TOPIC = /^\P{C}+$/u;
export const MAX_TOPIC_LENGTH = 200;

/** Throws INVALID_ARGUMENT unless `topic` is 1-200 printable characters. */
export function checkTopic(topic: unknown, what = 'topic'): asserts topic is string {
  // Code points are counted only when the UTF-16 length could exceed the limit (it never undercounts).
  if (
    typeof topic !== 'string' ||
    topic.length === 0 ||
    (topic.length > MAX_TOPIC_LENGTH && [...topic].length > MAX_TOPIC_LENGTH) ||
    !TOPIC.test(topic)
  ) {
    throw new ShardRouterError('INVALID_ARGUMENT', `${what} must be 1-${MAX_TOPIC_LENGTH} printable characters`);
  }
}

/** The publish statement: the key's next sequence number (row-locked until commit) and the event, one statement. */
export function publishSql(schema: string): string {
  const s = q(schema);
  return `WITH next AS (
       INSERT INTO ${s}.outbox_keys AS k (key, last_seq) VALUES ($1, 1)
       ON CONFLICT (key) DO UPDATE SET last_seq = k.last_seq + 1
       RETURNING last_seq)
     INSERT INTO ${s}.outbox_events (key, seq, id, topic, payload, headers, published_at)
     SELECT $1, last_seq, $2, $3, $4::jsonb, $5::jsonb, clock_timestamp() FROM next`;
}

/**
 * The name the publish statement is prepared under on each connection (parsed and planned once
 * per connection, docs/outbox.md "Deferred publish"): derived from the text, so routers with
 * different catalog schemas never share a name for different statements.
 */
export function publishStatementName(sql: string): string {
  return `pg_shard_router_publish_${createHash('sha256').update(sql).digest('hex').slice(0, 16)}`;
}

const statements = new Map<string, { readonly sql: string; readonly name: string }>();

/** publishSql and its statement name, built once per catalog schema (withPublish runs once per transaction). */
function publishStatement(schema: string): { readonly sql: string; readonly name: string } {
  const known = statements.get(schema);
  if (known) return known;
  const sql = publishSql(schema);
  const statement = { sql, name: publishStatementName(sql) };
  statements.set(schema, statement);
  return statement;
}

/** The headers option as stored: `{}` without options (the common case, no checks to run). */
function headersJson(options: PublishOptions | undefined): string {
  if (options === undefined) return '{}';
  const { headers = {} } = checkOptionKeys(options, ['headers'], 'publish options') as PublishOptions;
  if (!isPlainObject(headers)) throw new ShardRouterError('INVALID_ARGUMENT', 'headers must be a JSON object');
  checkJson(headers, 'headers');
  return JSON.stringify(headers);
}

/**
 * The router's transaction handle: the engine's, plus publish, whose statement the engine sends
 * with the shard's next message (`deferred`). `published` collects the shards that got an
 * event, for the wake-up NOTIFY after the commit (a NOTIFY cannot be prepared, so it is not
 * sent inside the transaction).
 */
export function withPublish(tx: CoreTransaction, deferred: DeferredWrites, schema: string, published: Set<string>): Transaction {
  const { sql, name } = publishStatement(schema);
  return Object.freeze({
    execute: tx.execute,
    executeOn: tx.executeOn,
    query: tx.query,
    shardIds: tx.shardIds,
    on: tx.on,
    async publish(key: ShardKey, topic: string, payload: JsonValue, options?: PublishOptions): Promise<PublishedEvent> {
      checkTopic(topic);
      checkJson(payload, 'payload');
      const id = randomUUID();
      const values = [String(key), id, topic, JSON.stringify(payload), headersJson(options)];
      const shardId = await deferred.defer(key, sql, values, name);
      published.add(shardId);
      return { id, shardId };
    },
  });
}
