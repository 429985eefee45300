import { createHash } from 'node:crypto';
import { registryNameParts } from '../catalog/registries.js';
import type { Queryable } from '../pool/session.js';
import type { ShardPool } from '../pool/shard-pool.js';
import { q, quoteIdent } from '../sql.js';
import { ROLE_SETTING } from './schema.js';

/**
 * The optional bucket index of a sharded table (docs/rebalance.md, "Bucket index"): an
 * expression index on `<catalog>.bucket_of(<key>::text, n)`, the very expression a move's copy
 * and clean-up filter by, so they read only the moving buckets' rows instead of scanning the
 * table. bucket_of and murmur3 are IMMUTABLE, as an index expression must be. The planner
 * matches the expression, not the name; the name only lets the library find its own index.
 */

/** The index's name (unquoted): `<table>_<catalog>_bucket`, shortened with a hash when over 63 bytes. */
export function bucketIndexName(schema: string, table: string): string {
  const relname = registryNameParts(table).at(-1)!;
  const name = `${relname}_${schema}_bucket`;
  if (Buffer.byteLength(name) <= 63) return name;
  const digest = createHash('sha256').update(`${table}\u0000${schema}`).digest('hex').slice(0, 12);
  // 63 bytes at most, cut on a character boundary (names may be multi-byte).
  let prefix = relname;
  while (Buffer.byteLength(`${prefix}_${digest}_bucket`) > 63) prefix = prefix.slice(0, -1);
  return `${prefix}_${digest}_bucket`;
}

/** The index's name qualified with the table's schema (indexes live in their table's schema). */
function qualifiedIndexName(schema: string, table: string): string {
  const tableSchema = registryNameParts(table)[0]!;
  return `${quoteIdent(tableSchema)}.${quoteIdent(bucketIndexName(schema, table))}`;
}

/** CREATE INDEX of a table's bucket index; `table` is a registry name (`format('%I.%I')`). */
export function bucketIndexDdl(schema: string, table: string, keyColumn: string, bucketCount: number, concurrently: boolean): string {
  if (!Number.isSafeInteger(bucketCount) || bucketCount < 1) throw new Error(`bad bucket count ${bucketCount}`);
  const name = quoteIdent(bucketIndexName(schema, table));
  return `CREATE INDEX ${concurrently ? 'CONCURRENTLY ' : ''}IF NOT EXISTS ${name} ON ${table} (${q(schema)}.bucket_of(${quoteIdent(keyColumn)}::text, ${bucketCount}))`;
}

/** Whether a table has its bucket index on this shard: 'valid', 'invalid' (a failed concurrent build) or 'none'. */
export async function bucketIndexState(session: Queryable, schema: string, table: string): Promise<'valid' | 'invalid' | 'none'> {
  const { rows } = await session.query<{ valid: boolean }>(
    'SELECT i.indisvalid AND i.indisready AS valid FROM pg_index i WHERE i.indexrelid = to_regclass($1)',
    [qualifiedIndexName(schema, table)],
  );
  const row = rows[0];
  return row === undefined ? 'none' : row.valid ? 'valid' : 'invalid';
}

/**
 * Creates a table's bucket index on every given shard with CREATE INDEX CONCURRENTLY (writers
 * keep going while it builds), one shard after the other, on a connection of its own (it cannot
 * run in a transaction). A leftover invalid index of an interrupted build is dropped first.
 * Idempotent.
 */
export async function createBucketIndexes(
  pools: readonly ShardPool[],
  schema: string,
  table: string,
  keyColumn: string,
  bucketCount: number,
): Promise<void> {
  for (const pool of pools) {
    const session = await pool.openDedicated({ [ROLE_SETTING]: 'rebalancer' }, 'bucket index');
    try {
      const state = await bucketIndexState(session, schema, table);
      if (state === 'valid') continue;
      if (state === 'invalid') await session.query(`DROP INDEX CONCURRENTLY IF EXISTS ${qualifiedIndexName(schema, table)}`);
      await session.query(bucketIndexDdl(schema, table, keyColumn, bucketCount, true));
    } finally {
      await session.end();
    }
  }
}
