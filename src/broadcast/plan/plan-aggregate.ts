import { aggregateRole, hasAggregate, renamedCall, roleOf } from './aggregates.js';
import { asKind, integerConstant, nodeKind, nodeList, structuralKey } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import { havingCondition } from './plan-having.js';
import type { ColumnRef, ColumnRole, PlannerCatalog, SelectPlan } from './plan.js';
import { HiddenColumns, readCount, selectPlan } from './shard-query.js';
import { deparse } from './sql-parser.js';
import { ambiguousGroupAlias, matchTarget, sortKeys } from './targets.js';
import type { Target } from './targets.js';
import { unsupported } from './unsupported.js';

/**
 * The rewrite of an aggregate query (GROUP BY or aggregates): each shard computes partial
 * aggregates per group, the router combines them. The shard query loses HAVING, ORDER BY, LIMIT,
 * OFFSET and DISTINCT (a LIMIT below a GROUP BY would cut groups short); what the merge needs
 * from them becomes helper columns. `groupByAlias` reads an ambiguous `GROUP BY name` as the
 * select-list alias rather than a table column.
 */
export function planAggregate(
  sql: string,
  select: AstBody,
  targets: readonly Target[],
  distinct: boolean,
  catalog: PlannerCatalog,
  groupByAlias: boolean,
  float8Averages: ReadonlySet<string> = new Set(),
): SelectPlan {
  if (targets.some((target) => target.star)) throw unsupported('* in an aggregate query', 'list the grouped columns');
  const rewrite = new AggregateRewrite(targets, catalog, float8Averages);
  const shardTargets = targets.map((target, position) => rewrite.selectTarget(target, position));
  rewrite.groupBy(nodeList(select.groupClause), groupByAlias);
  const ungrouped = nodeList(select.groupClause).every((item) => nodeKind(item) === 'GroupingSet');
  const having =
    select.havingClause === undefined ? undefined : havingCondition(select.havingClause as AstNode, (node) => rewrite.havingColumn(node));
  const sort = sortKeys(select, (node) => rewrite.sortColumn(node));

  const shardSelect: AstBody = { ...select, targetList: [...shardTargets, ...rewrite.hidden.resTargets()] };
  for (const clause of ['havingClause', 'sortClause', 'limitCount', 'limitOffset', 'distinctClause'] as const) delete shardSelect[clause];
  shardSelect.limitOption = 'LIMIT_OPTION_DEFAULT';
  const limit = readCount(select.limitCount, 'LIMIT');
  const offset = readCount(select.limitOffset, 'OFFSET');
  return selectPlan(sql, select, shardSelect, rewrite.hidden, catalog, {
    aggregate: { visibleRoles: rewrite.visibleRoles, hiddenRoles: rewrite.hidden.roles, ungrouped },
    having,
    distinct,
    sort,
    limit,
    offset,
  });
}

/**
 * The state of one aggregate rewrite: the merge role of each select-list column, the helper
 * columns, and the aggregates already computed (by structure), so HAVING and ORDER BY reuse them.
 * Helper columns are numbered in the order the steps add them: select list, GROUP BY, HAVING, ORDER BY.
 */
class AggregateRewrite {
  readonly hidden = new HiddenColumns();
  readonly visibleRoles: ColumnRole[] = [];
  readonly #aggregates = new Map<string, ColumnRef>();
  readonly #targets: readonly Target[];
  readonly #catalog: PlannerCatalog;
  readonly #float8Averages: ReadonlySet<string>;

  constructor(targets: readonly Target[], catalog: PlannerCatalog, float8Averages: ReadonlySet<string>) {
    this.#targets = targets;
    this.#catalog = catalog;
    this.#float8Averages = float8Averages;
  }

  /** The shard-side sum of an avg: `sum(x::float8)` where the shards said x is float4 (avg(float4) sums in float8). */
  #averageSum(call: AstBody, column: string): AstNode {
    if (!this.#float8Averages.has(column)) return renamedCall(call, 'sum');
    const [argument, ...rest] = nodeList(call.args);
    const cast = { TypeCast: { arg: argument, typeName: { names: [{ String: { sval: 'float8' } }], typemod: -1 } } };
    return { FuncCall: { ...call, funcname: [{ String: { sval: 'sum' } }], args: [cast, ...rest] } };
  }

