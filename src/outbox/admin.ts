import { ShardRouterError } from '../errors.js';
import { q } from '../sql.js';
import type { OutboxContext } from './context.js';
import { checkOptionKeys } from './json.js';
import { checkTopic } from './publish.js';
import { collectIdleKeys } from './idle-keys.js';
import { purgeShard } from './retention.js';

/** A parked event: its key waits for retry or skip. */
export interface ParkedEvent {
  readonly id: string;
  readonly group: string;
  readonly key: string;
  readonly seq: number;
  readonly topic: string;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly publishedAt: Date;
  readonly shardId: string;
}

/** One group on one shard. */
export interface OutboxGroupStatus {
  readonly shardId: string;
  readonly group: string;
  /** Events of the group's topics it has not acknowledged yet. */
  readonly pending: number;
  /** Age in ms of the oldest of them (0 when none). */
  readonly lagMillis: number;
  readonly parked: number;
}

export interface OutboxStatus {
  readonly groups: readonly OutboxGroupStatus[];
}

/** router.outbox: inspect and act on consumer groups (docs/outbox.md). */
export class OutboxAdmin {
  readonly #context: OutboxContext;

  constructor(context: OutboxContext) {
    this.#context = context;
  }

  /**
   * The parked events of a group, on every shard.
   * @example
   * for (const event of await router.outbox.parked({ group: 'projector' })) console.log(event.id, event.lastError);
   */
  async parked(options: { group: string }): Promise<ParkedEvent[]> {
    const group = groupOf(options);
    const s = q(this.#context.catalogSchema);
    const lists = await this.#onEveryShard(
      (guard) => `SELECT e.id::text AS id, o.key, o.parked_seq::text AS seq, e.topic, o.attempt, o.last_error, e.published_at
         FROM (SELECT * FROM ${s}.outbox_offsets WHERE group_name = $1 AND parked_seq IS NOT NULL AND ${guard}) o
         JOIN ${s}.outbox_events e ON e.key = o.key AND e.seq = o.parked_seq
        ORDER BY o.key`,
      [group],
    );
    return lists.flatMap(({ shardId, rows }) =>
      rows.map((row) => ({
        id: String(row.id),
        group,
        key: String(row.key),
        seq: Number(row.seq),
        topic: String(row.topic),
        attempts: Number(row.attempt),
        lastError: row.last_error === null ? null : String(row.last_error),
        publishedAt: row.published_at as Date,
        shardId,
      })),
    );
  }

  /**
   * Delivers a parked event again (attempts start over); its key resumes.
   * @throws ShardRouterError INVALID_ARGUMENT (bad id or group, or the event is not parked in that group)
   */
  async retry(id: string, options: { group: string }): Promise<void> {
    await this.#unpark(id, groupOf(options), 'acked_seq');
  }

  /**
   * Acknowledges a parked event without delivering it; its key resumes with the next event.
   * @throws ShardRouterError INVALID_ARGUMENT (bad id or group, or the event is not parked in that group)
   */
  async skip(id: string, options: { group: string }): Promise<void> {
    await this.#unpark(id, groupOf(options), 'parked_seq');
  }

  /**
   * Per shard and group: pending events, lag (age of the oldest pending one) and parked count.
   * @example
   * const { groups } = await router.outbox.status();
   */
  async status(): Promise<OutboxStatus> {
    const s = q(this.#context.catalogSchema);
    const lists = await this.#onEveryShard(
      (guard) => `SELECT g.group_name,
              (SELECT count(*) FROM ${s}.outbox_offsets p WHERE p.group_name = g.group_name AND p.parked_seq IS NOT NULL AND ${guard}) AS parked,
              count(e.key) AS pending, coalesce(extract(epoch FROM (now() - min(e.published_at))) * 1000, 0)::bigint AS lag
         FROM ${s}.outbox_groups g
         LEFT JOIN LATERAL (SELECT x.key, x.published_at FROM (SELECT * FROM ${s}.outbox_events WHERE ${guard}) x
                             WHERE x.topic = ANY (g.topics) AND x.published_at >= g.starts_at
                               AND x.seq > coalesce((SELECT o.acked_seq FROM ${s}.outbox_offsets o
                                                      WHERE o.group_name = g.group_name AND o.key = x.key), 0)) e ON true
        GROUP BY g.group_name ORDER BY g.group_name`,
      [],
    );
    const groups = lists.flatMap(({ shardId, rows }) =>
      rows.map((row) => ({
        shardId,
        group: String(row.group_name),
        pending: Number(row.pending),
        lagMillis: Math.max(0, Number(row.lag)),
        parked: Number(row.parked),
      })),
    );
    return { groups };
  }

