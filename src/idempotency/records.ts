import type { CatalogExtension } from '../catalog/catalog.js';
import { libraryTablesExtension } from '../rebalance/library-tables.js';
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
 * Creates the records table and registers it as a sharded table (anchor column) on each shard,
 * so moves carry the records and the write fence guards them (rebalance/library-tables.ts).
 */
export const idempotencyExtension: CatalogExtension = libraryTablesExtension(
  'idempotency records',
  [{ name: RECORDS_TABLE, kind: 'sharded', keyColumn: ANCHOR_COLUMN }],
  recordsDdl,
);

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
