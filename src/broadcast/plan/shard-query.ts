import { asKind, integerConstant, isNullConstant, nodeList, structuralKey, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { ColumnRef, ColumnRole, Count, PlannerCatalog, SelectPlan } from './plan.js';
import { pushdownJoin } from './join-pushdown.js';
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
  const from = nodeList(original.fromClause);
  const joined = from.length > 1 || (from.length === 1 && !asKind(from[0], 'RangeVar')) ? pushdownJoin(original, catalog) : undefined;
  return {
    kind: 'select',
    sql,
    shardSql: deparse({ SelectStmt: shardSelect }),
    mapVersionParam,
    hidden: hidden.nodes.map((node) => deparse(node)),
    ...merge,
    ...(joined
      ? {
          pushedJoin: {
            sharded: joined.sharded.map((table) => `${table.qualifier}.${table.key}`),
            references: joined.references,
            keys: joined.sharded.map((table) => ({
              schema: table.relation.schemaname as string | undefined,
              table: table.relation.relname as string,
              column: table.key,
            })),
          },
        }
      : {}),
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
 * Adds the moves guard of the FROM table (a registered sharded table), or of every sharded table
 * of a pushed-down join (each on its own qualified key), to the shard query's WHERE, with the
 * map version as a parameter after the statement's own. Returns that parameter's number, or
 * undefined when no table needs a guard. Added after every check, so the guard's own subqueries
 * are not mistaken for the user's.
 */
function guardMoves(original: AstBody, shard: AstBody, catalog: PlannerCatalog): number | undefined {
  const from = nodeList(original.fromClause);
  const single = from.length === 1 ? asKind(from[0], 'RangeVar') : undefined;
  if (from.length === 0 || !catalog.movesGuard) return undefined;
  let highest = 0;
  walk({ SelectStmt: original }, (kind, body) => {
    if (kind === 'ParamRef') highest = Math.max(highest, (body.number as number | undefined) ?? 0);
  });
  const versionParam = highest + 1;
  const tables = single
    ? [{ relation: single, qualifier: undefined }]
    : pushdownJoin(original, catalog).sharded.map((table) => ({ relation: table.relation, qualifier: table.qualifier }));
  const guards = tables.flatMap(({ relation, qualifier }) => {
    const condition = catalog.movesGuard!(relation.schemaname as string | undefined, relation.relname as string, versionParam, qualifier);
    return condition === undefined ? [] : [parseStatement(`SELECT WHERE ${condition}`).body.whereClause as AstNode];
  });
  if (guards.length === 0) return undefined;
  const conditions = shard.whereClause === undefined ? guards : [shard.whereClause as AstNode, ...guards];
  shard.whereClause = conditions.length === 1 ? conditions[0] : { BoolExpr: { boolop: 'AND_EXPR', args: conditions } };
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