  /** The shard's select-list entry for a target (avg(x) becomes sum(x) plus a helper count(x)), recording its merge role. */
  selectTarget(target: Target, position: number): AstNode {
    const value = target.original;
    const call = asKind(value, 'FuncCall');
    const role = call ? aggregateRole(call, this.#catalog) : undefined;
    if (call && role) {
      this.#aggregates.set(target.key, { kind: 'visible', position });
      if (role === 'avg') {
        const count = this.hidden.add(renamedCall(call, 'count'), { kind: 'avg_count' });
        this.visibleRoles.push({ kind: 'avg', count });
        // The shard computes sum(x) under avg's output name, so field names stay the server's.
        return {
          ResTarget: { name: target.outputName ?? 'avg', val: this.#averageSum(call, averageColumnKey({ kind: 'visible', position })) },
        };
      }
      this.visibleRoles.push(roleOf(role, call));
      return unchanged(target);
    }
    if (hasAggregate(value, this.#catalog)) throw unsupported('expression over an aggregate', deparse(value!));
    this.visibleRoles.push({ kind: 'value' });
    return unchanged(target);
  }

  /** GROUP BY: each item is a visible key column (by position, alias or expression) or a helper. */
  groupBy(items: readonly AstNode[], groupByAlias: boolean): void {
    for (const item of items) {
      if (nodeKind(item) === 'GroupingSet') continue; // GROUP BY () adds no key
      const target = this.#groupTarget(item, groupByAlias);
      if (target !== undefined && target >= 0 && target < this.#targets.length && this.visibleRoles[target]!.kind === 'value') {
        this.visibleRoles[target] = { kind: 'key' };
      } else if (target === undefined) {
        this.hidden.add(item, { kind: 'key' });
      }
    }
  }

  /** The column a HAVING operand (other than a literal or parameter) reads. */
  havingColumn(node: AstNode): ColumnRef {
    return this.#computedColumn(node, 'HAVING');
  }

  /** The column an ORDER BY item sorts by: an output column by position or name, else an aggregate or group value. */
  sortColumn(node: AstNode): ColumnRef {
    const position = integerConstant(node);
    if (position !== undefined) return { kind: 'visible', position: position - 1 };
    const target = matchTarget(node, this.#targets, 'order');
    if (target !== undefined) return { kind: 'visible', position: target };
    return this.#computedColumn(node, 'ORDER BY');
  }

  #groupTarget(item: AstNode, groupByAlias: boolean): number | undefined {
    const position = integerConstant(item);
    if (position !== undefined) return position - 1;
    if (!groupByAlias && ambiguousGroupAlias(item, this.#targets)) return undefined;
    return matchTarget(item, this.#targets, 'group');
  }

  /** An aggregate call's column, or a group-determined expression's; UNSUPPORTED for an expression over an aggregate. */
  #computedColumn(node: AstNode, clause: 'HAVING' | 'ORDER BY'): ColumnRef {
    const call = asKind(node, 'FuncCall');
    if (call && aggregateRole(call, this.#catalog)) return this.#aggregateRef(node);
    if (hasAggregate(node, this.#catalog)) throw unsupported('expression over an aggregate', `in ${clause}: ${deparse(node)}`);
    return this.#groupValueRef(node);
  }

  /** The column of an aggregate call: the select list's, or a helper (two for avg). */
  #aggregateRef(node: AstNode): ColumnRef {
    const key = structuralKey(node);
    const existing = this.#aggregates.get(key);
    if (existing) return existing;
    const call = asKind(node, 'FuncCall')!;
    const role = aggregateRole(call, this.#catalog)!;
    let ref: ColumnRef;
    if (role === 'avg') {
      const count = this.hidden.add(renamedCall(call, 'count'), { kind: 'avg_count' });
      const sum = this.#averageSum(call, averageColumnKey({ kind: 'hidden', index: this.hidden.nodes.length }));
      ref = this.hidden.add(sum, { kind: 'avg', count });
    } else {
      ref = this.hidden.add(node, roleOf(role, call));
    }
    this.#aggregates.set(key, ref);
    return ref;
  }

  /** A group-determined expression the merge needs: a visible column if the select list has it. */
  #groupValueRef(node: AstNode): ColumnRef {
    const target = matchTarget(node, this.#targets, 'expression');
    if (target !== undefined && this.visibleRoles[target]!.kind !== 'avg') return { kind: 'visible', position: target };
    return this.hidden.add(node, { kind: 'value' });
  }
}

/** A select-list entry sent to the shards as written. */
function unchanged(target: Target): AstNode {
  return { ResTarget: { ...(target.name !== undefined ? { name: target.name } : {}), val: target.original } };
}

/** How a re-plan names an avg's sum column: `v<position>` or `h<index>` (the same in every plan of one SQL text). */
export function averageColumnKey(ref: ColumnRef): string {
  return ref.kind === 'visible' ? `v${ref.position}` : `h${ref.index}`;
}
