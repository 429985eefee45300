import type { CatalogExtension } from '../catalog/catalog.js';
import { describeTable } from '../catalog/registries.js';
import type { Queryable } from '../pool/session.js';
import { captureFunctionDdl, fenceTriggerName } from '../rebalance/schema.js';
import { q } from '../sql.js';

/**
 * The idempotency records table, one per shard in the catalog schema (docs/idempotency.md).
 *
 * A record is keyed by (anchor, idempotency_key): `anchor` is `String(first key of the call)`,
 * the shard key the router hashes, so the record lives on the shard that owns that key, the
 * same shard that decides the call's commit. The table is a **registered sharded table** keyed
 * by `anchor`: the write fence refuses records written by a stale router, and a bucket move
 * copies them like any row (capture trigger, snapshot, catch-up), so a retry finds its record
 * on the bucket's current owner.
 *
 * `result` is NULL only inside the transaction that claimed the key (it is set before that
 * transaction commits), so a committed record always carries its result.
 */

export const RECORDS_TABLE = 'idempotency_records';
/** The shard-key column of the records table, as registered. */
export const ANCHOR_COLUMN = 'anchor';

export function recordsTable(schema: string): string {
  return `${q(schema)}.${RECORDS_TABLE}`;
}

function recordsDdl(schema: string): string[] {
  const table = recordsTable(schema);
  return [
    `CREATE TABLE IF NOT EXISTS ${table} (
       ${ANCHOR_COLUMN} text NOT NULL,
       idempotency_key text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
       fingerprint text NOT NULL,
       result text,
       created_at timestamptz NOT NULL DEFAULT now(),
       expires_at timestamptz NOT NULL,
       PRIMARY KEY (${ANCHOR_COLUMN}, idempotency_key))`,
    `CREATE INDEX IF NOT EXISTS idempotency_records_expiry ON ${table} (expires_at)`,
  ];
}

/**
 * Creates the records table and registers it as a sharded table on one shard, in one local
 * transaction: the registry row, the move-capture function and the fence trigger, exactly what
 * `registerShardedTable` installs (rebalance/register-table.ts). Every shard gets the same
 * registration (a constant), at connect under the catalog lock and on a shard being added.
 */
export const idempotencyExtension: CatalogExtension = {
  name: 'idempotency records',
  async ensure(session, schema) {
    const { rows } = await session.query<{ ready: boolean }>(
      `SELECT to_regclass($1) IS NOT NULL AND EXISTS (SELECT 1 FROM ${q(schema)}.tables WHERE table_name = format('%I.%I', $2::text, $3::text)) AS ready`,
      [recordsTable(schema), schema, RECORDS_TABLE],
    );
    if (rows[0]?.ready) return;
    await session.query('BEGIN');
    try {
      await install(session, schema);
      await session.query('COMMIT');
    } catch (error) {
      await session.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  },
};

async function install(session: Queryable, schema: string): Promise<void> {
  for (const statement of recordsDdl(schema)) await session.query(statement);
  const shape = await describeTable(session, recordsTable(schema));
  if (!shape) throw new Error(`${recordsTable(schema)} was not created`);
  const identity = await session.query<{ bucket_count: number }>(`SELECT bucket_count FROM ${q(schema)}.shard_identity`);
  const bucketCount = identity.rows[0]?.bucket_count;
  if (bucketCount === undefined) throw new Error('the shard has no identity yet');
  await session.query(
    `INSERT INTO ${q(schema)}.tables (table_name, kind, key_column) VALUES ($1, 'sharded', $2) ON CONFLICT (table_name) DO NOTHING`,
    [shape.name, ANCHOR_COLUMN],
  );
  await session.query(captureFunctionDdl(schema, shape.oid, shape.name, ANCHOR_COLUMN, bucketCount));
  await session.query(
    `CREATE OR REPLACE TRIGGER ${fenceTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${shape.name}
       FOR EACH STATEMENT EXECUTE FUNCTION ${q(schema)}.write_fence()`,
  );
}

/** A committed, unexpired record as a lookup reads it. */
export interface StoredRecord {
  readonly fingerprint: string;
  readonly result: string;
  /** When the claiming transaction began, epoch milliseconds on the record's shard's clock. */
  readonly createdAtMillis: number;
}

/** The lookup: one point read on the anchor's owner. Expired records count as absent. */
export function lookupSql(schema: string): string {
  // created_at as epoch milliseconds: a number is far cheaper for the driver than a timestamp to parse.
  return `SELECT fingerprint, result, (extract(epoch FROM created_at) * 1000)::float8 AS created_ms FROM ${recordsTable(schema)}
           WHERE ${ANCHOR_COLUMN} = $1 AND idempotency_key = $2 AND expires_at > now() AND result IS NOT NULL`;
}

/**
 * The claim, the first statement of the guarded transaction on the anchor's shard. Inserts the
 * record (result NULL) or takes over an expired one; returns a row only then. The primary key
 * makes a concurrent claim of the same key wait until this transaction ends: it then finds a
 * committed record (no row: a replay) or nothing (this transaction rolled back: it claims).
 */
export function claimSql(schema: string): string {
  return `INSERT INTO ${recordsTable(schema)} AS r (${ANCHOR_COLUMN}, idempotency_key, fingerprint, created_at, expires_at)
          VALUES ($1, $2, $3, now(), now() + make_interval(secs => $4::float8 / 1000))
          ON CONFLICT (${ANCHOR_COLUMN}, idempotency_key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, result = NULL, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
            WHERE r.expires_at <= now()
          RETURNING 1 AS claimed`;
}

/** The result, written last inside the same transaction; the TTL counts from here. */
export function storeSql(schema: string): string {
  return `UPDATE ${recordsTable(schema)}
             SET result = $3, expires_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
           WHERE ${ANCHOR_COLUMN} = $1 AND idempotency_key = $2`;
}

/**
 * One bounded batch of expired records: at most `$1` rows per statement, so a pass never holds
 * many row locks or writes much WAL at once.
 */
export function collectSql(schema: string): string {
  const table = recordsTable(schema);
  return `DELETE FROM ${table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ${table} WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED))`;
}
