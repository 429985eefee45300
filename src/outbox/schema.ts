import type { CatalogExtension } from '../catalog/catalog.js';
import { libraryTablesExtension } from '../rebalance/library-tables.js';
import { q } from '../sql.js';

/**
 * The outbox's tables in every shard's catalog schema (docs/outbox.md). The three per-key
 * tables are registered sharded tables keyed by `key`, so a bucket move carries them with the
 * bucket (copy, catch-up, switch in one 2PC) and their writes are fenced like any other; the
 * groups table is a reference table (a copy on every shard, written in one 2PC, copied to a
 * shard added later).
 *
 * - `outbox_keys(key, last_seq)`: the per-key sequence. Publishing upserts it in the
 *   publishing transaction, so publishers of one key queue on its row lock and take their
 *   sequence numbers in commit order, without gaps.
 * - `outbox_events(key, seq, id, topic, payload, headers, published_at)`.
 * - `outbox_offsets(group_name, key, acked_seq, attempt, not_before, parked_seq, last_error,
 *   lease_token, lease_until)`: one group's progress on one key, and the lease of the consumer
 *   that holds the key.
 * - `outbox_groups(group_name, topics, starts_at)`.
 */

export const OUTBOX_TABLES = ['outbox_keys', 'outbox_events', 'outbox_offsets'] as const;
export const GROUPS_TABLE = 'outbox_groups';

export function outboxDdl(schema: string): string[] {
  const s = q(schema);
  return [
    `CREATE TABLE IF NOT EXISTS ${s}.outbox_keys (
       key text PRIMARY KEY,
       last_seq bigint NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS ${s}.outbox_events (
       key text NOT NULL,
       seq bigint NOT NULL,
       id uuid NOT NULL,
       topic text NOT NULL,
       payload jsonb NOT NULL,
       headers jsonb NOT NULL,
       published_at timestamptz NOT NULL,
       PRIMARY KEY (key, seq))`,
    // Publish time: retention's old events and the pending-events search's `published_at >=
    // starts_at` (a 'latest' group). A B-tree, not BRIN: a BRIN scan reads whole block ranges, and
    // every range not yet summarized by a vacuum, which made a caught-up group's claims read
    // thousands of rows. Ids need no index: events are found by (key, seq).
    `CREATE INDEX IF NOT EXISTS outbox_events_published ON ${s}.outbox_events (published_at)`,
    `CREATE TABLE IF NOT EXISTS ${s}.outbox_offsets (
       group_name text NOT NULL,
       key text NOT NULL,
       acked_seq bigint NOT NULL DEFAULT 0,
       attempt integer NOT NULL DEFAULT 0,
       not_before timestamptz,
       parked_seq bigint,
       last_error text,
       lease_token uuid,
       lease_until timestamptz,
       PRIMARY KEY (group_name, key))`,
    `CREATE TABLE IF NOT EXISTS ${s}.outbox_groups (
       group_name text PRIMARY KEY,
       topics text[] NOT NULL,
       starts_at timestamptz NOT NULL,
       created_at timestamptz NOT NULL)`,
  ];
}

/**
 * Installs the outbox tables on a shard and registers them like the application's tables
 * (rebalance/library-tables.ts): events, keys and offsets sharded by `key`, so moves carry them;
 * the groups as a reference table. Needs the rebalancing extension first.
 */
export const outboxExtension: CatalogExtension = libraryTablesExtension(
  'outbox',
  [
    ...OUTBOX_TABLES.map((name) => ({ name, kind: 'sharded' as const, keyColumn: 'key' })),
    { name: GROUPS_TABLE, kind: 'reference' as const },
  ],
  outboxDdl,
);
