import { ShardRouterError } from '../../errors.js';
import { asKind, integerConstant, isNullConstant, names, nodeBody, nodeKind, nodeList, structuralKey, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { BroadcastPlan, ColumnRef, ColumnRole, ComparisonOperator, Condition, Count, Operand, SelectPlan, SortKey } from './plan.js';
import { deparse, parseStatement } from './sql-parser.js';

/**
 * Turns one SQL statement into a broadcast plan (see plan.ts), or refuses with UNSUPPORTED
 * naming the construct whose result cannot be merged exactly across shards.
 *
 * The rewrite, for a SELECT over one sharded table:
 * - aggregates become partial aggregates the router can combine exactly: count/sum/min/max/
 *   bool_and/bool_or as they are, avg(x) as sum(x) plus a helper count(x);
 * - GROUP BY, HAVING and ORDER BY expressions the merge needs but the select list lacks are
 *   appended as helper columns (`__psr_hN`), dropped before the rows are returned;
 * - aggregate queries lose HAVING, ORDER BY, LIMIT and OFFSET on the shards (a LIMIT below a
 *   GROUP BY would cut groups short); plain queries keep ORDER BY and get LIMIT limit+offset,
 *   and the router skips the offset after a k-way merge.
 */

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

const COMPARISON_OPERATORS = new Set<string>(['=', '<>', '!=', '<', '<=', '>', '>=']);

export const HIDDEN_COLUMN_PREFIX = '__psr_h';

/** What the planner needs to know about the shards' functions. */
export interface PlannerCatalog {
  /** Whether a function name (unqualified, lower case) is an aggregate or window function on the shards. */
  isAggregate(name: string): boolean;
  /** Whether a table (schema as written, or undefined) is a registered reference table: a full copy on every shard. */
  isReferenceTable?(schema: string | undefined, name: string): boolean;
  /**
   * For a registered sharded table, the condition that makes a shard read only the buckets it
   * owns in the map version the broadcast routes by, given as parameter `$versionParam` (see
   * movesGuardCondition); undefined for any other table.
   */
  movesGuard?(schema: string | undefined, name: string, versionParam: number): string | undefined;
}

/** True when the statement reads only reference tables (at least one): any one shard answers it whole. */
function readsOnlyReferenceTables(select: AstBody, catalog: PlannerCatalog): boolean {
  if (!catalog.isReferenceTable) return false;
  let tables = 0;
  let others = 0;
  walk([select], (kind, body) => {
    if (kind !== 'RangeVar') return;
    tables++;
    if (!catalog.isReferenceTable!(body.schemaname as string | undefined, body.relname as string)) others++;
  });
  return tables > 0 && others === 0;
}

function unsupported(construct: string, detail = ''): ShardRouterError {
  return new ShardRouterError(
    'UNSUPPORTED',
    `broadcast cannot merge ${construct} exactly across shards${detail ? `: ${detail}` : ''}. ` +
      'Run it per shard with executeOn, or rewrite it with the supported subset (see docs/broadcast.md)',
  );
}

function notAtomic(statement: string): ShardRouterError {
  return new ShardRouterError(
    'UNSUPPORTED',
    `broadcast cannot run ${statement} on every shard atomically: it cannot run inside a transaction block. Run it per shard with executeOn`,
  );
}

/**
 * Plans one statement.
 * @throws ShardRouterError INVALID_SQL, UNSUPPORTED
 */
export function planBroadcast(sql: string, catalog: PlannerCatalog): BroadcastPlan {
  const statement = parseStatement(sql);
  switch (statement.kind) {
    case 'SelectStmt':
      return planSelect(sql, statement.body, catalog);
    case 'TransactionStmt':
      throw unsupported('transaction control', 'broadcast writes already run as one atomic two-phase commit');
    case 'VacuumStmt':
    case 'CreatedbStmt':
    case 'DropdbStmt':
    case 'AlterSystemStmt':
    case 'ReindexStmt':
      throw notAtomic(statement.kind);
    case 'IndexStmt':
      if (statement.body.concurrent === true) throw notAtomic('CREATE INDEX CONCURRENTLY');
      return { kind: 'write', sql, statement: statement.kind };
    case 'InsertStmt':
      if (isReferenceInsert(statement.body, catalog)) return { kind: 'write', sql, statement: statement.kind };
      if (statement.body.selectStmt !== undefined && nodeList(nodeBody(statement.body.selectStmt).valuesLists).length > 0) {
        throw unsupported('INSERT ... VALUES', 'a broadcast would write the same row on every shard; insert through execute(key)');
      }
      return { kind: 'write', sql, statement: statement.kind };
    default:
      return { kind: 'write', sql, statement: statement.kind };
  }
}

/** INSERT into a reference table: the same rows belong on every shard. */
function isReferenceInsert(insert: AstBody, catalog: PlannerCatalog): boolean {
  // The relation is a bare RangeVar body (the field's type is fixed), not a tagged node.
  const raw = insert.relation as AstBody | undefined;
  const relation = raw && typeof raw.relname === 'string' ? raw : asKind(raw, 'RangeVar');
  return relation !== undefined && catalog.isReferenceTable?.(relation.schemaname as string | undefined, relation.relname as string) === true;
}

/** A target in the select list, before and after the rewrite. */
interface Target {
  readonly original: AstNode | undefined;
  readonly name: string | undefined;
  /** The output column name PostgreSQL gives it (alias, or column/function name). */
  readonly outputName: string | undefined;
  readonly key: string;
  readonly star: boolean;
}

function planSelect(sql: string, select: AstBody, catalog: PlannerCatalog): BroadcastPlan {
  const op = select.op as string | undefined;
  if (op !== undefined && op !== 'SETOP_NONE') throw unsupported(op.replace('SETOP_', ''));
  if (select.withClause !== undefined) throw unsupported('WITH (common table expressions)');
  if (select.intoClause !== undefined) throw unsupported('SELECT INTO', 'it creates a table; use CREATE TABLE ... AS through broadcast instead');
  if (nodeList(select.windowClause).length > 0) throw unsupported('window function', 'WINDOW clause');
  if (select.limitOption === 'LIMIT_OPTION_WITH_TIES') throw unsupported('FETCH ... WITH TIES');
  if (nodeList(select.valuesLists).length > 0) return { kind: 'single', sql };
  if (readsOnlyReferenceTables(select, catalog)) return { kind: 'single', sql };
  const from = nodeList(select.fromClause);
  if (from.length === 0) return { kind: 'single', sql };
  if (from.length > 1) throw unsupported('join', 'several tables in FROM (a join of sharded tables spans shards)');
  const fromKind = nodeKind(from[0]);
  if (fromKind === 'JoinExpr') throw unsupported('join', 'a join of sharded tables spans shards');
  if (fromKind === 'RangeSubselect') throw unsupported('subquery', 'subquery in FROM');
  if (fromKind !== 'RangeVar') throw unsupported(`${fromKind ?? 'this'} in FROM`);

  const distinctClause = select.distinctClause === undefined ? [] : nodeList(select.distinctClause);
  const distinctOn = distinctClause.some((item) => nodeKind(item) !== undefined);
  if (distinctOn) throw unsupported('DISTINCT ON');
  const distinct = distinctClause.length > 0;

  const everything = [select.targetList, select.whereClause, select.groupClause, select.havingClause, select.sortClause];
  walk(everything, (kind, body) => {
    if (kind === 'SubLink') throw unsupported('subquery', 'subqueries may read other shards\' data');
    if (kind === 'GroupingSet') {
      const groupingKind = body.kind as string;
      if (groupingKind === 'GROUPING_SET_ROLLUP') throw unsupported('ROLLUP');
      if (groupingKind === 'GROUPING_SET_CUBE') throw unsupported('CUBE');
      if (groupingKind !== 'GROUPING_SET_EMPTY') throw unsupported('GROUPING SETS');
    }
    if (kind === 'FuncCall' && body.over !== undefined) throw unsupported(`window function ${functionName(body)}()`);
    if (kind === 'SortBy' && nodeList(body.useOp).length > 0) throw unsupported('ORDER BY ... USING');
    return undefined;
  });
  if (nodeList(select.groupClause).some((item) => nodeKind(item) === 'GroupingSet')) throw unsupported('GROUPING SETS', '()');

  const targets = nodeList(select.targetList).map((item): Target => {
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

  const containsAggregate = (node: unknown) => hasAggregate(node, catalog);
  const aggregateQuery =
    nodeList(select.groupClause).length > 0 ||
    targets.some((target) => containsAggregate(target.original)) ||
    containsAggregate(select.havingClause) ||
    containsAggregate(select.sortClause);

  if (!aggregateQuery) return planConcatenation(sql, select, targets, distinct, catalog);
  // GROUP BY name, where name is also another entry's alias: PostgreSQL takes the table's
  // column if there is one, else the alias. Only the shards know, so plan the column reading
  // and keep the alias reading for when they answer "column does not exist".
  const ambiguous = nodeList(select.groupClause).some((item) => ambiguousGroupAlias(item, targets));
  const plan = planAggregate(sql, select, targets, distinct, catalog, false);
  return ambiguous ? { ...plan, ifColumnMissing: planAggregate(sql, select, targets, distinct, catalog, true) } : plan;
}

/** Builder for the helper columns appended to the shard query. */
class HiddenColumns {
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

/** A bare GROUP BY name that is the alias of a select-list entry computing something else. */
function ambiguousGroupAlias(item: AstNode, targets: readonly Target[]): boolean {
  const column = asKind(item, 'ColumnRef');
  const columnNames = column ? names(column.fields) : [];
  if (columnNames.length !== 1) return false;
  const key = structuralKey(item);
  return targets.some((target) => target.name === columnNames[0] && target.key !== key);
}

function planAggregate(
  sql: string,
  select: AstBody,
  targets: readonly Target[],
  distinct: boolean,
  catalog: PlannerCatalog,
  groupByAlias: boolean,
): SelectPlan {
  if (targets.some((target) => target.star)) throw unsupported('* in an aggregate query', 'list the grouped columns');
  const hidden = new HiddenColumns();
  const visibleRoles: ColumnRole[] = [];
  const shardTargets: AstNode[] = [];

  // Aggregates already in the select list, by structure, so HAVING and ORDER BY reuse them.
  const aggregateColumns = new Map<string, ColumnRef>();
  targets.forEach((target, position) => {
    const value = target.original;
    const call = asKind(value, 'FuncCall');
    const role = call ? aggregateRole(call, catalog) : undefined;
    if (call && role) {
      const ref: ColumnRef = { kind: 'visible', position };
      aggregateColumns.set(target.key, ref);
      if (role === 'avg') {
        const count = hidden.add(renamedCall(call, 'count'), { kind: 'avg_count' });
        visibleRoles.push({ kind: 'avg', count });
        // The shard computes sum(x) under avg's output name, so field names stay the server's.
        shardTargets.push({ ResTarget: { name: target.outputName ?? 'avg', val: renamedCall(call, 'sum') } });
      } else {
        visibleRoles.push(roleOf(role, call));
        shardTargets.push({ ResTarget: { ...(target.name !== undefined ? { name: target.name } : {}), val: value } });
      }
      return;
    }
    if (hasAggregate(value, catalog)) throw unsupported('expression over an aggregate', deparse(value!));
    visibleRoles.push({ kind: 'value' });
    shardTargets.push({ ResTarget: { ...(target.name !== undefined ? { name: target.name } : {}), val: value } });
  });

  const aggregateRef = (node: AstNode): ColumnRef => {
    const key = structuralKey(node);
    const existing = aggregateColumns.get(key);
    if (existing) return existing;
    const call = asKind(node, 'FuncCall')!;
    const role = aggregateRole(call, catalog)!;
    let ref: ColumnRef;
    if (role === 'avg') {
      const count = hidden.add(renamedCall(call, 'count'), { kind: 'avg_count' });
      ref = hidden.add(renamedCall(call, 'sum'), { kind: 'avg', count });
    } else {
      ref = hidden.add(node, roleOf(role, call));
    }
    aggregateColumns.set(key, ref);
    return ref;
  };

  // GROUP BY: each item is a visible key column (by position, alias or expression) or a helper.
  for (const item of nodeList(select.groupClause)) {
    if (nodeKind(item) === 'GroupingSet') continue; // GROUP BY () adds no key
    const position = integerConstant(item);
    let target: number | undefined;
    if (position !== undefined) target = position - 1;
    else if (!groupByAlias && ambiguousGroupAlias(item, targets)) target = undefined;
    else target = matchTarget(item, targets, 'group');
    if (target !== undefined && target >= 0 && target < targets.length && visibleRoles[target]!.kind === 'value') {
      visibleRoles[target] = { kind: 'key' };
    } else if (target === undefined) {
      hidden.add(item, { kind: 'key' });
    }
  }
  const ungrouped = nodeList(select.groupClause).every((item) => nodeKind(item) === 'GroupingSet');

  // A group-determined expression the merge needs: a visible column if the select list has it.
  const groupValueRef = (node: AstNode): ColumnRef => {
    const target = matchTarget(node, targets, 'expression');
    if (target !== undefined && visibleRoles[target]!.kind !== 'avg') return { kind: 'visible', position: target };
    return hidden.add(node, { kind: 'value' });
  };

  const operand = (node: AstNode): Operand => {
    const literal = literalOperand(node);
    if (literal) return literal;
    const param = asKind(node, 'ParamRef');
    if (param) return { kind: 'param', index: ((param.number as number | undefined) ?? 1) - 1 };
    const call = asKind(node, 'FuncCall');
    if (call && aggregateRole(call, catalog)) return { kind: 'column', column: aggregateRef(node) };
    if (hasAggregate(node, catalog)) throw unsupported('expression over an aggregate', `in HAVING: ${deparse(node)}`);
    return { kind: 'column', column: groupValueRef(node) };
  };
  const having = select.havingClause === undefined ? undefined : toCondition(select.havingClause as AstNode, operand);

  const sort = sortKeys(select, (node) => {
    const position = integerConstant(node);
    if (position !== undefined) return { kind: 'visible', position: position - 1 };
    const target = matchTarget(node, targets, 'order');
    if (target !== undefined) return { kind: 'visible', position: target };
    const call = asKind(node, 'FuncCall');
    if (call && aggregateRole(call, catalog)) return aggregateRef(node);
    if (hasAggregate(node, catalog)) throw unsupported('expression over an aggregate', `in ORDER BY: ${deparse(node)}`);
    return groupValueRef(node);
  });

  const shardSelect: AstBody = { ...select, targetList: [...shardTargets, ...hidden.resTargets()] };
  for (const clause of ['havingClause', 'sortClause', 'limitCount', 'limitOffset', 'distinctClause'] as const) delete shardSelect[clause];
  shardSelect.limitOption = 'LIMIT_OPTION_DEFAULT';
  keepParameters(select, shardSelect);
  const mapVersionParam = guardMoves(select, shardSelect, catalog);
  return {
    kind: 'select',
    sql,
    shardSql: deparse({ SelectStmt: shardSelect }),
    mapVersionParam,
    hidden: hidden.nodes.map((node) => deparse(node)),
    aggregate: { visibleRoles, hiddenRoles: hidden.roles, ungrouped },
    having,
    distinct,
    sort,
    limit: count(select.limitCount, 'LIMIT'),
    offset: count(select.limitOffset, 'OFFSET'),
  };
}

function planConcatenation(sql: string, select: AstBody, targets: readonly Target[], distinct: boolean, catalog: PlannerCatalog): SelectPlan {
  const hidden = new HiddenColumns();
  // A target's output position is known only while no * (of unknown width) precedes it.
  const firstStar = targets.findIndex((target) => target.star);
  const knownWidth = firstStar === -1 ? targets.length : firstStar;
  const sort = sortKeys(select, (node) => {
    const position = integerConstant(node);
    if (position !== undefined) return { kind: 'visible', position: position - 1 };
    const target = matchTarget(node, targets, 'order');
    if (target !== undefined && target < knownWidth) return { kind: 'visible', position: target };
    // ORDER BY an alias behind a *: sort by the aliased expression itself.
    return hidden.add(target !== undefined ? targets[target]!.original! : node, { kind: 'value' });
  });
  const limit = count(select.limitCount, 'LIMIT');
  const offset = count(select.limitOffset, 'OFFSET');
  const shardSelect: AstBody = { ...select, targetList: [...nodeList(select.targetList), ...hidden.resTargets()] };
  delete shardSelect.limitOffset;
  if (limit) {
    // Each shard returns its first limit+offset rows; the merged first limit+offset contain the answer.
    shardSelect.limitCount = offset ? addCounts(select.limitCount as AstNode, select.limitOffset as AstNode, limit, offset) : select.limitCount;
  }
  keepParameters(select, shardSelect);
  const mapVersionParam = guardMoves(select, shardSelect, catalog);
  return {
    kind: 'select',
    sql,
    shardSql: deparse({ SelectStmt: shardSelect }),
    mapVersionParam,
    hidden: hidden.nodes.map((node) => deparse(node)),
    aggregate: undefined,
    having: undefined,
    distinct,
    sort,
    limit,
    offset,
  };
}

function sortKeys(select: AstBody, resolve: (node: AstNode) => ColumnRef): SortKey[] {
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

/**
 * The select-list entry an expression refers to. ORDER BY prefers output names (PostgreSQL
 * does too); GROUP BY and HAVING match expressions, and aliases only as GROUP BY shorthand.
 */
function matchTarget(node: AstNode, targets: readonly Target[], context: 'group' | 'order' | 'expression'): number | undefined {
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

function toCondition(node: AstNode, operand: (node: AstNode) => Operand): Condition {
  const bool = asKind(node, 'BoolExpr');
  if (bool) {
    const args = nodeList(bool.args).map((arg) => toCondition(arg, operand));
    if (bool.boolop === 'NOT_EXPR') return { kind: 'not', arg: args[0]! };
    return { kind: bool.boolop === 'OR_EXPR' ? 'or' : 'and', args };
  }
  const expression = asKind(node, 'A_Expr');
  if (expression) {
    const kind = expression.kind as string;
    const operator = names(expression.name).join('.');
    if (kind === 'AEXPR_OP' && COMPARISON_OPERATORS.has(operator)) {
      const op = (operator === '!=' ? '<>' : operator) as ComparisonOperator;
      return { kind: 'compare', op, left: operand(expression.lexpr as AstNode), right: operand(expression.rexpr as AstNode) };
    }
    if (kind === 'AEXPR_BETWEEN' || kind === 'AEXPR_NOT_BETWEEN') {
      const [low, high] = nodeList(nodeBody(expression.rexpr).items);
      return {
        kind: 'between',
        negated: kind === 'AEXPR_NOT_BETWEEN',
        arg: operand(expression.lexpr as AstNode),
        low: operand(low!),
        high: operand(high!),
      };
    }
  }
  const nullTest = asKind(node, 'NullTest');
  if (nullTest) return { kind: 'is_null', negated: nullTest.nulltesttype === 'IS_NOT_NULL', arg: operand(nullTest.arg as AstNode) };
  const value = operand(node);
  if (value.kind === 'literal' && value.type !== 'boolean' && value.type !== 'null') {
    throw unsupported('HAVING condition', deparse(node));
  }
  return { kind: 'truth', arg: value };
}

function literalOperand(node: AstNode): Operand | undefined {
  const constant = asKind(node, 'A_Const');
  if (!constant) return undefined;
  if (constant.isnull === true) return { kind: 'literal', text: null, type: 'null' };
  if ('ival' in constant) return { kind: 'literal', text: String((constant.ival as { ival?: number }).ival ?? 0), type: 'number' };
  if ('fval' in constant) return { kind: 'literal', text: (constant.fval as { fval?: string }).fval ?? '0', type: 'number' };
  if ('boolval' in constant) return { kind: 'literal', text: (constant.boolval as { boolval?: boolean }).boolval ? 't' : 'f', type: 'boolean' };
  if ('sval' in constant) return { kind: 'literal', text: (constant.sval as { sval?: string }).sval ?? '', type: 'string' };
  return undefined;
}

function count(node: unknown, clause: 'LIMIT' | 'OFFSET'): Count | undefined {
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
  shard.whereClause = shard.whereClause === undefined ? guard : { BoolExpr: { boolop: 'AND_EXPR', args: [shard.whereClause as AstNode, guard] } };
  return versionParam;
}

/** LIMIT limit+offset for the shards: a constant when both are, else `limit + offset` for PostgreSQL to add. */
function addCounts(limitNode: AstNode, offsetNode: AstNode, limit: Count, offset: Count): AstNode {
  if (limit.kind === 'constant' && offset.kind === 'constant') return { A_Const: { ival: { ival: limit.value + offset.value } } };
  // LIMIT's own parameter would be inferred as bigint; inside `+` it must be told.
  const asBigint = (node: AstNode): AstNode =>
    asKind(node, 'ParamRef') ? { TypeCast: { arg: node, typeName: { names: [{ String: { sval: 'int8' } }], typemod: -1 } } } : node;
  return { A_Expr: { kind: 'AEXPR_OP', name: [{ String: { sval: '+' } }], lexpr: asBigint(limitNode), rexpr: asBigint(offsetNode) } };
}

function functionName(call: AstBody): string {
  return names(call.funcname).at(-1)!.toLowerCase();
}

/** The merge role of an aggregate call, undefined for an ordinary function; UNSUPPORTED for aggregates that cannot merge. */
function aggregateRole(call: AstBody, catalog: PlannerCatalog): Exclude<ColumnRole['kind'], 'key' | 'value' | 'avg_count'> | undefined {
  const qualified = names(call.funcname);
  const name = functionName(call);
  const builtin = qualified.length === 1 || qualified[0] === 'pg_catalog';
  const role = builtin ? MERGEABLE_AGGREGATES[name] : undefined;
  const isAggregate = role !== undefined || call.agg_within_group === true || call.agg_star === true || catalog.isAggregate(name);
  if (!isAggregate) return undefined;
  if (call.agg_distinct === true) throw unsupported(`${name}(DISTINCT ...)`, 'distinct values may repeat across shards');
  if (call.agg_within_group === true) throw unsupported(`aggregate ${name}() WITHIN GROUP`, 'an ordered-set aggregate needs all rows in one place');
  if (role === undefined) throw unsupported(`aggregate ${name}()`, 'only count, sum, min, max, avg, bool_and, bool_or and every merge exactly');
  if (nodeList(call.agg_order).length > 0) throw unsupported(`aggregate ${name}(... ORDER BY ...)`);
  return role as Exclude<ColumnRole['kind'], 'key' | 'value' | 'avg_count'>;
}

function hasAggregate(node: unknown, catalog: PlannerCatalog): boolean {
  let found = false;
  walk(node, (kind, body) => {
    if (found) return false;
    if (kind === 'FuncCall' && body.over === undefined) {
      const qualified = names(body.funcname);
      const name = qualified.at(-1)!.toLowerCase();
      const builtin = qualified.length === 1 || qualified[0] === 'pg_catalog';
      if ((builtin && name in MERGEABLE_AGGREGATES) || body.agg_within_group === true || body.agg_star === true || catalog.isAggregate(name)) {
        found = true;
        return false;
      }
    }
    return undefined;
  });
  return found;
}

/** The merge role of a mergeable aggregate call; min/max remember an explicit COLLATE on their argument. */
function roleOf(kind: Exclude<ColumnRole['kind'], 'key' | 'value' | 'avg_count' | 'avg'>, call: AstBody): ColumnRole {
  if (kind !== 'min' && kind !== 'max') return { kind };
  const collate = asKind(nodeList(call.args)[0], 'CollateClause');
  return collate ? { kind, collation: quotedName(collate.collname) } : { kind };
}

function quotedName(list: unknown): string {
  return names(list)
    .map((part) => `"${part.replaceAll('"', '""')}"`)
    .join('.');
}

/** The same aggregate call under another name (avg(x) FILTER (...) -> sum(x) FILTER (...)). */
function renamedCall(call: AstBody, name: string): AstNode {
  return { FuncCall: { ...call, funcname: [{ String: { sval: name } }] } };
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
