import type { ShardSession } from '../cluster/shard-io.js';
import { ShardRouterError } from '../errors.js';
import type { Transaction } from '../twopc/coordinator.js';
import { captureFunctionDdl, fenceTriggerName } from './schema.js';

/**
 * The table registry: which tables are sharded (and by which column) and which are reference
 * tables (a full copy on every shard). It lives in every shard's catalog and changes only by
 * two-phase commit over all shards, so every router and the rebalancer read the same list.
 */

export type TableKind = 'sharded' | 'reference';

/** One registered table. */
export interface RegisteredTable {
  /** Schema-qualified and quoted as PostgreSQL prints it, e.g. `public.orders`. */
  readonly table: string;
  readonly kind: TableKind;
  /** The shard-key column (sharded tables only). */
  readonly shardKey: string | undefined;
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

/** Key column types whose ::text is exactly String(key) of the value the application routes by. */
const KEY_TYPES = /^(text|character varying(\(\d+\))?|smallint|integer|bigint|uuid)$/;

function q(schema: string): string {
  return `"${schema}"`;
}

/** Looks a table up on one shard; null when it does not exist there. */
export async function describeTable(session: Pick<ShardSession, 'query'>, table: string): Promise<TableShape | null> {
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
export async function readRegistry(session: Pick<ShardSession, 'query'>, schema: string): Promise<RegisteredTable[]> {
  const { rows } = await session.query<{ table_name: string; kind: TableKind; key_column: string | null }>(
    `SELECT table_name, kind, key_column FROM ${q(schema)}.tables ORDER BY table_name`,
  );
  return rows.map((row) => ({ table: row.table_name, kind: row.kind, shardKey: row.key_column ?? undefined }));
}

/**
 * Registers a table on one shard inside the caller's transaction: checks it exists with the
 * key column, records it, installs its fence trigger and (sharded tables) its move-capture
 * function. Returns the registry name. Registering again with the same definition is a no-op.
 */
export async function registerOnShard(
  tx: Transaction,
  shardId: string,
  schema: string,
  bucketCount: number,
  table: string,
  kind: TableKind,
  shardKey: string | undefined,
): Promise<string> {
  const shape = await describeTable(
    { query: (sql, params) => tx.executeOn(shardId, sql, params) as never },
    table,
  );
  if (!shape) throw new ShardRouterError('INVALID_ARGUMENT', `table ${table} does not exist on shard ${shardId}: create it on every shard first`, { shardId });
  if (kind === 'sharded') {
    const type = shape.types.get(shardKey!);
    if (type === undefined) throw new ShardRouterError('INVALID_ARGUMENT', `table ${shape.name} on shard ${shardId} has no column "${shardKey}"`, { shardId });
    if (!KEY_TYPES.test(type)) {
      throw new ShardRouterError(
        'INVALID_ARGUMENT',
        `the shard key ${shape.name}.${shardKey} is ${type}; supported: text, varchar, smallint, integer, bigint, uuid (their text form is what the router hashes)`,
        { shardId },
      );
    }
  }
  const existing = await tx.executeOn<{ kind: TableKind; key_column: string | null }>(
    shardId,
    `SELECT kind, key_column FROM ${q(schema)}.tables WHERE table_name = $1`,
    [shape.name],
  );
  const before = existing.rows[0];
  if (before && (before.kind !== kind || (before.key_column ?? undefined) !== shardKey)) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `table ${shape.name} is already registered as ${before.kind}${before.key_column ? ` by ${before.key_column}` : ''}`,
    );
  }
  if (!before) {
    await tx.executeOn(shardId, `INSERT INTO ${q(schema)}.tables (table_name, kind, key_column) VALUES ($1, $2, $3)`, [shape.name, kind, shardKey ?? null]);
  }
  if (kind === 'sharded') await tx.executeOn(shardId, captureFunctionDdl(schema, shape.oid, shape.name, shardKey!, bucketCount));
  await tx.executeOn(
    shardId,
    `CREATE OR REPLACE TRIGGER ${fenceTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${shape.name}
       FOR EACH STATEMENT EXECUTE FUNCTION ${q(schema)}.write_fence()`,
  );
  return shape.name;
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
