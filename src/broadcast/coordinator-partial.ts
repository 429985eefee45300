import { quoteIdent } from '../sql.js';
import type { Column } from './coordinator-step.js';
import { nodeList, structuralKey } from './plan/ast.js';
import type { AstBody, AstNode } from './plan/ast.js';
import type { CoordinatorPlan, PartialAggregate } from './plan/plan.js';
import { OUTER_CURSOR, paramsOf } from './plan/plan-coordinator.js';
import { deparse, parseStatement } from './plan/sql-parser.js';

/**
 * The run-time half of partial aggregation (plan-partial.ts): with the table's column types
 * known, the shard query's targets and GROUP BY, the temporary table's columns, and the outer
 * query with each partial aggregate replaced by its exact combination.
 */

export interface PartialLayout {
  /** The temporary table's columns, in the shard query's target order. */
  readonly columns: readonly Column[];
  readonly targets: readonly AstNode[];
  readonly groupBy: readonly AstNode[];
  readonly outerSql: string;
  readonly outerCursorSql: string;
  /**
   * Set when the shards send two kinds of rows (GROUPING SETS): distinct key/value pairs and
   * per-group partials, told apart by a last marker column; `pairWidth` columns identify a pair.
   */
  readonly split?: { readonly pairWidth: number };
}

/**
 * The rows of a split layout as the temporary table takes them: the marker dropped, each distinct
 * pair once (the same pair from several shards is sent on once: identical text is an equal value)
 * with NULL partials, and the per-group partial rows as they are (NULL in the DISTINCT columns).
 * Every DISTINCT aggregate then ignores the partial rows' NULLs, and every partial combination
 * (sum, min, max) the pair rows' NULLs, so the outer query computes what it did over all rows.
 */
export function splitRows(rows: readonly (string | null)[][], pairWidth: number): (string | null)[][] {
  const seen = new Set<string>();
  const out: (string | null)[][] = [];
  for (const row of rows) {
    const values = row.slice(0, -1);
    if (row.at(-1) !== '0') {
      out.push(values);
      continue;
    }
    const key = JSON.stringify(values.slice(0, pairWidth));
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(values.map((value, i) => (i < pairWidth ? value : null)));
  }
  return out;
}

const INTEGERS = new Set(['smallint', 'integer']);
/** sum()'s result type by argument type (PostgreSQL's sum(int2/int4) is int8, sum(int8) numeric). */
function sumType(type: string): string | undefined {
  if (INTEGERS.has(type)) return 'bigint';
  if (type === 'bigint' || type === 'numeric' || type.startsWith('numeric(')) return 'numeric';
  if (type === 'real' || type === 'double precision') return type;
  return undefined;
}

/** The layout for this table, or undefined when a column's type (or a filter) rules partial aggregation out. */
export function partialLayout(plan: CoordinatorPlan, shape: readonly Column[]): PartialLayout | undefined {
  const partial = plan.partial;
  const input = plan.inputs[0];
  if (!partial || !input) return undefined;
  const byName = new Map(shape.map((column) => [column.name, column]));
  if (!input.filters.every((filter) => filter.unqualified.every((name) => byName.has(name)))) return undefined;
  const grouped = [...partial.spec.keys, ...partial.spec.distinct];
  if (!grouped.every((name) => byName.has(name))) return undefined;
  const columns: Column[] = grouped.map((name) => byName.get(name)!);
  const targets: AstNode[] = grouped.map((name) => target(column(name), name));
  const combinations = new Map<string, string>();
  for (const aggregate of partial.spec.aggregates) {
    const source = aggregate.column === undefined ? undefined : byName.get(aggregate.column);
    if (aggregate.column !== undefined && source === undefined) return undefined;
    const combination = addPartial(aggregate, source, columns, targets);
    if (combination === undefined) return undefined;
    combinations.set(aggregate.key, combination);
  }
  const outer = outerSelect(partial.outer, combinations);
  // DISTINCT values beside partial aggregates: pairs and partials apart, so pairs can be deduplicated.
  const split = partial.spec.distinct.length > 0 && partial.spec.aggregates.length > 0 && partial.spec.nullIgnoringDistinct;
  const keyList = partial.spec.keys.map(quoteIdent).join(', ');
  if (split) targets.push(target(expression(`GROUPING(${partial.spec.distinct.map(quoteIdent).join(', ')})`), '__psr_gs'));
  const groupBy = split
    ? (nodeList(
        parseStatement(`SELECT GROUP BY GROUPING SETS ((${grouped.map(quoteIdent).join(', ')}), (${keyList}))`).body.groupClause,
      ) as AstNode[])
    : grouped.map(column);
  return {
    columns,
    targets,
    groupBy,
    ...(split ? { split: { pairWidth: grouped.length } } : {}),
    outerSql: deparse({ SelectStmt: outer }),
    outerCursorSql: deparse({ DeclareCursorStmt: { portalname: OUTER_CURSOR, options: 260, query: { SelectStmt: outer } } }),
  };
}

