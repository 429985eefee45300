import { asKind, names, nodeKind, nodeList, walk } from '../broadcast/plan/ast.js';
import type { AstBody } from '../broadcast/plan/ast.js';
import { arraySources, listSources, valueSource } from './key-values.js';
import { unsupportedQuery } from './refusals.js';
import { conjuncts } from './scope.js';
import type { KeyGroup, Pin, RegistryLookup, TableRef } from './scope.js';

/**
 * A statement's query levels (the statement, its subqueries, CTEs and set-operation arms) and
 * what each level's conditions say about the shard keys of the tables it reads. A condition
 * pins only the tables of its own level (rows of that level must satisfy it); `a.key = b.key`
 * between two tables of one level makes them co-located; between a table of this level and one
 * of an enclosing level (a correlated subquery) it makes the inner table follow the outer one,
 * never the other way (the outer rows are not restricted by what a subquery says).
 */

/** The names one level's FROM brings into scope; `table` is undefined for subqueries, functions and CTE references. */
interface Scope {
  readonly entries: { readonly name: string; readonly table: TableRef | undefined }[];
  readonly outer: Scope | undefined;
}

/** What the levels of a statement say, over all of them. */
export interface LevelFacts {
  /** Every table reference of every level (CTE references excluded). */
  readonly tables: TableRef[];
  readonly equal: [TableRef, TableRef][];
  readonly pins: Map<TableRef, Pin>;
  /** [inner, outer]: the inner table's relevant rows have keys equal to the outer table's. */
  readonly follows: [TableRef, TableRef][];
}

type Describe = (node: unknown) => string;

interface Walker {
  readonly lookup: RegistryLookup;
  readonly describe: Describe;
  readonly facts: LevelFacts;
}

/** Analyzes a SELECT with every level below it. */
export function selectFacts(select: AstBody, lookup: RegistryLookup, describe: Describe): LevelFacts {
  const walker: Walker = { lookup, describe, facts: { tables: [], equal: [], pins: new Map(), follows: [] } };
  selectLevel(select, undefined, new Set(), walker);
  return walker.facts;
}

/** The top level of an UPDATE or DELETE (its subqueries are refused before). */
export function writeFacts(items: readonly unknown[], where: unknown, lookup: RegistryLookup, describe: Describe): LevelFacts {
  const walker: Walker = { lookup, describe, facts: { tables: [], equal: [], pins: new Map(), follows: [] } };
  level(items, where, [], undefined, new Set(), walker);
  return walker.facts;
}

function selectLevel(select: AstBody, outer: Scope | undefined, visibleCtes: ReadonlySet<string>, walker: Walker): void {
  const ctes = withCtes(select.withClause as AstBody | undefined, outer, visibleCtes, walker);
  const op = select.op as string | undefined;
  if (op !== undefined && op !== 'SETOP_NONE') {
    // Each arm is a level of its own; ORDER BY / LIMIT of the whole see no table.
    selectLevel(select.larg as AstBody, outer, ctes, walker);
    selectLevel(select.rarg as AstBody, outer, ctes, walker);
    nested([select.sortClause, select.limitCount, select.limitOffset], { entries: [], outer }, ctes, walker);
    return;
  }
  level(
    nodeList(select.fromClause),
    select.whereClause,
    [
      select.targetList,
      select.havingClause,
      select.groupClause,
      select.sortClause,
      select.limitCount,
      select.limitOffset,
      select.distinctClause,
      select.windowClause,
      select.valuesLists,
    ],
    outer,
    ctes,
    walker,
  );
}

/** The CTEs' bodies as levels; returns the CTE names visible to the statement. */
function withCtes(
  clause: AstBody | undefined,
  outer: Scope | undefined,
  visible: ReadonlySet<string>,
  walker: Walker,
): ReadonlySet<string> {
  if (!clause) return visible;
  const ctes = nodeList(clause.ctes).map((cte) => asKind(cte, 'CommonTableExpr')!);
  const names = new Set(visible);
  // WITH RECURSIVE: every CTE sees every other; otherwise each sees those before it.
  if (clause.recursive === true) for (const cte of ctes) names.add(cte.ctename as string);
  for (const cte of ctes) {
    const body = asKind(cte.ctequery, 'SelectStmt');
    if (!body) throw unsupportedQuery('a data-modifying WITH', 'run the write with its own router.query or execute');
    selectLevel(body, outer, new Set(names), walker);
    names.add(cte.ctename as string);
  }
  return names;
}

