import type { ShardPool } from '../pool/shard-pool.js';
import { quoteIdent } from '../sql.js';
import type { SelectPlan } from './plan/plan.js';

/**
 * A pushed-down join is exact only if equal shard keys have equal text: a row's bucket is
 * `bucket_of(key::text)`, so `a.k = b.k` meets on one shard only when equal values print the
 * same. That holds within each class below (integers print alike whatever their width; text and
 * varchar under deterministic collations compare bytewise; uuid and date print canonically), not
 * for numeric (1.0 = 1.00), floats (0 = -0), or a nondeterministic collation ('a' = 'A').
 * The key columns are checked once per plan on one shard (every shard has the same schema).
 */
const KEY_CLASS_SQL = `
  SELECT count(*) = cardinality($1::text[])
     AND count(DISTINCT CASE WHEN t.typname IN ('int2', 'int4', 'int8') THEN 'integer'
                             WHEN t.typname IN ('text', 'varchar') THEN 'text'
                             ELSE t.typname END) = 1
     AND bool_and(t.typname IN ('int2', 'int4', 'int8', 'text', 'varchar', 'uuid', 'date'))
     AND bool_and(c.oid IS NULL OR c.collisdeterministic) AS exact
    FROM unnest($1::text[], $2::text[]) AS k(rel, col)
    JOIN pg_attribute a ON a.attrelid = to_regclass(k.rel) AND a.attname = k.col AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_collation c ON c.oid = a.attcollation`;

/** A shard key column of a pushed-down join. */
export interface JoinKey {
  readonly schema: string | undefined;
  readonly table: string;
  readonly column: string;
}

/** Whether the plan's equated shard keys hash equal values alike (true for a plan without a pushed-down join). */
export async function joinKeysAgree(plan: SelectPlan, pool: ShardPool): Promise<boolean> {
  const query = keyCheckQuery(plan.pushedJoin?.keys ?? []);
  if (!query) return true;
  const { rows } = await pool.queryRaw(query.sql, query.params);
  return rows[0]?.[0] === 't';
}

/** The query whose one column `exact` says whether the keys hash equal values alike; undefined for no keys. */
export function keyCheckQuery(keys: readonly JoinKey[]): { sql: string; params: unknown[] } | undefined {
  if (keys.length === 0) return undefined;
  const relations = keys.map((key) =>
    key.schema === undefined ? quoteIdent(key.table) : `${quoteIdent(key.schema)}.${quoteIdent(key.table)}`,
  );
  return { sql: KEY_CLASS_SQL, params: [relations, keys.map((key) => key.column)] };
}
