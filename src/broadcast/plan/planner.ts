import { ShardRouterError } from '../../errors.js';
import { functionName, hasAggregate } from './aggregates.js';
import { collationProbe } from './collation-probe.js';
import { asKind, integerConstant, nodeBody, nodeKind, nodeList, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import { pushdownJoin } from './join-pushdown.js';
import { planAggregate } from './plan-aggregate.js';
import type { BroadcastPlan, PlannerCatalog, SelectPlan } from './plan.js';
import { addCounts, HiddenColumns, readCount, selectPlan } from './shard-query.js';
import { planCoordinator, refuseCoordinatedWrite, refuseUncoordinated } from './plan-coordinator.js';
import { parseStatement } from './sql-parser.js';
import { ambiguousGroupAlias, matchTarget, readTargets, sortKeys } from './targets.js';
import type { Target } from './targets.js';
import { unsupported } from './unsupported.js';

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
 *
 * Files: targets.ts (the select list), aggregates.ts (which calls aggregate and how they merge),
 * plan-aggregate.ts (the aggregate rewrite), plan-having.ts (HAVING as a Condition),
 * shard-query.ts (helper columns, parameters, the moves guard, LIMIT/OFFSET).
 */

/** True when the statement reads only reference tables (at least one): any one shard answers it whole. */
function readsOnlyReferenceTables(select: AstBody, catalog: PlannerCatalog): boolean {
  if (!catalog.isReferenceTable) return false;
  let tables = 0;
  let others = 0;
  // The statement as a node: walk() descends into a node's fields, not into a bare body's.
  walk([{ SelectStmt: select }], (kind, body) => {
    if (kind !== 'RangeVar') return;
    tables++;
    if (!catalog.isReferenceTable!(body.schemaname as string | undefined, body.relname as string)) others++;
  });
  return tables > 0 && others === 0;
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
export function planBroadcast(sql: string, catalog: PlannerCatalog, options: PlanOptions = {}): BroadcastPlan {
  const statement = parseStatement(sql);
  switch (statement.kind) {
    case 'SelectStmt':
      return planSelect(sql, statement.body, catalog, options);
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
      refuseCoordinatedWrite(statement.body, catalog);
      if (isReferenceInsert(statement.body, catalog)) return { kind: 'write', sql, statement: statement.kind };
      if (statement.body.selectStmt !== undefined && nodeList(nodeBody(statement.body.selectStmt).valuesLists).length > 0) {
        throw unsupported('INSERT ... VALUES', 'a broadcast would write the same row on every shard; insert through execute(key)');
      }
      return { kind: 'write', sql, statement: statement.kind };
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      refuseCoordinatedWrite(statement.body, catalog);
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
  return (
    relation !== undefined && catalog.isReferenceTable?.(relation.schemaname as string | undefined, relation.relname as string) === true
  );
}

/** Choices a re-plan makes from what the shards answered the first time. */
export interface PlanOptions {
  /** avg columns (averageColumnKey) whose argument the shards reported as float4: summed as float8 on the shards. */
  readonly float8Averages?: ReadonlySet<string>;
}

/**
 * A SELECT: the merge steps when they answer it exactly (they are the fastest), else the
 * coordinator step; one shard when it reads no sharded table.
 */
function planSelect(sql: string, select: AstBody, catalog: PlannerCatalog, options: PlanOptions): BroadcastPlan {
  refuseUncoordinated(select);
  if (select.intoClause !== undefined)
    throw unsupported('SELECT INTO', 'it creates a table; use CREATE TABLE ... AS through broadcast instead');
  if (readsOnlyReferenceTables(select, catalog)) return { kind: 'single', sql };
  try {
    const merged = planMerge(sql, select, catalog, options);
    if (merged.kind !== 'select' || !merged.pushedJoin) return merged;
    // If the equated keys' types turn out not to hash equal values alike: the coordinator step.
    const fallback = planCoordinator(sql, parseStatement(sql).body, catalog);
    return { ...merged, pushedJoin: { ...merged.pushedJoin, fallback } };
  } catch (error) {
    if (!(error instanceof ShardRouterError) || error.code !== 'UNSUPPORTED') throw error;
    // The merge rewrite may have touched the tree: plan the coordinator step from a fresh parse.
    const coordinator = planCoordinator(sql, parseStatement(sql).body, catalog);
    return coordinator.inputs.length === 0 ? { kind: 'single', sql } : coordinator;
  }
}

/** The plan of the merge steps, or UNSUPPORTED naming what they cannot merge. */
function planMerge(sql: string, select: AstBody, catalog: PlannerCatalog, options: PlanOptions): BroadcastPlan {
  refuseStatementForm(select);
  const from = nodeList(select.fromClause);
  if (from.length === 0 || nodeList(select.valuesLists).length > 0) {
    // No table at the top: one shard answers, unless a subquery reads a sharded table.
    refuseUnmergeableParts(select);
    return { kind: 'single', sql };
  }
  requireShardLocalFrom(select, from, catalog);
  const distinct = readDistinct(select);
  refuseUnmergeableParts(select);
  const targets = readTargets(select);
  if (!isAggregateQuery(select, targets, catalog))
    return probed(planConcatenation(sql, select, targets, distinct, catalog), select, targets, catalog);
  // GROUP BY name, where name is also another entry's alias: PostgreSQL takes the table's
  // column if there is one, else the alias. Only the shards know, so plan the column reading
  // and keep the alias reading for when they answer "column does not exist".
  const ambiguous = nodeList(select.groupClause).some((item) => ambiguousGroupAlias(item, targets));
  const plan = probed(planAggregate(sql, select, targets, distinct, catalog, false, options.float8Averages), select, targets, catalog);
  if (!ambiguous) return plan;
  const byAlias = planAggregate(sql, select, targets, distinct, catalog, true, options.float8Averages);
  return { ...plan, ifColumnMissing: probed(byAlias, select, targets, catalog) };
}

/** The plan with its collation probe, if it orders anything that could be text. */
function probed(plan: SelectPlan, select: AstBody, targets: readonly Target[], catalog: PlannerCatalog): SelectPlan {
  const probe = collationProbe(select, targets, plan, catalog);
  return probe ? { ...plan, collationProbe: probe } : plan;
}

/** Set operations, WITH, SELECT INTO, WINDOW and WITH TIES: refused whatever the query reads. */
function refuseStatementForm(select: AstBody): void {
  const op = select.op as string | undefined;
  if (op !== undefined && op !== 'SETOP_NONE') throw unsupported(op.replace('SETOP_', ''));
  if (select.withClause !== undefined) throw unsupported('WITH (common table expressions)');
  if (select.intoClause !== undefined)
    throw unsupported('SELECT INTO', 'it creates a table; use CREATE TABLE ... AS through broadcast instead');
  if (nodeList(select.windowClause).length > 0) throw unsupported('window function', 'WINDOW clause');
  if (select.limitOption === 'LIMIT_OPTION_WITH_TIES') throw unsupported('FETCH ... WITH TIES');
}

/** A SELECT over sharded data reads one table, or a join each shard answers whole for its own rows (join-pushdown.ts). */
function requireShardLocalFrom(select: AstBody, from: readonly AstNode[], catalog: PlannerCatalog): void {
  const fromKind = nodeKind(from[0]);
  if (from.length === 1 && fromKind === 'RangeVar') return;
  if (from.length === 1 && fromKind === 'RangeSubselect') throw unsupported('subquery', 'subquery in FROM');
  pushdownJoin(select, catalog);
}

/** Whether the query is SELECT DISTINCT; DISTINCT ON is refused. */
function readDistinct(select: AstBody): boolean {
  const distinctClause = select.distinctClause === undefined ? [] : nodeList(select.distinctClause);
  const distinctOn = distinctClause.some((item) => nodeKind(item) !== undefined);
  if (distinctOn) throw unsupported('DISTINCT ON');
  return distinctClause.length > 0;
}

/** Subqueries, grouping sets, window functions and ORDER BY ... USING anywhere in the query. */
function refuseUnmergeableParts(select: AstBody): void {
  const everything = [select.targetList, select.whereClause, select.groupClause, select.havingClause, select.sortClause];
  walk(everything, (kind, body) => {
    if (kind === 'SubLink') throw unsupported('subquery', "subqueries may read other shards' data");
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
}

/** GROUP BY, or an aggregate in the select list, HAVING or ORDER BY. */
function isAggregateQuery(select: AstBody, targets: readonly Target[], catalog: PlannerCatalog): boolean {
  const containsAggregate = (node: unknown) => hasAggregate(node, catalog);
  return (
    nodeList(select.groupClause).length > 0 ||
    targets.some((target) => containsAggregate(target.original)) ||
    containsAggregate(select.havingClause) ||
    containsAggregate(select.sortClause)
  );
}

/** A query without aggregates: the shards' rows concatenated, or k-way merged under ORDER BY. */
function planConcatenation(
  sql: string,
  select: AstBody,
  targets: readonly Target[],
  distinct: boolean,
  catalog: PlannerCatalog,
): SelectPlan {
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
  const limit = readCount(select.limitCount, 'LIMIT');
  const offset = readCount(select.limitOffset, 'OFFSET');
  const shardSelect: AstBody = { ...select, targetList: [...nodeList(select.targetList), ...hidden.resTargets()] };
  delete shardSelect.limitOffset;
  if (limit) {
    // Each shard returns its first limit+offset rows; the merged first limit+offset contain the answer.
    shardSelect.limitCount = offset
      ? addCounts(select.limitCount as AstNode, select.limitOffset as AstNode, limit, offset)
      : select.limitCount;
  }
  return selectPlan(sql, select, shardSelect, hidden, catalog, { aggregate: undefined, having: undefined, distinct, sort, limit, offset });
}
