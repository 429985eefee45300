import { asKind, names, nodeList, structuralKey, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { PartialAggregate, PartialSpec, PlannerCatalog } from './plan.js';
import { functionName, hasAggregate } from './aggregates.js';

/**
 * Partial aggregation inside a coordinator step, for the common grouped query over one sharded
 * table whose aggregates are count/sum/min/max/avg of a column and DISTINCT aggregates of a
 * column: each shard groups its rows by the GROUP BY columns plus the DISTINCT arguments and
 * sends one row per such group with its partial count/sum/min/max (avg as sum and count), so
 * the coordinator receives DISTINCT group/value pairs instead of every row. The outer query
 * combines the partials (count -> sum of counts, avg -> sum / count as numeric_div or float8
 * division, exactly what avg's final function computes) and evaluates the DISTINCT aggregates,
 * HAVING, ORDER BY and expressions itself. Whether the column types allow it is decided at run
 * time (coordinator-step.ts); otherwise the plain pull-up runs.
 */

const PARTIAL_KINDS = new Set(['count', 'sum', 'min', 'max', 'avg']);
/** Aggregates that skip NULL inputs (strict transition functions): a NULL added beside the values changes nothing. */
const NULL_IGNORING = new Set(['count', 'sum', 'avg', 'min', 'max', 'string_agg', 'bool_and', 'bool_or', 'every', 'bit_and', 'bit_or']);

/** The partial-aggregation spec of a SELECT, or undefined when its shape does not qualify. */
export function partialSpec(select: AstBody, alias: string, catalog: PlannerCatalog): PartialSpec | undefined {
  if ((select.op !== undefined && select.op !== 'SETOP_NONE') || select.withClause !== undefined) return undefined;
  if (nodeList(select.fromClause).length !== 1 || asKind(nodeList(select.fromClause)[0], 'RangeVar') === undefined) return undefined;
  if (select.distinctClause !== undefined || nodeList(select.windowClause).length > 0) return undefined;
  const column = (node: unknown): string | undefined => {
    const ref = asKind(node, 'ColumnRef');
    const fields = ref ? names(ref.fields) : [];
    if (fields.length === 1 && fields[0] !== '*') return fields[0];
    if (fields.length === 2 && fields[0] === alias && fields[1] !== '*') return fields[1];
    return undefined;
  };
  const keys: string[] = [];
  for (const item of nodeList(select.groupClause)) {
    const key = column(item);
    if (key === undefined) return undefined;
    keys.push(key);
  }
  const aggregates = new Map<string, PartialAggregate>();
  const distinct = new Set<string>();
  let nullIgnoringDistinct = true;
  const outside: AstNode[] = [];
  let ok = true;
  const parts = [select.targetList, select.havingClause, select.sortClause];
  walk(parts, (kind, body) => {
    if (!ok) return false;
    if (kind === 'SubLink' || (kind === 'FuncCall' && body.over !== undefined)) ok = false;
    if (kind === 'ColumnRef') outside.push({ ColumnRef: body });
    if (kind !== 'FuncCall' || !hasAggregate({ FuncCall: body }, catalog) || nestedAggregate(body, catalog)) return undefined;
    const call = body;
    const aggregate = readAggregate(call, column);
    if (aggregate === undefined) {
      ok = false;
      return false;
    }
    if (aggregate === 'distinct') {
      distinct.add(column(nodeList(call.args)[0])!);
      if (!NULL_IGNORING.has(functionName(call))) nullIgnoringDistinct = false;
      // Its argument is a grouped column of the partial rows; ColumnRefs inside need no check.
      return false;
    }
    aggregates.set(structuralKey({ FuncCall: call }), aggregate);
    return false;
  });
  if (!ok || (aggregates.size === 0 && distinct.size === 0)) return undefined;
  // Outside aggregates, a query may name only grouped columns (or, in ORDER BY, output names).
  const outputNames = new Set(nodeList(select.targetList).map((item) => asKind(item, 'ResTarget')?.name as string | undefined));
  const grouped = new Set(keys);
  if (!outside.every((node) => grouped.has(column(node) ?? '\u0000') || outputNames.has(names(asKind(node, 'ColumnRef')!.fields)[0]))) {
    return undefined;
  }
  return {
    keys: [...new Set(keys)],
    distinct: [...distinct].filter((name) => !grouped.has(name)),
    aggregates: [...aggregates.values()],
    nullIgnoringDistinct,
  };
}

/** An aggregate call whose arguments hold another aggregate (PostgreSQL refuses it anyway). */
function nestedAggregate(call: AstBody, catalog: PlannerCatalog): boolean {
  return hasAggregate(call.args, catalog);
}

/**
 * A partial aggregate: count/sum/min/max/avg of a column (or count(*)), FILTER allowed; or
 * 'distinct': agg(DISTINCT column [ORDER BY column]) with no FILTER, evaluated by the outer
 * query over the distinct values; undefined when neither.
 */
function readAggregate(call: AstBody, column: (node: unknown) => string | undefined): PartialAggregate | 'distinct' | undefined {
  const qualified = names(call.funcname);
  if (qualified.length > 1 && qualified[0] !== 'pg_catalog') return undefined;
  const name = functionName(call);
  const args = nodeList(call.args);
  if (call.agg_within_group === true) return undefined;
  if (call.agg_distinct === true) {
    const argument = column(args[0]);
    const order = nodeList(call.agg_order).every((item) => column(asKind(item, 'SortBy')?.node) === argument);
    const constants = args.slice(1).every((arg) => asKind(arg, 'A_Const') !== undefined);
    return argument !== undefined && order && constants && call.agg_filter === undefined ? 'distinct' : undefined;
  }
  if (!PARTIAL_KINDS.has(name) || nodeList(call.agg_order).length > 0) return undefined;
  if (call.agg_star === true) {
    return name === 'count'
      ? { key: structuralKey({ FuncCall: call }), kind: 'count', column: undefined, call: { FuncCall: call } }
      : undefined;
  }
  const argument = args.length === 1 ? column(args[0]) : undefined;
  if (argument === undefined) return undefined;
  return { key: structuralKey({ FuncCall: call }), kind: name as PartialAggregate['kind'], column: argument, call: { FuncCall: call } };
}
