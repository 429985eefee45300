import type { CatalogExtension } from '../catalog/catalog.js';
import { STALE_MAP_SQLSTATE } from '../errors.js';
import { hashFunctionDdl } from '../placement/hash-sql.js';
import { MAP_VERSION_SETTING } from '../pool/shard-pool.js';
import type { Queryable } from '../pool/session.js';
import { q, quoteIdent, sqlString } from '../sql.js';

/**
 * The catalog tables and functions that rebalancing adds to every shard's catalog schema
 * (docs/rebalance.md has the protocol they serve):
 *
 * - `tables`: the table registry (sharded tables with their shard-key column, reference tables).
 * - `shards`: every shard that ever joined, with its URL *without* password, so a router learns
 *   of a shard added after it started.
 * - `moves` / `move_changes`: a bucket move's persisted state and change log (on its source).
 * - `write_fence()`: the statement trigger on every registered table. Its body holds, as a
 *   constant, the oldest map version a router may write with on this shard; it is replaced
 *   in the same two-phase commit that switches the map. A constant costs ~2 us a statement
 *   where reading a table costs ~6 us (measured: docs/rebalance.md).
 * - `murmur3` / `bucket_of`: the router's hash in SQL (sql-hash.ts).
 *
 * Every identifier here is built from the validated catalog schema name, a table OID or a
 * column name quoted with PostgreSQL's own quote_ident rules (quoteIdent below).
 */

/** Session setting that marks the rebalancer's own connections (its copies are not fenced or logged). */
export const ROLE_SETTING = 'pg_shard_router.role';

/** Statements creating the rebalancing catalog; idempotent (IF NOT EXISTS / existence checks). */
export function rebalanceCatalogDdl(schema: string): string[] {
  const s = q(schema);
  return [
    ...hashFunctionDdl(schema),
    `CREATE TABLE IF NOT EXISTS ${s}.moves (
       move_id text PRIMARY KEY,
       buckets integer[] NOT NULL,
       source_shard text NOT NULL,
       target_shard text NOT NULL,
       state text NOT NULL CHECK (state IN ('copying', 'switched', 'done', 'undone')),
       map_version bigint,
       rows_copied bigint NOT NULL DEFAULT 0,
       bytes_copied bigint NOT NULL DEFAULT 0,
       started_at timestamptz NOT NULL DEFAULT now(),
       updated_at timestamptz NOT NULL DEFAULT now())`,
    `CREATE INDEX IF NOT EXISTS moves_open ON ${s}.moves (state) WHERE state IN ('copying', 'switched')`,
    `CREATE TABLE IF NOT EXISTS ${s}.move_changes (
       seq bigserial PRIMARY KEY,
       move_id text NOT NULL,
       table_name text NOT NULL,
       key text NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS move_changes_move ON ${s}.move_changes (move_id)`,
    readGuardFunctionDdl(schema),
    // Created once with fence 0; only a map switch replaces it (CREATE OR REPLACE would reset it).
    `DO $do$ BEGIN
       IF to_regprocedure('${s}.write_fence()') IS NULL THEN
         EXECUTE ${dollarQuote(fenceFunctionDdl(schema, 0))};
       END IF;
     END $do$`,
  ];
}

/** The rebalancing catalog as a catalog extension: installed on every shard where it is missing (or older). */
export const rebalanceExtension: CatalogExtension = {
  name: 'rebalancing',
  async ensure(session, schema) {
    const present = await session.query<{ present: boolean }>(
      'SELECT to_regclass($1) IS NOT NULL AND to_regprocedure($2) IS NOT NULL AS present',
      [`${q(schema)}.move_changes`, `${q(schema)}.read_guard(bigint)`],
    );
    if (present.rows[0]?.present) return;
    for (const statement of rebalanceCatalogDdl(schema)) await session.query(statement);
  },
};

function dollarQuote(text: string): string {
  if (text.includes('$ddl$')) throw new Error('unexpected $ddl$ in generated DDL');
  return `$ddl$${text}$ddl$`;
}

/**
 * The fence: refuses any write statement from a router connection whose map version is below
 * `requiredVersion` (connections without the setting, i.e. not a router's, pass). A BEFORE
 * statement trigger, so it fires before any row is read or locked.
 */
export function fenceFunctionDdl(schema: string, requiredVersion: number): string {
  if (!Number.isSafeInteger(requiredVersion) || requiredVersion < 0) throw new Error(`bad fence version ${requiredVersion}`);
  return `CREATE OR REPLACE FUNCTION ${q(schema)}.write_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
BEGIN
  IF nullif(current_setting('${MAP_VERSION_SETTING}', true), '')::bigint < ${requiredVersion} THEN
    RAISE EXCEPTION 'the router''s bucket map (version %) is older than this shard''s fence (version ${requiredVersion})',
      current_setting('${MAP_VERSION_SETTING}', true)
      USING ERRCODE = '${STALE_MAP_SQLSTATE}', DETAIL = 'required map version ${requiredVersion}';
  END IF;
  RETURN NULL;
END $fence$`;
}

/**
 * The read guard of broadcast reads (docs/rebalance.md, "Broadcast reads during moves"). Called
 * once per shard query with the map version the broadcast routes by, in the query's own
 * snapshot (STABLE): refuses with STALE_MAP when this shard's newest committed map is another
 * version, so that a target's copy and the map that gives it the buckets are seen together;
 * otherwise returns the buckets of this shard's switched-but-not-cleaned moves, whose rows it
 * still holds but no longer owns.
 */
