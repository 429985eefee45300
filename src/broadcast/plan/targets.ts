import { asKind, names, nodeBody, nodeList, quotedName, structuralKey } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { ColumnRef, SortKey } from './plan.js';
import { deparse } from './sql-parser.js';

/** The select list, and how GROUP BY, HAVING and ORDER BY items refer to its entries. */

/** A target in the select list, before and after the rewrite. */
export interface Target {
  readonly original: AstNode | undefined;
  readonly name: string | undefined;
  /** The output column name PostgreSQL gives it (alias, or column/function name). */
  readonly outputName: string | undefined;
  readonly key: string;
  readonly star: boolean;
}

/** The select list's entries. */
export function readTargets(select: AstBody): Target[] {
  return nodeList(select.targetList).map((item): Target => {
    const target = nodeBody(item);
    const value = target.val as AstNode | undefined;
    const star = asKind(value, 'ColumnRef') !== undefined && names(nodeBody(value).fields).at(-1) === '*';
    return {
      original: value,
      name: target.name as string | undefined,
      outputName: (target.name as string | undefined) ?? implicitName(value),
      key: structuralKey(value),
      star,
    };
  });
}

/**
 * The select-list entry an expression refers to. ORDER BY prefers output names (PostgreSQL
 * does too); GROUP BY and HAVING match expressions, and aliases only as GROUP BY shorthand.
 */
export function matchTarget(node: AstNode, targets: readonly Target[], context: 'group' | 'order' | 'expression'): number | undefined {
  const column = asKind(node, 'ColumnRef');
  const columnNames = column ? names(column.fields) : [];
  if (context !== 'expression' && columnNames.length === 1) {
    const byName = targets.findIndex((target) => (context === 'order' ? target.outputName : target.name) === columnNames[0]);
    if (byName >= 0) return byName;
  }
  const key = structuralKey(node);
  const byExpression = targets.findIndex((target) => !target.star && target.key === key);
  return byExpression >= 0 ? byExpression : undefined;
}

/** A bare GROUP BY name that is the alias of a select-list entry computing something else. */
export function ambiguousGroupAlias(item: AstNode, targets: readonly Target[]): boolean {
  const column = asKind(item, 'ColumnRef');
  const columnNames = column ? names(column.fields) : [];
  if (columnNames.length !== 1) return false;
  const key = structuralKey(item);
  return targets.some((target) => target.name === columnNames[0] && target.key !== key);
}

/** The ORDER BY items as sort keys, each item's expression resolved to a shard column by `resolve`. */
export function sortKeys(select: AstBody, resolve: (node: AstNode) => ColumnRef): SortKey[] {
  return nodeList(select.sortClause).map((item) => {
    const sortBy = nodeBody(item);
    let node = sortBy.node as AstNode;
    let collation: string | undefined;
    const collate = asKind(node, 'CollateClause');
    if (collate) {
      collation = quotedName(collate.collname);
      node = collate.arg as AstNode;
    }
    const descending = sortBy.sortby_dir === 'SORTBY_DESC';
    const nulls = sortBy.sortby_nulls as string | undefined;
    // PostgreSQL's default: NULLs sort as if larger than every value.
    const nullsFirst = nulls === 'SORTBY_NULLS_FIRST' || (nulls !== 'SORTBY_NULLS_LAST' && descending);
    return { column: resolve(node), descending, nullsFirst, collation, text: deparse({ SortBy: sortBy }) };
  });
}

/** The column name PostgreSQL gives an unaliased select-list entry, where it is simple to know. */
function implicitName(node: AstNode | undefined): string | undefined {
  const column = asKind(node, 'ColumnRef');
  if (column) {
    const last = names(column.fields).at(-1);
    return last === '*' ? undefined : last;
  }
  const call = asKind(node, 'FuncCall');
  if (call) return names(call.funcname).at(-1);
  return undefined;
}
