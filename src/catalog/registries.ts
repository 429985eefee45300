import type { Queryable } from '../pool/session.js';
import { q } from '../sql.js';

/**
 * The registries every shard's catalog holds, changed only by two-phase commit over all shards
 * (so every router and the rebalancer read the same lists):
 * - the table registry: which tables are sharded (and by which column) and which are reference
 *   tables (a full copy on every shard);
 * - the shard registry: every shard that ever joined, with its URL *without* password (so a
 *   router learns of a shard added after it started) and its state.
 */

/** A shard in the shard registry. */
export interface RegisteredShard {
  readonly shardId: string;
  /** Its connection string without the password. */
  readonly url: string;
  readonly state: 'active' | 'removed';
}

export type TableKind = 'sharded' | 'reference';

/** One registered table. */
export interface RegisteredTable {
  /** Schema-qualified and quoted as PostgreSQL prints it, e.g. `public.orders`. */
  readonly table: string;
  readonly kind: TableKind;
  /** The shard-key column (sharded tables only). */
  readonly shardKey: string | undefined;
}

/** Options of registerShardedTable. */
export interface ShardedTableOptions {
  /**
   * Build the table's bucket index on every shard (an expression index on the SQL bucket of
   * the key, docs/rebalance.md "Bucket index"): a bucket move then reads only that bucket's
   * rows instead of scanning the table, at the price of one more index to maintain on every
   * INSERT and key UPDATE. Default false. Shards added later get it too.
   */
  readonly bucketIndex?: boolean;
}

/** A table as one shard sees it. */
export interface TableShape {
  readonly oid: number;
  /** `format('%I.%I', schema, table)`: the registry's name for it. */
  readonly name: string;
  /** Columns that take values on INSERT (generated columns excluded), in table order. */
  readonly insertColumns: readonly string[];
  /** Columns whose identity is GENERATED ALWAYS (copies need OVERRIDING SYSTEM VALUE). */
  readonly hasAlwaysIdentity: boolean;
  /** format_type of each column, by name. */
  readonly types: ReadonlyMap<string, string>;
  /** Columns fed by a sequence (serial or identity), with the sequence's name. */
  readonly sequences: readonly { readonly column: string; readonly sequence: string }[];
}

/** Creates the registries where they are missing (catalogs older than them included). */
export async function ensureRegistries(session: Queryable, schema: string): Promise<void> {
  const present = await session.query<{ present: boolean }>(
    'SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS present',
    [`${q(schema)}.tables`, `${q(schema)}.shards`],
  );
  if (present.rows[0]?.present) return;
  await session.query(`CREATE TABLE IF NOT EXISTS ${q(schema)}.tables (
       table_name text PRIMARY KEY,
       kind text NOT NULL CHECK (kind IN ('sharded', 'reference')),
       key_column text,
       registered_at timestamptz NOT NULL DEFAULT now(),
       CHECK ((kind = 'sharded') = (key_column IS NOT NULL)))`);
  await session.query(`CREATE TABLE IF NOT EXISTS ${q(schema)}.shards (
       shard_id text PRIMARY KEY,
       url text NOT NULL,
       state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'removed')),
       added_at timestamptz NOT NULL DEFAULT now())`);
}

/** The shard registry as one shard holds it. */
export async function readShardRegistry(session: Queryable, schema: string): Promise<RegisteredShard[]> {
  const { rows } = await session.query<{ shard_id: string; url: string; state: 'active' | 'removed' }>(
    `SELECT shard_id, url, state FROM ${q(schema)}.shards ORDER BY shard_id`,
  );
  return rows.map((row) => ({ shardId: row.shard_id, url: row.url, state: row.state }));
}

/** Looks a table up on one shard; null when it does not exist there. */
export async function describeTable(session: Queryable, table: string): Promise<TableShape | null> {
  const found = await session.query<{ oid: number; name: string }>(
    `SELECT c.oid::int AS oid, format('%I.%I', n.nspname, c.relname) AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`,
    [table],
  );
  const row = found.rows[0];
  if (!row) return null;
  const columns = await session.query<{ name: string; type: string; generated: string; identity: string; sequence: string | null }>(
    `SELECT attname AS name, format_type(atttypid, atttypmod) AS type, attgenerated AS generated, attidentity AS identity,
            pg_get_serial_sequence($2, attname) AS sequence
       FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [row.oid, row.name],
  );
  return {
    oid: row.oid,
    name: row.name,
    insertColumns: columns.rows.filter((column) => column.generated === '').map((column) => column.name),
    hasAlwaysIdentity: columns.rows.some((column) => column.identity === 'a'),
    types: new Map(columns.rows.map((column) => [column.name, column.type])),
    sequences: columns.rows.flatMap((column) => (column.sequence ? [{ column: column.name, sequence: column.sequence }] : [])),
  };
}

/** The registry as one shard holds it. */
export async function readRegistry(session: Queryable, schema: string): Promise<RegisteredTable[]> {
  const { rows } = await session.query<{ table_name: string; kind: TableKind; key_column: string | null }>(
    `SELECT table_name, kind, key_column FROM ${q(schema)}.tables ORDER BY table_name`,
  );
  return rows.map((row) => ({ table: row.table_name, kind: row.kind, shardKey: row.key_column ?? undefined }));
}

/** Splits a registry name (`format('%I.%I')`: quoted only where needed) into its two identifiers, unquoted. */
export function registryNameParts(text: string): string[] {
  const parts: string[] = [];
  let at = 0;
  while (at < text.length) {
    if (text[at] === '"') {
      let value = '';
      at++;
      while (at < text.length) {
        if (text[at] === '"' && text[at + 1] === '"') {
          value += '"';
          at += 2;
        } else if (text[at] === '"') {
          at++;
          break;
        } else {
          value += text[at++];
        }
      }
      parts.push(value);
    } else {
      const end = text.indexOf('.', at);
      parts.push(text.slice(at, end === -1 ? text.length : end));
      at = end === -1 ? text.length : end;
    }
    if (text[at] === '.') at++;
  }
  return parts;
}
