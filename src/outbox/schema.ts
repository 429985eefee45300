import type { CatalogExtension } from '../catalog/catalog.js';
import type { Queryable } from '../pool/session.js';
import { captureFunctionDdl, fenceTriggerName } from '../rebalance/schema.js';
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
    `CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_id ON ${s}.outbox_events (id)`,
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
 * Installs the outbox tables on a shard and registers them in that shard's table registry, with
 * the fence trigger and (sharded ones) the move-capture function, as registerShardedTable would.
 * Every shard gets the same rows (every router connect runs this on every configured shard, and
 * addShard on the new one), so the registries agree. Needs the rebalancing extension first.
 */
export const outboxExtension: CatalogExtension = {
  name: 'outbox',
  async ensure(session, schema) {
    const names = [...OUTBOX_TABLES, GROUPS_TABLE];
    const present = await session.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${q(schema)}.tables
        WHERE table_name = ANY (ARRAY(SELECT format('%I.%I', $1::text, t) FROM unnest($2::text[]) AS t))`,
      [schema, names],
    );
    if (present.rows[0]?.n === names.length) return;
    for (const statement of outboxDdl(schema)) await session.query(statement);
    await registerOutboxTables(session, schema);
  },
};

async function registerOutboxTables(session: Queryable, schema: string): Promise<void> {
  const identity = await session.query<{ bucket_count: number }>(`SELECT bucket_count FROM ${q(schema)}.shard_identity`);
  const bucketCount = identity.rows[0]!.bucket_count;
  const tables = [
    ...OUTBOX_TABLES.map((table) => ({ table, kind: 'sharded' as const })),
    { table: GROUPS_TABLE, kind: 'reference' as const },
  ];
  for (const { table, kind } of tables) {
    const { rows } = await session.query<{ oid: number; name: string }>(
      `SELECT c.oid::int AS oid, format('%I.%I', n.nspname, c.relname) AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::regclass`,
      [`${q(schema)}.${table}`],
    );
    const { oid, name } = rows[0]!;
    await session.query(
      `INSERT INTO ${q(schema)}.tables (table_name, kind, key_column) VALUES ($1, $2, $3) ON CONFLICT (table_name) DO NOTHING`,
      [name, kind, kind === 'sharded' ? 'key' : null],
    );
    if (kind === 'sharded') await session.query(captureFunctionDdl(schema, oid, name, 'key', bucketCount));
    await session.query(
      `CREATE OR REPLACE TRIGGER ${fenceTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${name}
         FOR EACH STATEMENT EXECUTE FUNCTION ${q(schema)}.write_fence()`,
    );
  }
}