function level(
  items: readonly unknown[],
  where: unknown,
  expressions: readonly unknown[],
  outer: Scope | undefined,
  ctes: ReadonlySet<string>,
  walker: Walker,
): void {
  const scope: Scope = { entries: [], outer };
  const onClauses: [unknown, boolean][] = [];
  fromItems(items, true, scope, ctes, onClauses, walker);
  nested([where, ...onClauses.map(([quals]) => quals), ...expressions], scope, ctes, walker);
  for (const node of conjuncts(where)) factOf(node, scope, true, walker);
  for (const [quals, pins] of onClauses) for (const node of conjuncts(quals)) factOf(node, scope, pins, walker);
}

/** Which sides of a join keep only rows its ON (and the joins inside) let through. */
const RESTRICTED: Record<string, [boolean, boolean]> = { JOIN_INNER: [true, true], JOIN_LEFT: [true, false], JOIN_RIGHT: [false, true] };

/**
 * FROM items into the scope: tables, joins (their ON clauses), subqueries and functions.
 * `restricts`: the rows of these items that reach the result are only those their inner joins'
 * ON clauses let through (false on the nullable side of an outer join).
 */
function fromItems(
  items: readonly unknown[],
  restricts: boolean,
  scope: Scope,
  ctes: ReadonlySet<string>,
  onClauses: [unknown, boolean][],
  walker: Walker,
): void {
  for (const item of items) {
    const range = asKind(item, 'RangeVar') ?? (typeof (item as AstBody)?.relname === 'string' ? (item as AstBody) : undefined);
    if (range) {
      const schema = range.schemaname as string | undefined;
      const relname = range.relname as string;
      const name = (range.alias as { aliasname?: string } | undefined)?.aliasname ?? relname;
      if (schema === undefined && ctes.has(relname)) {
        scope.entries.push({ name, table: undefined });
        continue;
      }
      const table: TableRef = { name, written: schema ? `${schema}.${relname}` : relname, registered: walker.lookup(schema, relname) };
      walker.facts.tables.push(table);
      scope.entries.push({ name, table });
      continue;
    }
    const join = asKind(item, 'JoinExpr');
    if (join) {
      const [left, right] = RESTRICTED[join.jointype as string] ?? [false, false];
      fromItems([join.larg], restricts && left, scope, ctes, onClauses, walker);
      fromItems([join.rarg], restricts && right, scope, ctes, onClauses, walker);
      if (nodeList(join.usingClause).length > 0) throw unsupportedQuery('JOIN ... USING', 'write the join condition with ON a.key = b.key');
      if (join.isNatural === true) throw unsupportedQuery('NATURAL JOIN', 'write the join condition with ON a.key = b.key');
      // Only an inner join's ON filters the joined rows as a WHERE would, and only where no outer join keeps rows it drops.
      onClauses.push([join.quals, restricts && join.jointype === 'JOIN_INNER']);
      continue;
    }
    const subselect = asKind(item, 'RangeSubselect');
    if (subselect) {
      // A LATERAL subquery sees the items before it; a plain one cannot name them, so the same scope serves both.
      selectLevel(asKind(subselect.subquery, 'SelectStmt')!, scope, ctes, walker);
      scope.entries.push({ name: aliasOf(subselect) ?? '', table: undefined });
      continue;
    }
    const fn = asKind(item, 'RangeFunction');
    if (fn) {
      nested([fn.functions], scope, ctes, walker);
      scope.entries.push({ name: aliasOf(fn) ?? '', table: undefined });
      continue;
    }
    throw unsupportedQuery(`${nodeKind(item) ?? 'this item'} in FROM`, 'route it with execute(key, ...) instead');
  }
}

function aliasOf(body: AstBody): string | undefined {
  return (body.alias as { aliasname?: string } | undefined)?.aliasname;
}

/** The subqueries inside expressions of a level: each a level whose outer scope is this one. */
function nested(expressions: readonly unknown[], scope: Scope, ctes: ReadonlySet<string>, walker: Walker): void {
  walk(expressions, (kind, body) => {
    if (kind === 'SubLink') {
      selectLevel(asKind(body.subselect, 'SelectStmt')!, scope, ctes, walker);
      nested([body.testexpr], scope, ctes, walker);
      return false;
    }
    return kind !== 'SelectStmt';
  });
}