/** Adds the shard-side partial columns of one aggregate; returns its combination over them (SQL of our own names). */
function addPartial(aggregate: PartialAggregate, source: Column | undefined, columns: Column[], targets: AstNode[]): string | undefined {
  const name = (n: number) => `__psr_p${n}`;
  const add = (node: AstNode, type: string, collation: string | null = null) => {
    const partial = name(targets.length + 1);
    columns.push({ name: partial, type, collation, pk: false });
    targets.push(target(node, partial));
    return quoteIdent(partial);
  };
  const call = aggregate.call;
  switch (aggregate.kind) {
    case 'count':
      return `coalesce(sum(${add(call, 'bigint')}), 0)::int8`;
    case 'min':
    case 'max':
      return `${aggregate.kind}(${add(call, source!.type, source!.collation)})`;
    case 'sum': {
      const type = sumType(source!.type);
      if (type === undefined) return undefined;
      const partial = add(call, type);
      return INTEGERS.has(source!.type) ? `sum(${partial})::int8` : `sum(${partial})`;
    }
    case 'avg': {
      const type = sumType(source!.type);
      if (type === undefined) return undefined;
      // avg(float4) accumulates in float8, like avg's own transition function.
      const float = type === 'real' || type === 'double precision';
      const sum = add(renamed(call, 'sum', float), float ? 'double precision' : 'numeric');
      const count = add(renamed(call, 'count', false), 'bigint');
      // numeric_div(sum, count), which is int8_avg's and numeric_avg's final step; float8 sum / count for floats.
      return float ? `sum(${sum}) / nullif(sum(${count}), 0)::float8` : `sum(${sum}) / nullif(sum(${count}), 0)`;
    }
    default: {
      const never: never = aggregate.kind;
      throw new Error(`unknown partial aggregate ${String(never)}`);
    }
  }
}

function column(name: string): AstNode {
  return { ColumnRef: { fields: [{ String: { sval: name } }] } };
}

function target(val: AstNode, name: string): AstNode {
  return { ResTarget: { name, val } };
}

/** The call under another name, its argument cast to float8 if asked (FILTER kept). */
function renamed(call: Record<string, unknown>, name: string, toFloat8: boolean): AstNode {
  const body = call.FuncCall as AstBody;
  const args = nodeList(body.args);
  const cast = (arg: AstNode): AstNode => ({ TypeCast: { arg, typeName: { names: [{ String: { sval: 'float8' } }], typemod: -1 } } });
  return { FuncCall: { ...body, funcname: [{ String: { sval: name } }], args: toFloat8 ? args.map(cast) : args } };
}

/**
 * The outer statement: WHERE gone (the shards applied it), each partial aggregate replaced by its
 * combination, an unaliased select-list aggregate keeping its name (`count`, `avg`, ...), and a
 * no-op use of any parameter only the WHERE used, so the caller's parameters still bind.
 */
function outerSelect(original: Record<string, unknown>, combinations: ReadonlyMap<string, string>): AstBody {
  const outer = structuredClone(original) as AstBody;
  const before = paramsOf({ SelectStmt: outer });
  delete outer.whereClause;
  for (const item of nodeList(outer.targetList)) {
    const body = item.ResTarget as AstBody;
    const call = body.val as AstNode | undefined;
    if (body.name === undefined && call?.FuncCall && combinations.has(structuralKey(call))) {
      const funcname = nodeList((call.FuncCall as AstBody).funcname);
      body.name = ((funcname.at(-1)!.String as AstBody).sval as string | undefined) ?? '';
    }
  }
  const replaced = replace(outer, combinations) as AstBody;
  const kept = new Set(paramsOf({ SelectStmt: replaced }));
  const anchors = before.filter((number) => !kept.has(number)).map((number) => expression(`$${number}::text IS NULL OR true`));
  if (anchors.length > 0) replaced.whereClause = anchors.length === 1 ? anchors[0] : { BoolExpr: { boolop: 'AND_EXPR', args: anchors } };
  return replaced;
}

function replace(node: unknown, combinations: ReadonlyMap<string, string>): unknown {
  if (Array.isArray(node)) return node.map((item) => replace(item, combinations));
  if (node === null || typeof node !== 'object') return node;
  const record = node as Record<string, unknown>;
  if (record.FuncCall !== undefined) {
    const combination = combinations.get(structuralKey(record));
    if (combination !== undefined) return expression(combination);
  }
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, replace(value, combinations)]));
}

function expression(sql: string): AstNode {
  return (nodeList(parseStatement(`SELECT ${sql}`).body.targetList)[0]!.ResTarget as AstBody).val as AstNode;
}
