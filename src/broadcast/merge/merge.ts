import { parseRows } from '../../pool/raw-text.js';
import type { FieldDef, QueryResultRow } from '../../pool/session.js';
import type { RawQueryResult } from '../../pool/shard-pool.js';
import { ShardRouterError } from '../../errors.js';
import type { Count, SelectPlan } from '../plan/plan.js';
import type { TextOrder } from '../values/order.js';
import { equalityKeyFor } from '../values/text-forms.js';
import type { ServerCaster } from '../server-probe.js';
import { combineGroups, equalityRowKey } from './combine-groups.js';
import { filterHaving } from './having.js';
import { mergeSorted } from './k-way-merge.js';
import { rowComparator } from './row-order.js';
import type { RawRow, ServerRanker } from './row-order.js';

/** One shard's answer to the shard query: field descriptions and rows of raw text forms. */
export type ShardRows = Pick<RawQueryResult, 'shardId' | 'fields' | 'rows'>;

export interface MergeContext {
  readonly params: readonly unknown[];
  /** Whether the database's default collation orders text by code point. */
  readonly textOrder: TextOrder;
  readonly ranker: ServerRanker;
  readonly caster: ServerCaster;
}

/** Rows after the first merge step, with their fields, and whether they are in ORDER BY order already. */
interface Gathered {
  readonly rows: RawRow[];
  readonly fields: FieldDef[];
  readonly sorted: boolean;
}

/**
 * Merges the shards' results of a SELECT plan into the rows one server would have returned.
 * Steps, in SQL's order: combine groups (aggregate plans), HAVING, DISTINCT, ORDER BY (a k-way
 * merge of the shards' sorted rows for plain queries), OFFSET/LIMIT, drop helper columns, parse.
 */
export async function mergeSelect<R extends QueryResultRow>(
  plan: SelectPlan,
  results: readonly ShardRows[],
  context: MergeContext,
): Promise<{ rows: R[]; fields: FieldDef[] }> {
  const hiddenCount = plan.hidden.length;
  const limit = resolveCount(plan.limit, context.params, 'LIMIT');
  const offset = resolveCount(plan.offset, context.params, 'OFFSET') ?? 0;
  const gathered = plan.aggregate ? await gatherGroups(plan, results, context) : await gatherRows(plan, results, context, limit, offset);
  const { fields, sorted } = gathered;
  let rows = gathered.rows;
  const visibleCount = fields.length - hiddenCount;
  if (plan.distinct) rows = distinctRows(rows, fields, visibleCount);
  if (plan.sort.length > 0 && !sorted) {
    const compare = await rowComparator(
      plan.sort,
      fields.map((field) => field.dataTypeID),
      hiddenCount,
      context.textOrder,
      context.ranker,
      () => rows,
    );
    rows.sort(compare);
  }
  if (offset > 0 || limit !== undefined) rows = rows.slice(offset, limit === undefined ? undefined : offset + limit);
  const visibleFields = fields.slice(0, visibleCount);
  return { rows: parseRows<R>(rows, visibleFields), fields: visibleFields };
}

/** An aggregate plan's merged groups, HAVING applied. */
async function gatherGroups(plan: SelectPlan, results: readonly ShardRows[], context: MergeContext): Promise<Gathered> {
  const shardFields = results[0]!.fields;
  const width = shardFields.length;
  const roles = [...plan.aggregate!.visibleRoles, ...plan.aggregate!.hiddenRoles];
  if (roles.length !== width) throw new Error(`shard result has ${width} columns, the plan expects ${roles.length}`);
  const { rows, fields } = await combineGroups(plan, roles, results, [...shardFields], context);
  if (!plan.having) return { rows, fields, sorted: false };
  return { rows: await filterHaving(plan.having, rows, fields, plan.hidden.length, context), fields, sorted: false };
}

/** A plain plan's rows: the shards' rows one after the other, or k-way merged under ORDER BY. */
async function gatherRows(
  plan: SelectPlan,
  results: readonly ShardRows[],
  context: MergeContext,
  limit: number | undefined,
  offset: number,
): Promise<Gathered> {
  const fields = [...results[0]!.fields];
  if (plan.sort.length === 0) return { rows: results.flatMap((result) => result.rows), fields, sorted: false };
  const oids = fields.map((field) => field.dataTypeID);
  const all = () => results.flatMap((result) => result.rows);
  const compare = await rowComparator(plan.sort, oids, plan.hidden.length, context.textOrder, context.ranker, all);
  // DISTINCT can drop rows, so the merge may need more than offset+limit of them.
  const wanted = limit !== undefined && !plan.distinct ? offset + limit : Infinity;
  const rows = mergeSorted(
    results.map((result) => result.rows),
    compare,
    wanted,
  );
  return { rows, fields, sorted: true };
}

function distinctRows(rows: readonly RawRow[], fields: readonly FieldDef[], visibleCount: number): RawRow[] {
  const columns = Array.from({ length: visibleCount }, (_, c) => c);
  const keyOf = fields.slice(0, visibleCount).map((field) => equalityKeyFor(field.dataTypeID));
  const seen = new Set<string>();
  return rows.filter((row) => {
    const key = equalityRowKey(row, columns, keyOf);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** A LIMIT or OFFSET's value for this execution; undefined for none (or NULL). */
export function resolveCount(count: Count | undefined, params: readonly unknown[], clause: 'LIMIT' | 'OFFSET'): number | undefined {
  if (!count) return undefined;
  let value: unknown = count.kind === 'constant' ? count.value : params[count.index];
  if (value === null || value === undefined) return undefined; // LIMIT NULL is no limit
  if (typeof value === 'string' && /^\s*-?\d+\s*$/.test(value)) value = Number(value);
  if (typeof value === 'bigint') value = Number(value);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new ShardRouterError('INVALID_ARGUMENT', `${clause} must be a non-negative integer, got ${String(value)}`);
  }
  return value;
}
