import { asKind, integerConstant, isNullConstant, nodeList, structuralKey, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { ColumnRef, ColumnRole, Count, PlannerCatalog, SelectPlan } from './plan.js';
import { deparse, parseStatement } from './sql-parser.js';
import { unsupported } from './unsupported.js';

/** The statement every shard runs: helper columns, parameters kept bound, the moves guard, LIMIT/OFFSET. */

export const HIDDEN_COLUMN_PREFIX = '__psr_h';

/** Builder for the helper columns appended to the shard query. */
export class HiddenColumns {
  readonly nodes: AstNode[] = [];
  readonly roles: ColumnRole[] = [];
  readonly #byKey = new Map<string, number>();

  add(node: AstNode, role: ColumnRole): ColumnRef {
    const key = `${role.kind}:${structuralKey(node)}`;
    let index = this.#byKey.get(key);
    if (index === undefined) {
      index = this.nodes.length;
      this.nodes.push(node);
      this.roles.push(role);
      this.#byKey.set(key, index);
    }
    return { kind: 'hidden', index };
  }

  /** Replaces the role of a helper column (avg's sum learns where its count went). */
  setRole(ref: ColumnRef, role: ColumnRole): void {
    if (ref.kind === 'hidden') this.roles[ref.index] = role;
  }

  resTargets(): AstNode[] {
    return this.nodes.map((node, i) => ({ ResTarget: { name: `${HIDDEN_COLUMN_PREFIX}${i + 1}`, val: node } }));
  }
}

/** What the merge does with a SELECT plan's shard rows. */
export type MergeSteps = Pick<SelectPlan, 'aggregate' | 'having' | 'distinct' | 'sort' | 'limit' | 'offset'>;

/** The select plan of a rewritten shard SELECT: its parameters kept bound, reads guarded against moves. */
export function selectPlan(
  sql: string,
  original: AstBody,
  shardSelect: AstBody,
  hidden: HiddenColumns,
  catalog: PlannerCatalog,
  merge: MergeSteps,
): SelectPlan {
  keepParameters(original, shardSelect);
  const mapVersionParam = guardMoves(original, shardSelect, catalog);
  return {
    kind: 'select',
    sql,
    shardSql: deparse({ SelectStmt: shardSelect }),
    mapVersionParam,
    hidden: hidden.nodes.map((node) => deparse(node)),
    ...merge,
  };
}

/** A LIMIT or OFFSET clause: a constant or a $n parameter. */
export function readCount(node: unknown, clause: 'LIMIT' | 'OFFSET'): Count | undefined {
  if (node === undefined || isNullConstant(node)) return undefined;
  const constant = integerConstant(node);
  if (constant !== undefined) return { kind: 'constant', value: constant };
  const param = asKind(node, 'ParamRef');
  if (param) return { kind: 'param', index: ((param.number as number | undefined) ?? 1) - 1 };
  throw unsupported(`${clause} expression`, `${clause} takes a constant or a $n parameter in a broadcast`);
}

/**
 * PostgreSQL wants a value for every $n up to the highest one referenced, and infers each one's
 * type from its use. When the rewrite drops a clause holding $n (HAVING, LIMIT), the shard
 * query gets a no-op `($n::text IS NULL OR true)` in WHERE, so the same params array still binds.
 */
function keepParameters(original: AstBody, shard: AstBody): void {
  const referenced = (node: unknown) => {
    const numbers = new Set<number>();
    walk(node, (kind, body) => {
      if (kind === 'ParamRef') numbers.add((body.number as number | undefined) ?? 0);
    });
    return numbers;
  };
  const kept = referenced({ SelectStmt: shard });
  const dropped = [...referenced({ SelectStmt: original })].filter((number) => !kept.has(number)).sort((a, b) => a - b);
  if (dropped.length === 0) return;
  const anchors: AstNode[] = dropped.map((number) => ({
    BoolExpr: {
      boolop: 'OR_EXPR',
      args: [
        {
          NullTest: {
            arg: { TypeCast: { arg: { ParamRef: { number } }, typeName: { names: [{ String: { sval: 'text' } }], typemod: -1 } } },
            nulltesttype: 'IS_NULL',
          },
        },
        { A_Const: { boolval: { boolval: true } } },
      ],
    },
  }));
  const conditions = shard.whereClause === undefined ? anchors : [shard.whereClause as AstNode, ...anchors];
  shard.whereClause = conditions.length === 1 ? conditions[0] : { BoolExpr: { boolop: 'AND_EXPR', args: conditions } };
}

/**
 * Adds the moves guard of the FROM table (a registered sharded table) to the shard query's
 * WHERE, with the map version as a parameter after the statement's own. Returns that
 * parameter's number, or undefined when the table needs no guard. Added after every check, so
 * the guard's own subqueries are not mistaken for the user's.
 */
function guardMoves(original: AstBody, shard: AstBody, catalog: PlannerCatalog): number | undefined {
  const relation = asKind(nodeList(original.fromClause)[0], 'RangeVar');
  if (!relation || !catalog.movesGuard) return undefined;
  let highest = 0;
  walk({ SelectStmt: original }, (kind, body) => {
    if (kind === 'ParamRef') highest = Math.max(highest, (body.number as number | undefined) ?? 0);
  });
  const versionParam = highest + 1;
  const condition = catalog.movesGuard(relation.schemaname as string | undefined, relation.relname as string, versionParam);
  if (condition === undefined) return undefined;
  const guard = parseStatement(`SELECT WHERE ${condition}`).body.whereClause as AstNode;
  shard.whereClause =
    shard.whereClause === undefined ? guard : { BoolExpr: { boolop: 'AND_EXPR', args: [shard.whereClause as AstNode, guard] } };
  return versionParam;
}

/** LIMIT limit+offset for the shards: a constant when both are, else `limit + offset` for PostgreSQL to add. */
export function addCounts(limitNode: AstNode, offsetNode: AstNode, limit: Count, offset: Count): AstNode {
  if (limit.kind === 'constant' && offset.kind === 'constant') return { A_Const: { ival: { ival: limit.value + offset.value } } };
  // LIMIT's own parameter would be inferred as bigint; inside `+` it must be told.
  const asBigint = (node: AstNode): AstNode =>
    asKind(node, 'ParamRef') ? { TypeCast: { arg: node, typeName: { names: [{ String: { sval: 'int8' } }], typemod: -1 } } } : node;
  return { A_Expr: { kind: 'AEXPR_OP', name: [{ String: { sval: '+' } }], lexpr: asBigint(limitNode), rexpr: asBigint(offsetNode) } };
}
