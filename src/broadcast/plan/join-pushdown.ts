import { asKind, names, nodeBody, nodeKind, nodeList, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { PlannerCatalog } from './plan.js';
import { unsupported } from './unsupported.js';

/**
 * Push-down of joins: which FROM clauses each shard can answer whole for its own rows, so the
 * union of the shards' results is exactly one server's result (the merge steps then apply).
 *
 * Every FROM item is classified as
 * - replicated: reads only reference tables (the same full copy on every shard), or
 * - partitioned: each row it produces comes from exactly one shard, and every non-NULL shard
 *   key column in the row holds the same value, whose bucket that shard owns.
 *
 * A join of two partitioned items is pushed down when its ON clause (a top-level AND conjunct)
 * or USING equates a shard key of each side: a matching pair has equal non-NULL keys, so both
 * rows sit on that key's shard and meet there once; an unmatched row's possible partners are all
 * on its own shard too (a NULL key matches nothing anywhere), so LEFT/RIGHT/FULL joins are exact.
 * A partitioned item joined to a replicated one is exact when the replicated side is not
 * preserved (INNER, partitioned LEFT JOIN reference, reference RIGHT JOIN partitioned): an
 * unmatched reference row would be NULL-extended once per shard otherwise, so reference LEFT
 * JOIN sharded, sharded RIGHT JOIN reference and FULL joins with a reference table fall back to
 * the coordinator step. Comma-separated FROM items must be tied by WHERE equalities of shard keys
 * (a WHERE equality filters the cross product, so the same argument holds). This is Citus's rule
 * for co-located joins (a join on the distribution columns) and for reference tables on the
 * inner side (multi_router_planner.c, "reference table on the outer side" in
 * recursive_planning.c), with each registered table's shard key taken from the table registry.
 *
 * During bucket moves every sharded table of the join carries the moves guard on its own key
 * (shard-query.ts), so each side reads only the buckets the shard owns.
 */

/** A sharded table of a pushed-down FROM clause. */
export interface PushedTable {
  /** The RangeVar's body in the statement's tree. */
  readonly relation: AstBody;
  /** The name its columns are qualified by: the alias, else the table name. */
  readonly qualifier: string;
  /** Its shard key column (from the registry). */
  readonly key: string;
}

interface Classified {
  readonly sharded: PushedTable[];
  readonly references: string[];
}

const partitioned = (item: Classified) => item.sharded.length > 0;

/**
 * The sharded tables of a FROM clause that every shard can answer whole, or UNSUPPORTED saying
 * why not (the planner then takes the coordinator step).
 */
export function pushdownJoin(select: AstBody, catalog: PlannerCatalog): { sharded: PushedTable[]; references: string[] } {
  const items = nodeList(select.fromClause).map((item) => classify(item, catalog));
  const where = conjunctsOf(select.whereClause);
  // Union-find over the partitioned FROM items, joined by WHERE equalities of their keys.
  const parts = items.filter(partitioned);
  const parent = parts.map((_, i) => i);
  const root = (i: number): number => (parent[i] === i ? i : root(parent[i]!));
  for (let i = 0; i < parts.length; i++) {
    for (let j = i + 1; j < parts.length; j++) {
      if (where.some((conjunct) => equatesKeys(conjunct, parts[i]!.sharded, parts[j]!.sharded))) parent[root(j)] = root(i);
    }
  }
  if (new Set(parts.map((_, i) => root(i))).size > 1) {
    throw unsupported('join', 'sharded tables in FROM without a WHERE equality of their shard keys span shards');
  }
  return { sharded: items.flatMap((item) => item.sharded), references: items.flatMap((item) => item.references) };
}

function classify(item: AstNode, catalog: PlannerCatalog): Classified {
  const kind = nodeKind(item);
  const body = nodeBody(item);
  if (kind === 'RangeVar') return classifyTable(body, catalog);
  if (kind !== 'JoinExpr') throw unsupported(kind === 'RangeSubselect' ? 'subquery' : `${kind ?? 'this'} in FROM`);
  if (body.alias !== undefined) throw unsupported('join', 'an aliased join');
  if (body.isNatural === true) throw unsupported('join', 'NATURAL join (its columns are not known to the planner)');
  walk(body.quals, (inner) => {
    if (inner === 'SubLink') throw unsupported('subquery', 'in JOIN ... ON');
  });
  const left = classify(body.larg as AstNode, catalog);
  const right = classify(body.rarg as AstNode, catalog);
  const type = body.jointype as string | undefined;
  const joined = { sharded: [...left.sharded, ...right.sharded], references: [...left.references, ...right.references] };
  if (!partitioned(left) && !partitioned(right)) return joined;
  if (partitioned(left) && partitioned(right)) {
    const on = conjunctsOf(body.quals).some((conjunct) => equatesKeys(conjunct, left.sharded, right.sharded));
    const using = names(body.usingClause).some(
      (name) => left.sharded.some((table) => table.key === name) && right.sharded.some((table) => table.key === name),
    );
    if (!on && !using) throw unsupported('join', 'sharded tables joined without ON/USING equating their shard keys span shards');
    return joined;
  }
  const preservesReference =
    type === 'JOIN_FULL' || (type === 'JOIN_LEFT' && !partitioned(left)) || (type === 'JOIN_RIGHT' && !partitioned(right));
  if (preservesReference) {
    throw unsupported('outer join that preserves a reference table', "its unmatched rows would come from every shard's copy");
  }
  return joined;
}

function classifyTable(relation: AstBody, catalog: PlannerCatalog): Classified {
  const schema = relation.schemaname as string | undefined;
  const name = relation.relname as string;
  const alias = relation.alias as AstBody | undefined;
  if (catalog.isReferenceTable?.(schema, name) === true) return { sharded: [], references: [name] };
  const key = catalog.shardKey?.(schema, name);
  if (key === undefined) throw unsupported('join', `${name} is not a registered sharded or reference table`);
  if (nodeList(alias?.colnames).length > 0) throw unsupported('join', 'a table alias that renames columns');
  return { sharded: [{ relation, qualifier: (alias?.aliasname as string | undefined) ?? name, key }], references: [] };
}

/** `x.key = y.key` with x among `left` and y among `right` (either order), both their shard keys. */
function equatesKeys(conjunct: AstNode, left: readonly PushedTable[], right: readonly PushedTable[]): boolean {
  const expression = asKind(conjunct, 'A_Expr');
  if (expression?.kind !== 'AEXPR_OP' || names(expression.name).join('.') !== '=') return false;
  const isKeyOf = (node: unknown, tables: readonly PushedTable[]) => {
    const fields = names(asKind(node, 'ColumnRef')?.fields);
    return fields.length === 2 && tables.some((table) => table.qualifier === fields[0] && table.key === fields[1]);
  };
  const { lexpr, rexpr } = expression;
  return (isKeyOf(lexpr, left) && isKeyOf(rexpr, right)) || (isKeyOf(lexpr, right) && isKeyOf(rexpr, left));
}

function conjunctsOf(node: unknown): AstNode[] {
  if (node === undefined) return [];
  const bool = asKind(node, 'BoolExpr');
  if (bool && bool.boolop === 'AND_EXPR') return nodeList(bool.args).flatMap(conjunctsOf);
  return [node as AstNode];
}
