import { hasAggregate } from './aggregates.js';
import { asKind, names, nodeList, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import { pushdownJoin } from './join-pushdown.js';
import type { CoordinatorJoin, PlannerCatalog } from './plan.js';
import { paramsOf } from './plan-coordinator.js';
import { parseStatement } from './sql-parser.js';
import { ShardRouterError } from '../../errors.js';

/**
 * A co-located (or reference) join inside a query that needs the coordinator step: instead of
 * pulling every table's rows up and joining them on the coordinator, each shard runs the join
 * itself (exact for the reasons join-pushdown.ts gives) with the whole WHERE, and sends only the
 * columns the rest of the query names; the coordinator holds them in one temporary table, aliased
 * JOIN_ALIAS, and runs the rest (GROUP BY, DISTINCT aggregates, windows, HAVING, ORDER BY, ...).
 *
 * Taken only where the rewrite is plainly exact, else the per-table pull-up runs as before:
 * - the top-level SELECT (no set operation, no WITH, no subquery anywhere in it, no locking,
 *   no parameter in its FROM);
 * - its FROM has two or more tables and join-pushdown accepts it;
 * - every column reference outside WHERE is `table.column` of a FROM table or an unqualified
 *   name that is no table's alias and no output column's alias (an output name in ORDER BY is
 *   left to the outer query), no `*`, and the needed columns have distinct names (they become
 *   the temporary table's columns, so every output column keeps its name);
 * - under GROUP BY, every column reference outside an aggregate is a GROUP BY column as written
 *   (a column functionally dependent on a table's primary key would lose that key).
 * During moves every sharded table of the join carries its own moves guard (owned buckets).
 */

/** What the outer query calls the temporary table that holds the join's rows. */
export const JOIN_ALIAS = '__psr_join';

/** The pushed join of `select` (its tree rewritten for the outer query), or undefined when the shape does not qualify. */
export function pushedJoin(select: AstBody, catalog: PlannerCatalog, tempTable: string): CoordinatorJoin | undefined {
  if (!qualifiesAtTop(select)) return undefined;
  let sharded: ReturnType<typeof pushdownJoin>['sharded'];
  try {
    sharded = pushdownJoin(select, catalog).sharded;
  } catch (error) {
    if (error instanceof ShardRouterError && error.code === 'UNSUPPORTED') return undefined;
    throw error;
  }
  const qualifiers = fromQualifiers(select);
  if (sharded.length === 0 || qualifiers.size < 2) return undefined;
  const refs = columnRefs(select);
  if (refs === undefined || !groupedRefsOk(select, catalog)) return undefined;
  const outputNames = outputAliases(select);
  const orderNames = orderByOutputNames(select, outputNames);
  const needed = new Map<string, string | undefined>();
  for (const { ref, fields } of refs) {
    if (orderNames.has(ref)) continue;
    const [qualifier, column] = fields.length === 2 ? fields : [undefined, fields[0]!];
    if (qualifier === undefined ? qualifiers.has(column) || outputNames.explicit.has(column) : !qualifiers.has(qualifier)) return undefined;
    if (needed.has(column) && needed.get(column) !== qualifier) return undefined;
    needed.set(column, qualifier);
  }
  const targets = [...needed].map(([column, qualifier]) => ({
    name: column,
    value: { ColumnRef: { fields: (qualifier === undefined ? [column] : [qualifier, column]).map((sval) => ({ String: { sval } })) } },
  }));
  const guards = sharded.flatMap((table) => {
    const condition = catalog.movesGuard?.(
      table.relation.schemaname as string | undefined,
      table.relation.relname as string,
      1,
      table.qualifier,
    );
    return condition === undefined ? [] : [parseStatement(`SELECT WHERE ${condition}`).body.whereClause as AstNode];
  });
  const join: CoordinatorJoin = {
    from: structuredClone(nodeList(select.fromClause)),
    where: select.whereClause === undefined ? undefined : structuredClone(select.whereClause as AstNode),
    targets,
    guards,
    keys: sharded.map((table) => ({
      schema: table.relation.schemaname as string | undefined,
      table: table.relation.relname as string,
      column: table.key,
    })),
    tables: sharded.map((table) => (table.relation.schemaname ? `${table.relation.schemaname}.` : '') + (table.relation.relname as string)),
  };
  rewriteOuter(select, refs, orderNames, tempTable);
  return join;
}

function qualifiesAtTop(select: AstBody): boolean {
  if ((select.op !== undefined && select.op !== 'SETOP_NONE') || select.withClause !== undefined) return false;
  if (nodeList(select.lockingClause).length > 0 || nodeList(select.fromClause).length === 0) return false;
  // A parameter in JOIN ... ON: the coordinator reads the join's column types without the values.
  if (paramsOf(select.fromClause).length > 0) return false;
  let plain = true;
  walk({ SelectStmt: select }, (kind, body) => {
    if (kind === 'SubLink' || kind === 'RangeSubselect' || kind === 'RangeFunction' || (kind === 'SelectStmt' && body !== select))
      plain = false;
    return plain ? undefined : false;
  });
  return plain;
}

/** The names FROM's tables are qualified by (alias, else table name). */
function fromQualifiers(select: AstBody): Set<string> {
  const found = new Set<string>();
  walk(select.fromClause, (kind, body) => {
    if (kind === 'RangeVar') found.add(((body.alias as AstBody | undefined)?.aliasname as string | undefined) ?? (body.relname as string));
  });
  return found;
}

interface Ref {
  readonly ref: AstBody;
  readonly fields: string[];
}

/** Every ColumnRef outside WHERE and FROM (those run on the shards), or undefined when one is a star or longer than table.column. */
function columnRefs(select: AstBody): Ref[] | undefined {
  const refs: Ref[] = [];
  let ok = true;
  for (const [key, value] of Object.entries(select)) {
    if (key === 'whereClause' || key === 'fromClause') continue;
    walk(value, (kind, body) => {
      if (kind !== 'ColumnRef') return undefined;
      const fields = names(body.fields);
      if (fields.length > 2 || fields.length === 0 || fields.includes('*') || nodeList(body.fields).some((f) => asKind(f, 'A_Star')))
        ok = false;
      else refs.push({ ref: body, fields });
      return undefined;
    });
  }
  return ok ? refs : undefined;
}

function outputAliases(select: AstBody): { explicit: Set<string>; all: Set<string> } {
  const explicit = new Set<string>();
  const all = new Set<string>();
  for (const item of nodeList(select.targetList)) {
    const target = asKind(item, 'ResTarget')!;
    const name = target.name as string | undefined;
    if (name !== undefined) {
      explicit.add(name);
      all.add(name);
    } else {
      const ref = asKind(target.val, 'ColumnRef');
      if (ref) all.add(names(ref.fields).at(-1)!);
    }
  }
  return { explicit, all };
}

/** ORDER BY items that are a bare output column name: PostgreSQL reads them as the output column, so the outer query keeps them as written. */
function orderByOutputNames(select: AstBody, outputs: { all: Set<string> }): Set<AstBody> {
  const found = new Set<AstBody>();
  for (const item of nodeList(select.sortClause)) {
    const ref = asKind(asKind(item, 'SortBy')?.node, 'ColumnRef');
    const fields = ref ? names(ref.fields) : [];
    if (ref && fields.length === 1 && outputs.all.has(fields[0]!)) found.add(ref);
  }
  return found;
}

/** Under GROUP BY: every ColumnRef outside aggregates (targets, HAVING, ORDER BY) is a GROUP BY ColumnRef as written. */
function groupedRefsOk(select: AstBody, catalog: PlannerCatalog): boolean {
  const groups = nodeList(select.groupClause);
  if (groups.length === 0) return true;
  const grouped = new Set(
    groups.flatMap((item) => (asKind(item, 'ColumnRef') ? [names(asKind(item, 'ColumnRef')!.fields).join('.')] : [])),
  );
  const outputs = outputAliases(select).all;
  let ok = true;
  walk([select.targetList, select.havingClause, select.sortClause], (kind, body) => {
    if (kind === 'FuncCall' && hasAggregate({ FuncCall: body }, catalog)) return false;
    if (kind === 'ColumnRef') {
      const key = names(body.fields).join('.');
      if (!grouped.has(key) && !outputs.has(key)) ok = false;
    }
    return undefined;
  });
  return ok;
}

/** The outer query: FROM the temporary table, no WHERE (the shards applied it), `t.c` read as `JOIN_ALIAS.c`. */
function rewriteOuter(select: AstBody, refs: readonly Ref[], keep: ReadonlySet<AstBody>, tempTable: string): void {
  for (const { ref, fields } of refs) {
    if (keep.has(ref) || fields.length !== 2) continue;
    ref.fields = [{ String: { sval: JOIN_ALIAS } }, { String: { sval: fields[1]! } }];
  }
  select.fromClause = [
    { RangeVar: { schemaname: 'pg_temp', relname: tempTable, inh: true, relpersistence: 'p', alias: { aliasname: JOIN_ALIAS } } },
  ];
  const before = paramsOf({ SelectStmt: select });
  delete select.whereClause;
  // A no-op use of every parameter only the WHERE used, so the caller's parameters still bind.
  const kept = new Set(paramsOf({ SelectStmt: select }));
  const anchors = before
    .filter((number) => !kept.has(number))
    .map((number) => parseStatement(`SELECT WHERE $${number}::text IS NULL OR true`).body.whereClause as AstNode);
  if (anchors.length > 0) select.whereClause = anchors.length === 1 ? anchors[0] : { BoolExpr: { boolop: 'AND_EXPR', args: anchors } };
}
