import { asKind, names, nodeBody, nodeKind, nodeList, stringValue, walk } from '../broadcast/plan/ast.js';
import type { AstBody } from '../broadcast/plan/ast.js';
import type { RegisteredTable } from '../catalog/registries.js';
import { arraySources, listSources, valueSource } from './key-values.js';
import type { KeySource } from './key-values.js';
import { unsupportedQuery } from './refusals.js';

/**
 * The tables a statement reads or writes at its top level, and what its conditions say about
 * their shard keys. Like pgdog's WHERE-clause walk and Vitess's vindex predicates: only
 * conditions ANDed at the top of WHERE (or of an inner join's ON) pin a key, since rows must
 * satisfy them; `a.key = b.key` anywhere in an ON or WHERE conjunct makes two tables
 * co-located (a row only ever meets rows of its own shard, whatever the join type).
 */

/** One table reference of the statement. */
export interface TableRef {
  /** The name the statement uses for it: its alias, else its table name. */
  readonly name: string;
  /** As written: `schema.table` or `table`. */
  readonly written: string;
  readonly registered: RegisteredTable | undefined;
}

/** A key condition: the rows of the tables of `group` all have keys among `sources`. */
export interface Pin {
  readonly sources: readonly KeySource[];
  /** The condition as written, for explain. */
  readonly condition: string;
}

/** What the conditions say about one group of co-located sharded tables. */
export interface KeyGroup {
  readonly tables: readonly TableRef[];
  readonly pin: Pin | undefined;
}

export type RegistryLookup = (schema: string | undefined, name: string) => RegisteredTable | undefined;

/** Collects the table references of FROM items (tables, joins); anything else is refused. */
export function collectTables(items: readonly unknown[], lookup: RegistryLookup, onClauses: unknown[][], into: TableRef[]): void {
  for (const item of items) {
    const range = asKind(item, 'RangeVar') ?? (typeof (item as AstBody)?.relname === 'string' ? (item as AstBody) : undefined);
    if (range) {
      const schema = range.schemaname as string | undefined;
      const relname = range.relname as string;
      const alias = (range.alias as { aliasname?: string } | undefined)?.aliasname;
      into.push({ name: alias ?? relname, written: schema ? `${schema}.${relname}` : relname, registered: lookup(schema, relname) });
      continue;
    }
    const join = asKind(item, 'JoinExpr');
    if (join) {
      collectTables([join.larg, join.rarg], lookup, onClauses, into);
      if (nodeList(join.usingClause).length > 0) throw unsupportedQuery('JOIN ... USING', 'write the join condition with ON a.key = b.key');
      if (join.isNatural === true) throw unsupportedQuery('NATURAL JOIN', 'write the join condition with ON a.key = b.key');
      // Only an inner join's ON filters the joined rows as a WHERE would.
      onClauses.push([join.quals, join.jointype === 'JOIN_INNER' ? 'pins' : 'joins']);
      continue;
    }
    const kind = nodeKind(item) ?? 'this item';
    if (kind === 'RangeFunction') continue; // a function in FROM reads no table
    throw unsupportedQuery(kind === 'RangeSubselect' ? 'a subquery in FROM' : `${kind} in FROM`, 'route it with execute(key, ...) instead');
  }
}

/** The conditions ANDed at the top of an expression. */
export function conjuncts(node: unknown): unknown[] {
  if (node === undefined || node === null) return [];
  const bool = asKind(node, 'BoolExpr');
  if (bool?.boolop === 'AND_EXPR') return nodeList(bool.args).flatMap(conjuncts);
  return [node];
}

/** The table whose shard-key column a ColumnRef names, if any. */
function keyColumnOf(node: unknown, tables: readonly TableRef[]): TableRef | undefined {
  const ref = asKind(node, 'ColumnRef');
  if (!ref) return undefined;
  const parts = names(ref.fields);
  const column = parts.at(-1)!;
  if (parts.length === 1) {
    // Unqualified: PostgreSQL resolves it only if one table in scope has it, so a single
    // table keyed by that name is the one it means (or the statement fails on the shard).
    const keyed = tables.filter((table) => table.registered?.kind === 'sharded' && table.registered.shardKey === column);
    return keyed.length === 1 ? keyed[0] : undefined;
  }
  const qualifier = parts.at(-2)!;
  const table = tables.find((candidate) => candidate.name === qualifier);
  return table?.registered?.kind === 'sharded' && table.registered.shardKey === column ? table : undefined;
}

