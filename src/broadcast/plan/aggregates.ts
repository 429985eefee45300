import { asKind, names, nodeList, quotedName, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { ColumnRole, PlannerCatalog } from './plan.js';
import { unsupported } from './unsupported.js';

/** Which function calls are aggregates, and the merge role of those whose partial results combine exactly. */

/** Aggregates whose partial results combine exactly, and the role their column plays in the merge. */
const MERGEABLE_AGGREGATES: Readonly<Record<string, ColumnRole['kind']>> = {
  count: 'count',
  sum: 'sum',
  min: 'min',
  max: 'max',
  avg: 'avg',
  bool_and: 'bool_and',
  bool_or: 'bool_or',
  every: 'bool_and',
};

/** The role kinds of a mergeable aggregate call. */
export type AggregateKind = Exclude<ColumnRole['kind'], 'key' | 'value' | 'avg_count'>;

export function functionName(call: AstBody): string {
  return names(call.funcname).at(-1)!.toLowerCase();
}

/** The merge role of an aggregate call, undefined for an ordinary function; UNSUPPORTED for aggregates that cannot merge. */
export function aggregateRole(call: AstBody, catalog: PlannerCatalog): AggregateKind | undefined {
  const qualified = names(call.funcname);
  const name = functionName(call);
  const builtin = qualified.length === 1 || qualified[0] === 'pg_catalog';
  const role = builtin && Object.hasOwn(MERGEABLE_AGGREGATES, name) ? MERGEABLE_AGGREGATES[name] : undefined;
  const isAggregate = role !== undefined || call.agg_within_group === true || call.agg_star === true || catalog.isAggregate(name);
  if (!isAggregate) return undefined;
  if (call.agg_distinct === true) throw unsupported(`${name}(DISTINCT ...)`, 'distinct values may repeat across shards');
  if (call.agg_within_group === true)
    throw unsupported(`aggregate ${name}() WITHIN GROUP`, 'an ordered-set aggregate needs all rows in one place');
  if (role === undefined)
    throw unsupported(`aggregate ${name}()`, 'only count, sum, min, max, avg, bool_and, bool_or and every merge exactly');
  if (nodeList(call.agg_order).length > 0) throw unsupported(`aggregate ${name}(... ORDER BY ...)`);
  return role as AggregateKind;
}

export function hasAggregate(node: unknown, catalog: PlannerCatalog): boolean {
  let found = false;
  walk(node, (kind, body) => {
    if (found) return false;
    if (kind === 'FuncCall' && body.over === undefined) {
      const qualified = names(body.funcname);
      const name = qualified.at(-1)!.toLowerCase();
      const builtin = qualified.length === 1 || qualified[0] === 'pg_catalog';
      if (
        (builtin && Object.hasOwn(MERGEABLE_AGGREGATES, name)) ||
        body.agg_within_group === true ||
        body.agg_star === true ||
        catalog.isAggregate(name)
      ) {
        found = true;
        return false;
      }
    }
    return undefined;
  });
  return found;
}

/** The merge role of a mergeable aggregate call; min/max remember an explicit COLLATE on their argument. */
export function roleOf(kind: Exclude<AggregateKind, 'avg'>, call: AstBody): ColumnRole {
  if (kind !== 'min' && kind !== 'max') return { kind };
  const collate = asKind(nodeList(call.args)[0], 'CollateClause');
  return collate ? { kind, collation: quotedName(collate.collname) } : { kind };
}

/** The same aggregate call under another name (avg(x) FILTER (...) -> sum(x) FILTER (...)). */
export function renamedCall(call: AstBody, name: string): AstNode {
  return { FuncCall: { ...call, funcname: [{ String: { sval: name } }] } };
}