  /**
   * Deletes now the events every group acknowledged that are older than `outbox.retentionMillis`,
   * then the idle keys' sequence and offsets rows (no event left, no lease, nothing parked). Consumers
   * also do both as they run.
   */
  async purge(): Promise<{ deleted: number; idleKeys: number }> {
    const results = await Promise.all(
      this.#context.routing().members.map(async (shardId) => {
        const deleted = await purgeShard(this.#context, shardId, 1_000);
        const { keys } = await collectIdleKeys(this.#context, shardId, 1_000);
        return { deleted, keys };
      }),
    );
    return {
      deleted: results.reduce((sum, result) => sum + result.deleted, 0),
      idleKeys: results.reduce((sum, result) => sum + result.keys, 0),
    };
  }

  /** Runs a read on every member with the moves guard (as broadcast reads do), so moved rows count once. */
  #onEveryShard(
    sql: (guard: string) => string,
    params: readonly unknown[],
  ): Promise<{ shardId: string; rows: Record<string, unknown>[] }[]> {
    return this.#context.readOwned(sql, 'key', params);
  }

  /** Clears the parking of one event: progress stays (retry) or moves past it (skip). Written on the key's owner, fenced. */
  async #unpark(id: unknown, group: string, ackedTo: 'acked_seq' | 'parked_seq'): Promise<void> {
    if (typeof id !== 'string' || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id))
      throw new ShardRouterError('INVALID_ARGUMENT', 'id must be an event id (a UUID)');
    const s = q(this.#context.catalogSchema);
    // Only a parked event can be retried or skipped: found through the group's parked offsets,
    // by (key, seq), the events' primary key.
    const found = await this.#onEveryShard(
      (guard) => `SELECT o.key, o.parked_seq::text AS seq
         FROM (SELECT * FROM ${s}.outbox_offsets WHERE group_name = $2 AND parked_seq IS NOT NULL AND ${guard}) o
         JOIN ${s}.outbox_events e ON e.key = o.key AND e.seq = o.parked_seq
        WHERE e.id = $1`,
      [id.toLowerCase(), group],
    );
    const event = found.flatMap(({ rows }) => rows)[0];
    if (!event) throw new ShardRouterError('INVALID_ARGUMENT', `event ${id} is not parked in group ${group}`);
    const changed = await this.#context.retryingStaleMap(async () => {
      const routing = this.#context.routing();
      const key = String(event.key);
      return this.#context.pool(routing.ownerOf(key)).query(
        `UPDATE ${s}.outbox_offsets SET acked_seq = ${ackedTo === 'parked_seq' ? 'parked_seq' : 'acked_seq'}, parked_seq = NULL,
                attempt = 0, not_before = NULL, last_error = NULL
          WHERE group_name = $1 AND key = $2 AND parked_seq = $3`,
        [group, key, event.seq],
        routing.version,
      );
    });
    if (changed.rowCount === 0) throw new ShardRouterError('INVALID_ARGUMENT', `event ${id} is not parked in group ${group}`);
  }
}

function groupOf(options: unknown): string {
  const { group } = checkOptionKeys(options, ['group'], 'options') as { group?: unknown };
  checkTopic(group, 'group');
  return group;
}