/** What one conjunct says: a pin of a table's key, or two tables' keys equal. */
type Fact = { kind: 'pin'; table: TableRef; pin: Pin } | { kind: 'equal'; a: TableRef; b: TableRef } | undefined;

function factOf(node: unknown, tables: readonly TableRef[], condition: () => string): Fact {
  const expr = asKind(node, 'A_Expr');
  if (!expr || names(expr.name).join('.') !== '=') return undefined;
  const left = keyColumnOf(expr.lexpr, tables);
  if (expr.kind === 'AEXPR_OP') {
    const right = keyColumnOf(expr.rexpr, tables);
    if (left && right) return left === right ? undefined : { kind: 'equal', a: left, b: right };
    const table = left ?? right;
    const source = valueSource(left ? expr.rexpr : expr.lexpr);
    return table && source ? { kind: 'pin', table, pin: { sources: [source], condition: condition() } } : undefined;
  }
  const sources = expr.kind === 'AEXPR_IN' ? listSources(expr.rexpr) : expr.kind === 'AEXPR_OP_ANY' ? arraySources(expr.rexpr) : undefined;
  return left && sources ? { kind: 'pin', table: left, pin: { sources, condition: condition() } } : undefined;
}

/**
 * Groups the sharded tables by key equality and finds a pin for each group. `pinning` are the
 * conjuncts rows must satisfy (WHERE, inner ON); `joining` the other ON conjuncts.
 */
export function keyGroups(
  tables: readonly TableRef[],
  pinning: readonly unknown[],
  joining: readonly unknown[],
  describe: (node: unknown) => string,
): KeyGroup[] {
  const sharded = tables.filter((table) => table.registered?.kind === 'sharded');
  const parent = new Map(sharded.map((table) => [table, table]));
  const root = (table: TableRef): TableRef => {
    let at = table;
    while (parent.get(at) !== at) at = parent.get(at)!;
    return at;
  };
  const pins = new Map<TableRef, Pin>();
  for (const [node, pinsRows] of [...pinning.map((n) => [n, true] as const), ...joining.map((n) => [n, false] as const)]) {
    const fact = factOf(node, tables, () => describe(node));
    if (fact?.kind === 'equal') parent.set(root(fact.a), root(fact.b));
    else if (fact?.kind === 'pin' && pinsRows && !pins.has(fact.table)) pins.set(fact.table, fact.pin);
  }
  const groups = new Map<TableRef, TableRef[]>();
  for (const table of sharded) groups.set(root(table), [...(groups.get(root(table)) ?? []), table]);
  return [...groups.values()].map((members) => ({
    tables: members,
    // Any one pin of any member holds for the whole group (their keys are equal).
    pin: members.map((table) => pins.get(table)).find((pin) => pin !== undefined),
  }));
}

/** Subqueries, CTEs and set operations anywhere: their tables are outside this analysis. */
export function refuseNestedQueries(statement: AstBody): void {
  if (statement.withClause !== undefined) throw unsupportedQuery('WITH (common table expressions)', 'route it with execute(key, ...)');
  const op = statement.op as string | undefined;
  if (op !== undefined && op !== 'SETOP_NONE') throw unsupportedQuery(op.replace('SETOP_', ''), 'route it with execute(key, ...)');
  walk(
    [statement.targetList, statement.whereClause, statement.havingClause, statement.returningClause, statement.returningList],
    (kind) => {
      if (kind === 'SubLink') throw unsupportedQuery('a subquery', 'route it with execute(key, ...), or pin and join the tables instead');
      return undefined;
    },
  );
}

/** The name of a ResTarget (UPDATE SET / INSERT column list). */
export function targetName(node: unknown): string {
  return (nodeBody(node).name as string | undefined) ?? stringValue(node) ?? '?';
}