export function readGuardFunctionDdl(schema: string): string {
  const s = q(schema);
  return `CREATE OR REPLACE FUNCTION ${s}.read_guard(routed bigint) RETURNS integer[] LANGUAGE plpgsql STABLE AS $guard$
DECLARE
  newest bigint;
  moved integer[];
BEGIN
  SELECT max(version) INTO newest FROM ${s}.bucket_map;
  IF newest IS DISTINCT FROM routed THEN
    RAISE EXCEPTION 'the broadcast read by bucket map version %, this shard is at version %', routed, newest
      USING ERRCODE = '${STALE_MAP_SQLSTATE}', DETAIL = 'required map version ' || newest;
  END IF;
  SELECT coalesce(array_agg(DISTINCT b), '{}') INTO moved FROM ${s}.moves, unnest(buckets) AS b WHERE state = 'switched';
  RETURN moved;
END $guard$`;
}

/**
 * The condition a broadcast adds to a shard query over a sharded table: one call of the read
 * guard before any row is read (a condition without columns is a one-time filter, so it runs
 * even on an empty table), and, only while the shard holds moved rows, the bucket of each row.
 */
export function movesGuardCondition(
  schema: string,
  keyColumn: string,
  bucketCount: number,
  versionParam: number,
  /** The table's alias or name, when the query reads several tables (a join). */
  qualifier?: string,
): string {
  if (!Number.isSafeInteger(bucketCount) || bucketCount < 1 || !Number.isSafeInteger(versionParam) || versionParam < 1) {
    throw new Error(`bad guard arguments ${bucketCount}, ${versionParam}`);
  }
  const moved = `(SELECT ${q(schema)}.read_guard($${versionParam}::bigint))`;
  const key = qualifier === undefined ? quoteIdent(keyColumn) : `${quoteIdent(qualifier)}.${quoteIdent(keyColumn)}`;
  const bucket = `${q(schema)}.bucket_of((${key})::text, ${bucketCount})`;
  // The cast keeps `<> ALL (...)` an array comparison, not a comparison with a subquery's rows;
  // coalesce keeps rows whose key is NULL (no bucket, never moved).
  return `${moved} IS NOT NULL AND (cardinality(${moved}) = 0 OR coalesce(${bucket} <> ALL (CAST(${moved} AS integer[])), true))`;
}

/** The fence version a shard currently enforces (parsed back from the function body). */
export async function readFenceVersion(session: Queryable, schema: string): Promise<number> {
  const { rows } = await session.query<{ body: string | null }>('SELECT prosrc AS body FROM pg_proc WHERE oid = to_regprocedure($1)', [
    `${q(schema)}.write_fence()`,
  ]);
  const match = /< (\d+) THEN/.exec(rows[0]?.body ?? '');
  return match ? Number(match[1]) : 0;
}

/** The name of the fence trigger on registered tables (per catalog schema, so clusters never collide). */
export function fenceTriggerName(schema: string): string {
  return quoteIdent(`${schema}_fence`.slice(0, 63));
}

/** The name of the per-move capture trigger on a source shard's sharded tables. */
export function captureTriggerName(schema: string): string {
  return quoteIdent(`${schema}_move`.slice(0, 63));
}

/** The capture function of one table (named by the table's OID on that shard). */
export function captureFunctionName(schema: string, tableOid: number): string {
  return `${q(schema)}.${quoteIdent(`capture_${tableOid}`)}`;
}

/**
 * The row trigger a move installs on its source shard's sharded tables. For a row in a bucket
 * of an open move from this shard it:
 * - takes FOR SHARE on the move's row, so the cutover (which updates that row) waits for the
 *   writers already past this point and holds back new ones: that wait is the write pause,
 *   and it touches only the moving buckets;
 * - refuses the write (STALE_MAP) once the move is switched: the bucket lives elsewhere now.
 *   In READ COMMITTED the waiting writer re-reads the updated row and sees 'switched'; in
 *   REPEATABLE READ / SERIALIZABLE PostgreSQL raises a serialization failure instead (40001);
 * - logs the key in move_changes while copying, for the catch-up.
 * The rebalancer's own connections (ROLE_SETTING) pass untouched.
 */
export function captureFunctionDdl(schema: string, tableOid: number, tableName: string, keyColumn: string, bucketCount: number): string {
  const s = q(schema);
  const key = quoteIdent(keyColumn);
  return `CREATE OR REPLACE FUNCTION ${captureFunctionName(schema, tableOid)}() RETURNS trigger LANGUAGE plpgsql AS $capture$
DECLARE
  changed text[];
  k text;
  b integer;
  m record;
BEGIN
  IF current_setting('${ROLE_SETTING}', true) = 'rebalancer' THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  IF TG_OP = 'INSERT' THEN changed := ARRAY[NEW.${key}::text];
  ELSIF TG_OP = 'DELETE' THEN changed := ARRAY[OLD.${key}::text];
  ELSE changed := ARRAY[OLD.${key}::text, NEW.${key}::text];
  END IF;
  FOREACH k IN ARRAY changed LOOP
    CONTINUE WHEN k IS NULL;
    b := ${s}.bucket_of(k, ${bucketCount});
    SELECT move_id, state, map_version INTO m FROM ${s}.moves
      WHERE state IN ('copying', 'switched') AND b = ANY (buckets)
      FOR SHARE;
    CONTINUE WHEN NOT FOUND;
    IF m.state = 'switched' THEN
      RAISE EXCEPTION 'bucket % has moved to another shard (map version %)', b, m.map_version
        USING ERRCODE = '${STALE_MAP_SQLSTATE}', DETAIL = 'required map version ' || m.map_version;
    END IF;
    INSERT INTO ${s}.move_changes (move_id, table_name, key) VALUES (m.move_id, ${sqlString(tableName)}, k);
  END LOOP;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END $capture$`;
}
