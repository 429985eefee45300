import { asKind, nodeBody, nodeList, stringValue, walk } from '../broadcast/plan/ast.js';
import type { AstBody } from '../broadcast/plan/ast.js';
import type { RegisteredTable } from '../catalog/registries.js';
import type { KeySource } from './key-values.js';
import { unsupportedQuery } from './refusals.js';

/**
 * The shapes routing works with: table references, pins of a shard key, groups of co-located
 * tables (levels.ts finds them). Like pgdog's WHERE-clause walk and Vitess's vindex predicates:
 * only conditions ANDed at the top of WHERE (or of an inner join's ON) pin a key, since rows
 * must satisfy them; `a.key = b.key` in an ON or WHERE conjunct makes two tables co-located.
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

/** The conditions ANDed at the top of an expression. */
export function conjuncts(node: unknown): unknown[] {
  if (node === undefined || node === null) return [];
  const bool = asKind(node, 'BoolExpr');
  if (bool?.boolop === 'AND_EXPR') return nodeList(bool.args).flatMap(conjuncts);
  return [node];
}

/** Subqueries, CTEs and set operations in a write: their tables are outside a write's analysis. */
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