/** The table whose shard-key column a ColumnRef names, and whether it is of this level. */
function keyColumnOf(node: unknown, scope: Scope): { table: TableRef; local: boolean } | undefined {
  const ref = asKind(node, 'ColumnRef');
  if (!ref) return undefined;
  const parts = names(ref.fields);
  const column = parts.at(-1)!;
  if (parts.length === 1) {
    // Unqualified: only this level's tables (we do not know the other columns of this level,
    // so a name it does not key is never followed outward).
    const keyed = scope.entries.filter(({ table }) => table?.registered?.kind === 'sharded' && table.registered.shardKey === column);
    return keyed.length === 1 ? { table: keyed[0]!.table!, local: true } : undefined;
  }
  const qualifier = parts.at(-2)!;
  for (let at: Scope | undefined = scope; at; at = at.outer) {
    const entry = at.entries.find((candidate) => candidate.name === qualifier);
    if (!entry) continue;
    const table = entry.table;
    return table?.registered?.kind === 'sharded' && table.registered.shardKey === column ? { table, local: at === scope } : undefined;
  }
  return undefined;
}

/** Records what one conjunct of a level says; `pins`: rows of this level must satisfy it. */
function factOf(node: unknown, scope: Scope, pins: boolean, walker: Walker): void {
  const expr = asKind(node, 'A_Expr');
  if (!expr || names(expr.name).join('.') !== '=') return;
  const left = keyColumnOf(expr.lexpr, scope);
  const { facts } = walker;
  const pin = (table: TableRef, sources: ReturnType<typeof valueSource>[] | undefined) => {
    if (pins && sources?.every((source) => source !== undefined) && !facts.pins.has(table)) {
      facts.pins.set(table, { sources: sources as Pin['sources'], condition: walker.describe(node) });
    }
  };
  if (expr.kind === 'AEXPR_OP') {
    const right = keyColumnOf(expr.rexpr, scope);
    if (left && right) {
      if (left.table === right.table) return;
      if (left.local && right.local) facts.equal.push([left.table, right.table]);
      else if (pins && left.local !== right.local) facts.follows.push(left.local ? [left.table, right.table] : [right.table, left.table]);
      return;
    }
    const side = left ?? right;
    if (side?.local) pin(side.table, [valueSource(left ? expr.rexpr : expr.lexpr)]);
    return;
  }
  if (!left?.local) return;
  if (expr.kind === 'AEXPR_IN') pin(left.table, listSources(expr.rexpr));
  else if (expr.kind === 'AEXPR_OP_ANY') pin(left.table, arraySources(expr.rexpr));
}

/**
 * Groups the sharded tables by key equality and gives each group a pin: one of its own, or
 * that of a pinned group it follows (its rows then have that group's keys).
 */
export function groupsOf(facts: LevelFacts): KeyGroup[] {
  const sharded = facts.tables.filter((table) => table.registered?.kind === 'sharded');
  const parent = new Map(sharded.map((table) => [table, table]));
  const root = (table: TableRef): TableRef => {
    let at = table;
    while (parent.get(at) !== at) at = parent.get(at)!;
    return at;
  };
  for (const [a, b] of facts.equal) parent.set(root(a), root(b));
  const pins = new Map<TableRef, Pin>();
  for (const table of sharded) {
    const pin = facts.pins.get(table);
    if (pin && !pins.has(root(table))) pins.set(root(table), pin);
  }
  // Following only goes inward (inner follows outer), so this settles within as many rounds as there are levels.
  for (let changed = true; changed; ) {
    changed = false;
    for (const [inner, outer] of facts.follows) {
      const pin = pins.get(root(outer));
      if (pin && !pins.has(root(inner))) {
        pins.set(root(inner), pin);
        changed = true;
      }
    }
  }
  const groups = new Map<TableRef, TableRef[]>();
  for (const table of sharded) groups.set(root(table), [...(groups.get(root(table)) ?? []), table]);
  return [...groups].map(([top, members]) => ({ tables: members, pin: pins.get(top) }));
}
