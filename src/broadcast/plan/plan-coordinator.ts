import { hasAggregate } from './aggregates.js';
import { partialSpec } from './plan-partial.js';
import { JOIN_ALIAS, pushedJoin } from './plan-pushed-join.js';
import { asKind, names, nodeBody, nodeKind, nodeList, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { CoordinatorFilter, CoordinatorInput, CoordinatorPlan, PlannerCatalog } from './plan.js';
import { deparse, parseStatement } from './sql-parser.js';
import { unsupported } from './unsupported.js';

/**
 * The coordinator step, for a SELECT the merge steps cannot answer exactly (windows, DISTINCT
 * aggregates, expressions over aggregates, joins, subqueries, CTEs, set operations, ...).
 *
 * Like Citus's recursive planning of a distributed table inside a query it cannot push down
 * (local_distributed_join_planner.c: the table becomes `SELECT needed columns FROM t WHERE its
 * own restrictions`, read into an intermediate result), every occurrence of a sharded table is
 * replaced by a temporary table on one shard, the coordinator, filled with what every shard's
 * inner query returns: the columns the query names, filtered by the WHERE conjuncts that read
 * only that table. The outer query is the statement itself, deparsed from its parse tree with
 * those tables swapped; reference tables stay as they are (the coordinator holds a full copy).
 * PostgreSQL then answers it: values, types, text forms and column names are one server's.
 */

const TEMP_PREFIX = '__psr_in';
/** The cursor a stream reads the outer query through. */
export const OUTER_CURSOR = '__psr_outer';

/** Functions whose value depends on the server (or the row) they run on: refused in WHERE and JOIN ... ON. */
const VOLATILE = new Set([
  'random',
  'random_normal',
  'setseed',
  'nextval',
  'setval',
  'currval',
  'lastval',
  'gen_random_uuid',
  'uuid_generate_v1',
  'uuid_generate_v4',
  'uuidv4',
  'uuidv7',
  'clock_timestamp',
  'timeofday',
  'txid_current',
  'pg_backend_pid',
  'inet_server_addr',
  'inet_server_port',
]);

/**
 * Refusals that hold whatever plan a SELECT would get: recursive CTEs (the recursion would need
 * every step's rows in one place) and volatile functions in a filter (each shard would draw its
 * own values).
 */
export function refuseUncoordinated(select: AstBody): void {
  const check = (clause: unknown) => {
    const volatile = volatileCall(clause);
    if (volatile) throw unsupported(`volatile function ${volatile}() in WHERE`, 'its value depends on the shard that runs it');
  };
  for (const level of selectLevels(select)) {
    if ((level.withClause as AstBody | undefined)?.recursive === true) throw unsupported('recursive CTE (WITH RECURSIVE)');
    check(level.whereClause);
    walk(level.fromClause, (kind, body) => {
      if (kind === 'JoinExpr') check(body.quals);
      return kind === 'RangeSubselect' ? false : undefined;
    });
  }
}

/** Every SELECT of the statement: subqueries, CTE bodies and the branches of set operations (bare bodies in the tree). */
export function selectLevels(select: AstBody): AstBody[] {
  const levels: AstBody[] = [];
  const add = (body: AstBody) => {
    levels.push(body);
    for (const branch of [body.larg, body.rarg]) if (branch) add(branch as AstBody);
    for (const [key, value] of Object.entries(body)) {
      if (key === 'larg' || key === 'rarg') continue;
      walk(key === 'withClause' ? nodeList((value as AstBody).ctes) : value, (kind, inner) => {
        if (kind !== 'SelectStmt') return undefined;
        add(inner);
        return false;
      });
    }
  };
  add(select);
  return levels;
}

function volatileCall(node: unknown): string | undefined {
  let found: string | undefined;
  walk(node, (kind, body) => {
    if (found) return false;
    if (kind === 'SubLink') return false; // a subquery's own WHERE is checked at its level
    if (kind === 'FuncCall') {
      const name = names(body.funcname).at(-1)!.toLowerCase();
      if (VOLATILE.has(name)) found = name;
    }
    return undefined;
  });
  return found;
}

/**
 * A write runs as it is on every shard (one 2PC). It is refused when a part of it reads rows of
 * a sharded table other than the shard's own rows being written: a subquery or CTE reading a
 * sharded table, UPDATE ... FROM / DELETE ... USING / MERGE ... USING a sharded table. Those
 * would need a coordinator step before the write, which broadcast does not do.
 */
export function refuseCoordinatedWrite(statement: AstBody, catalog: PlannerCatalog): void {
  const ctes = new Set<string>();
  const parts: unknown[] = [statement.fromClause, statement.usingClause, statement.sourceRelation];
  // A tagged wrapper: walk follows every field of a node, only the first of a bare body.
  walk({ Write: statement }, (kind, body) => {
    if (kind === 'CommonTableExpr') {
      ctes.add(body.ctename as string);
      parts.push(body.ctequery);
    }
    if (kind === 'SubLink') parts.push(body.subselect);
    return undefined;
  });
  const insertSelect = asKind(statement.selectStmt, 'SelectStmt');
  if (insertSelect && !perRow(insertSelect, catalog)) parts.push(statement.selectStmt);
  for (const part of parts) {
    if (part === undefined) continue;
    const tables = findTables({ SelectStmt: { fromClause: Array.isArray(part) ? part : [part] } }, ctes, catalog);
    const nested = nodeKind(part) === 'SelectStmt' ? findTables(part as AstNode, ctes, catalog) : [];
    if (tables.length > 0 || nested.length > 0) {
      throw unsupported(
        'write that needs a coordinator step',
        'it reads rows of a sharded table that other shards hold; read them first with broadcast, then write',
      );
    }
  }
}

/** A SELECT whose rows are each computed from one row of one table: a shard computes its own rows' share exactly. */
function perRow(select: AstBody, catalog: PlannerCatalog): boolean {
  let windowed = false;
  walk(select.targetList, (kind, body) => {
    if (kind === 'FuncCall' && body.over !== undefined) windowed = true;
  });
  return (
    (select.op === undefined || select.op === 'SETOP_NONE') &&
    nodeList(select.groupClause).length === 0 &&
    select.distinctClause === undefined &&
    select.limitCount === undefined &&
    select.limitOffset === undefined &&
    !windowed &&
    !hasAggregate([select.targetList, select.havingClause], catalog) &&
    nodeList(select.fromClause).length <= 1 &&
    nodeKind(nodeList(select.fromClause)[0]) !== 'JoinExpr'
  );
}

/** Plans the coordinator step of a SELECT (refuseUncoordinated has passed). */
export function planCoordinator(sql: string, select: AstBody, catalog: PlannerCatalog): CoordinatorPlan {
  if (select.intoClause !== undefined)
    throw unsupported('SELECT INTO', 'it creates a table; use CREATE TABLE ... AS through broadcast instead');
  const joined = pushedJoinPlan(sql, select, catalog);
  if (joined) return { ...joined, joinFallback: planTables(sql, parseStatement(sql).body, catalog) };
  return planTables(sql, select, catalog);
}

/** Each sharded table pulled up on its own (its needed columns, its own filters). */
function planTables(sql: string, select: AstBody, catalog: PlannerCatalog): CoordinatorPlan {
  const found = findTables({ SelectStmt: select }, cteNames(select), catalog);
  const everything = referencedNames(select);
  const inputs = found.map((table, i): CoordinatorInput => {
    const relation = structuredClone(table.relation);
    const alias = ((relation.alias as AstBody | undefined)?.aliasname as string | undefined) ?? (relation.relname as string);
    const whole =
      table.whole ||
      everything.stars ||
      everything.wholeRows.has(alias) ||
      nodeList((relation.alias as AstBody | undefined)?.colnames).length > 0;
    const guard = catalog.movesGuard?.(relation.schemaname as string | undefined, relation.relname as string, 1);
    return {
      schema: relation.schemaname as string | undefined,
      table: relation.relname as string,
      tempTable: `${TEMP_PREFIX}${i + 1}`,
      relation,
      names: whole ? undefined : [...everything.names],
      filters: table.nullable ? [] : pushableFilters(table.level, table.relation, alias),
      guard: guard === undefined ? undefined : (parseStatement(`SELECT WHERE ${guard}`).body.whereClause as AstNode),
    };
  });
  if (nodeList(select.lockingClause).length > 0)
    throw unsupported('SELECT ... FOR UPDATE/SHARE', 'rows read by a coordinator step cannot be locked');
  const spec = partialFor(select, inputs, found, catalog);
  // The outer query: the same tree, every sharded table swapped for its temporary table.
  found.forEach((table, i) => {
    const alias = (table.relation.alias as AstBody | undefined) ?? { aliasname: table.relation.relname };
    for (const key of Object.keys(table.relation)) delete table.relation[key];
    Object.assign(table.relation, { schemaname: 'pg_temp', relname: inputs[i]!.tempTable, inh: true, relpersistence: 'p', alias });
  });
  return {
    kind: 'coordinator',
    sql,
    inputs,
    grouped: selectLevels(select).some((level) => nodeList(level.groupClause).length > 0),
    ...(spec ? { partial: { spec, outer: structuredClone(select) } } : {}),
    outerSql: deparse({ SelectStmt: select }),
    // CURSOR_OPT_NO_SCROLL (0x4) | CURSOR_OPT_FAST_PLAN (0x100): what PostgreSQL's parser gives `NO SCROLL CURSOR`.
    outerCursorSql: deparse({ DeclareCursorStmt: { portalname: OUTER_CURSOR, options: 260, query: { SelectStmt: select } } }),
  };
}

/** The coordinator plan over one pushed-down join (plan-pushed-join.ts), or undefined when the statement does not qualify. */
function pushedJoinPlan(sql: string, select: AstBody, catalog: PlannerCatalog): CoordinatorPlan | undefined {
  const tempTable = `${TEMP_PREFIX}1`;
  const join = pushedJoin(select, catalog, tempTable);
  if (!join) return undefined;
  const input: CoordinatorInput = {
    join,
    schema: undefined,
    table: JOIN_ALIAS,
    tempTable,
    relation: {},
    names: undefined,
    filters: [],
    guard: undefined,
  };
  const spec = partialSpec(select, JOIN_ALIAS, catalog);
  return {
    kind: 'coordinator',
    sql,
    inputs: [input],
    grouped: nodeList(select.groupClause).length > 0,
    ...(spec ? { partial: { spec, outer: structuredClone(select) } } : {}),
    outerSql: deparse({ SelectStmt: select }),
    outerCursorSql: deparse({ DeclareCursorStmt: { portalname: OUTER_CURSOR, options: 260, query: { SelectStmt: select } } }),
  };
}

/** Partial aggregation applies to a SELECT over one sharded table whose whole WHERE the shards can apply. */
function partialFor(select: AstBody, inputs: readonly CoordinatorInput[], found: readonly FoundTable[], catalog: PlannerCatalog) {
  const first = inputs[0];
  if (inputs.length !== 1 || found[0]!.level !== select || first === undefined) return undefined;
  if (first.filters.length !== conjuncts(select.whereClause as AstNode | undefined).length) return undefined;
  const alias = ((first.relation.alias as AstBody | undefined)?.aliasname as string | undefined) ?? first.table;
  return partialSpec(select, alias, catalog);
}

interface FoundTable {
  /** The RangeVar's body in the statement's tree (swapped in place for the outer query). */
  readonly relation: AstBody;
  /** The SELECT whose FROM holds it. */
  readonly level: AstBody;
  /** On the nullable side of an outer join: its WHERE conjuncts cannot be applied before the join. */
  readonly nullable: boolean;
  /** NATURAL join: every column may be read. */
  readonly whole: boolean;
}

/** Every sharded table of the statement (not a CTE name, reference table or system catalog), in tree order. */
function findTables(root: AstNode, ctes: ReadonlySet<string>, catalog: PlannerCatalog): FoundTable[] {
  const found: FoundTable[] = [];
  const level = (body: AstBody): void => {
    for (const item of nodeList(body.fromClause)) fromItem(item, body, false, false);
    for (const [key, value] of Object.entries(body)) {
      if (key === 'larg' || key === 'rarg') level(value as AstBody);
      else if (key === 'withClause') visit(nodeList((value as AstBody).ctes));
      else if (key !== 'fromClause') visit(value);
    }
  };
  const visit = (node: unknown): void =>
    walk(node, (kind, body) => {
      if (kind !== 'SelectStmt') return undefined;
      level(body);
      return false;
    });
  const fromItem = (item: AstNode, level: AstBody, nullable: boolean, natural: boolean): void => {
    const kind = nodeKind(item);
    const body = nodeBody(item);
    if (kind === 'RangeVar') {
      if (isShardedTable(body, ctes, catalog)) found.push({ relation: body, level, nullable, whole: natural });
    } else if (kind === 'JoinExpr') {
      const type = body.jointype as string | undefined;
      const isNatural = body.isNatural === true;
      fromItem(body.larg as AstNode, level, nullable || type === 'JOIN_RIGHT' || type === 'JOIN_FULL', isNatural);
      fromItem(body.rarg as AstNode, level, nullable || type === 'JOIN_LEFT' || type === 'JOIN_FULL', isNatural);
      visit(body.quals);
    } else {
      visit(item); // subquery in FROM, function, VALUES
    }
  };
  level(nodeBody(root));
  return found;
}

function isShardedTable(relation: AstBody, ctes: ReadonlySet<string>, catalog: PlannerCatalog): boolean {
  const schema = relation.schemaname as string | undefined;
  const name = relation.relname as string;
  if (schema === undefined && ctes.has(name)) return false;
  if (schema === 'pg_catalog' || schema === 'information_schema' || (schema === undefined && name.startsWith('pg_'))) return false;
  return catalog.isReferenceTable?.(schema, name) !== true;
}

function cteNames(select: AstBody): Set<string> {
  const ctes = new Set<string>();
  walk({ SelectStmt: select }, (kind, body) => {
    if (kind === 'CommonTableExpr') ctes.add(body.ctename as string);
  });
  return ctes;
}

/** Column names any ColumnRef uses (the last field), `*`, and single names that may be whole-row references. */
function referencedNames(select: AstBody): { names: Set<string>; wholeRows: Set<string>; stars: boolean } {
  const found = { names: new Set<string>(), wholeRows: new Set<string>(), stars: false };
  walk({ SelectStmt: select }, (kind, body) => {
    if (kind === 'ColumnRef') {
      const fields = names(body.fields);
      const last = fields.at(-1)!;
      if (last === '*') {
        if (fields.length === 1) found.stars = true;
        else found.wholeRows.add(fields.at(-2)!);
      } else {
        found.names.add(last);
        if (fields.length === 1) found.wholeRows.add(last);
      }
    }
    if (kind === 'JoinExpr') for (const name of names(body.usingClause)) found.names.add(name);
    return undefined;
  });
  return found;
}

/**
 * The WHERE conjuncts of the table's own SELECT that read only this table: qualified by its
 * alias, or unqualified when it is the level's only FROM item (then pushed only if each name is
 * one of its columns, checked at run time: otherwise it is an outer query's column).
 */
function pushableFilters(level: AstBody, relation: AstBody, alias: string): CoordinatorFilter[] {
  const from = nodeList(level.fromClause);
  const alone = from.length === 1 && asKind(from[0], 'RangeVar') === relation;
  return conjuncts(level.whereClause as AstNode | undefined).flatMap((node): CoordinatorFilter[] => {
    const unqualified = new Set<string>();
    let pushable = true;
    walk(node, (kind, body) => {
      if (kind === 'SubLink' || kind === 'A_Star' || (kind === 'FuncCall' && body.over !== undefined)) pushable = false;
      if (kind === 'ColumnRef') {
        const fields = names(body.fields);
        if (fields.length === 1 && alone && fields[0] !== '*') unqualified.add(fields[0]!);
        else if (fields.length !== 2 || fields[0] !== alias || fields[1] === '*') pushable = false;
      }
      return pushable ? undefined : false;
    });
    return pushable ? [{ node: structuredClone(node), unqualified: [...unqualified] }] : [];
  });
}

function conjuncts(node: AstNode | undefined): AstNode[] {
  if (node === undefined) return [];
  const bool = asKind(node, 'BoolExpr');
  if (bool && bool.boolop === 'AND_EXPR') return nodeList(bool.args).flatMap(conjuncts);
  return [node];
}

/** A copy of `node` with its $n parameters renumbered by `renumber` (old number -> new). */
export function renumberParams(node: AstNode, renumber: (number: number) => number): AstNode {
  const copy = structuredClone(node);
  walk(copy, (kind, body) => {
    if (kind === 'ParamRef') body.number = renumber((body.number as number | undefined) ?? 0);
  });
  return copy;
}

/** The $n numbers a node uses, ascending. */
export function paramsOf(node: unknown): number[] {
  const numbers = new Set<number>();
  walk(node, (kind, body) => {
    if (kind === 'ParamRef') numbers.add((body.number as number | undefined) ?? 0);
  });
  return [...numbers].sort((a, b) => a - b);
}
