import { functionName, hasAggregate } from './aggregates.js';
import { asKind, integerConstant, nodeList, walk } from './ast.js';
import type { AstBody, AstNode } from './ast.js';
import type { CollationProbe, PlannerCatalog, SelectPlan } from './plan.js';
import { deparse, parseStatement } from './sql-parser.js';
import { matchTarget } from './targets.js';
import type { Target } from './targets.js';

/**
 * Text ordered by the merge (ORDER BY keys, min/max) follows the collation of its expression,
 * which may be a column's own (`name text COLLATE "de-x-icu"`), not the database default. The
 * parse tree cannot tell, so the plan carries a probe the shards answer once per plan: every
 * such expression under `pg_collation_for`, over one all-NULL row of the FROM table (a LEFT
 * JOIN ... ON false), so PostgreSQL derives each collation exactly as for the query itself.
 * Only expressions whose result column is collatable are asked (see collationProbeSql).
 */

const HIDDEN_SLOT = /^h(\d+)$/;

/** The probe of a merge plan over one FROM item, or undefined when nothing it orders could be text. */
export function collationProbe(
  select: AstBody,
  targets: readonly Target[],
  plan: SelectPlan,
  catalog: PlannerCatalog,
): CollationProbe | undefined {
  const from = nodeList(select.fromClause);
  if (from.length === 0) return undefined;
  const expressions: AstNode[] = [];
  const sort: (number | undefined)[] = [];
  const roles: { readonly column: string; readonly slot: number }[] = [];
  const add = (node: AstNode | undefined): number | undefined => {
    if (node === undefined || asKind(node, 'CollateClause') || hasParameter(node) || hasAggregate(node, catalog)) return undefined;
    expressions.push(node);
    return expressions.length - 1;
  };
  const sortItems = nodeList(select.sortClause);
  plan.sort.forEach((key, i) => {
    const item = asKind(sortItems[i], 'SortBy');
    sort.push(key.collation === undefined && item ? add(orderedExpression(item.node as AstNode, targets)) : undefined);
  });
  if (plan.aggregate) {
    plan.aggregate.visibleRoles.forEach((role, position) => {
      if ((role.kind === 'min' || role.kind === 'max') && role.collation === undefined) {
        const slot = add(minMaxArgument(targets[position]?.original));
        if (slot !== undefined) roles.push({ column: `v${position}`, slot });
      }
    });
    plan.aggregate.hiddenRoles.forEach((role, index) => {
      if ((role.kind === 'min' || role.kind === 'max') && role.collation === undefined) {
        const slot = add(minMaxArgument(parsedExpression(plan.hidden[index]!)));
        if (slot !== undefined) roles.push({ column: `h${index}`, slot });
      }
    });
  }
  if (expressions.length === 0) return undefined;
  // Several FROM items (a pushed-down join written with commas): their cross join, which has the same columns.
  const joined = from.reduce((larg, rarg) => ({ JoinExpr: { jointype: 'JOIN_INNER', larg, rarg } }));
  return { from: joined, expressions, sort, roles };
}

/**
 * The probe's statement over the expressions in `slots` (those whose column turned out
 * collatable: pg_collation_for fails on other types), one output column per slot, in order.
 */
export function collationProbeSql(probe: CollationProbe, slots: readonly number[]): string {
  const select: AstBody = {
    targetList: slots.map((slot, i) => ({
      ResTarget: {
        name: `c${i + 1}`,
        val: { FuncCall: { funcname: [{ String: { sval: 'pg_collation_for' } }], args: [probe.expressions[slot]] } },
      },
    })),
    fromClause: [
      {
        JoinExpr: {
          jointype: 'JOIN_LEFT',
          larg: {
            RangeSubselect: {
              subquery: { SelectStmt: { limitOption: 'LIMIT_OPTION_DEFAULT', op: 'SETOP_NONE' } },
              alias: { aliasname: '__psr_one' },
            },
          },
          rarg: probe.from,
          quals: { A_Const: { boolval: {} } },
        },
      },
    ],
    limitOption: 'LIMIT_OPTION_DEFAULT',
    op: 'SETOP_NONE',
  };
  return deparse({ SelectStmt: select });
}

/**
 * The plan with the collations the probe found (its one row of quoted names, as
 * pg_collation_for prints them) on its sort keys and min/max roles; `"default"` and NULL
 * (not collatable) leave the database default.
 */
export function withCollations(plan: SelectPlan, probe: CollationProbe, found: ReadonlyMap<number, string | null>): SelectPlan {
  const named = (slot: number | undefined) => {
    const name = slot === undefined ? null : found.get(slot);
    return name === null || name === undefined || name === '"default"' ? undefined : name;
  };
  const sort = plan.sort.map((key, i) => {
    const collation = named(probe.sort[i]);
    return collation === undefined ? key : { ...key, collation };
  });
  if (!plan.aggregate) return { ...plan, sort };
  const visibleRoles = [...plan.aggregate.visibleRoles];
  const hiddenRoles = [...plan.aggregate.hiddenRoles];
  for (const { column, slot } of probe.roles) {
    const collation = named(slot);
    const hidden = HIDDEN_SLOT.exec(column);
    const roles = hidden ? hiddenRoles : visibleRoles;
    const index = Number(hidden ? hidden[1] : column.slice(1));
    const role = roles[index]!;
    if (collation !== undefined && (role.kind === 'min' || role.kind === 'max')) roles[index] = { kind: role.kind, collation };
  }
  return { ...plan, sort, aggregate: { ...plan.aggregate, visibleRoles, hiddenRoles } };
}

/** What an ORDER BY item orders by: the select-list entry it names, or itself; min/max orders by its argument. */
function orderedExpression(node: AstNode, targets: readonly Target[]): AstNode | undefined {
  const collate = asKind(node, 'CollateClause');
  if (collate) return undefined;
  const position = integerConstant(node);
  const target = position !== undefined ? position - 1 : matchTarget(node, targets, 'order');
  const expression = target !== undefined ? targets[target]?.original : node;
  const call = asKind(expression, 'FuncCall');
  if (call && call.over === undefined && (call.agg_star === true || nodeList(call.args).length > 0)) {
    const name = functionName(call);
    if (name === 'min' || name === 'max') return minMaxArgument(expression);
    // count, sum, avg, bool_and, ...: never text.
    if (['count', 'sum', 'avg', 'bool_and', 'bool_or', 'every'].includes(name)) return undefined;
  }
  return expression;
}

function minMaxArgument(node: AstNode | undefined): AstNode | undefined {
  const call = asKind(node, 'FuncCall');
  return call ? nodeList(call.args)[0] : undefined;
}

function parsedExpression(text: string): AstNode | undefined {
  const target = nodeList(parseStatement(`SELECT ${text}`).body.targetList)[0];
  return asKind(target, 'ResTarget')?.val as AstNode | undefined;
}

function hasParameter(node: AstNode): boolean {
  let found = false;
  walk(node, (kind) => {
    if (kind === 'ParamRef' || kind === 'SubLink') found = true;
  });
  return found;
}
