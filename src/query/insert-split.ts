import { asKind, nodeList, walk } from '../broadcast/plan/ast.js';
import type { AstBody } from '../broadcast/plan/ast.js';
import { deparse } from '../broadcast/plan/sql-parser.js';

/**
 * A multi-row INSERT whose rows belong to several shards becomes one INSERT per shard holding
 * only that shard's rows. The statement is rebuilt from its parse tree (a copy with the other
 * rows removed, parameters renumbered $1.. in order of first use) and printed by the deparser:
 * values never enter the SQL text, and quoting cannot go wrong.
 */

/** One shard's part of a split INSERT. */
export interface InsertPart {
  readonly sql: string;
  readonly params: readonly unknown[];
  /** Positions (in the original VALUES list) of its rows, in order. */
  readonly rows: readonly number[];
}

/** The INSERT with only the VALUES rows at `rows`, its parameters renumbered. */
export function insertPart(tree: Record<string, unknown>, rows: readonly number[], params: readonly unknown[]): InsertPart {
  const copy = structuredClone(tree) as { InsertStmt: AstBody };
  const select = asKind(copy.InsertStmt.selectStmt, 'SelectStmt')!;
  const all = nodeList(select.valuesLists);
  select.valuesLists = rows.map((row) => all[row]!);
  // Renumber in order of first appearance; one old number maps to one new number everywhere.
  const renumbered = new Map<number, number>();
  walk([copy], (kind, body) => {
    if (kind !== 'ParamRef') return undefined;
    const old = body.number as number;
    let next = renumbered.get(old);
    if (next === undefined) {
      next = renumbered.size + 1;
      renumbered.set(old, next);
    }
    body.number = next;
    return undefined;
  });
  const partParams = [...renumbered.keys()].map((old) => params[old - 1]);
  return { sql: deparse(copy), params: partParams, rows };
}
