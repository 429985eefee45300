import type { FieldDef } from '../../pool/session.js';
import { ShardRouterError } from '../../errors.js';
import { columnIndex } from '../plan/plan.js';
import type { ComparisonOperator, Condition, Operand } from '../plan/plan.js';
import { compareNumeric, parseNumeric } from '../values/decimal.js';
import { OID } from '../values/oid.js';
import { comparatorFor } from '../values/order.js';
import type { TextOrder } from '../values/order.js';
import type { MergeContext } from './merge.js';
import type { RawRow } from './row-order.js';

/**
 * HAVING on merged groups: the plan's Condition evaluated with SQL's three-valued logic, values
 * compared the way PostgreSQL would after resolving their common type.
 */

/** The merged rows for which `having` is true (not false, not unknown). */
export async function filterHaving(
  having: Condition,
  rows: readonly RawRow[],
  fields: readonly FieldDef[],
  hiddenCount: number,
  context: MergeContext,
): Promise<RawRow[]> {
  const casts = await castParameters(having, fields, hiddenCount, context);
  return rows.filter((row) => evaluate(having, { row, fields, hiddenCount, context, casts }) === true);
}

/** The text form PostgreSQL would receive for a parameter value (as pg sends it). */
function paramText(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'boolean') return value ? 't' : 'f';
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value as string | number | bigint);
}

const NUMBER_TYPES = new Set<number>([OID.int2, OID.int4, OID.int8, OID.numeric, OID.oid]);
const FLOAT_TYPES = new Set<number>([OID.float4, OID.float8]);

interface Resolved {
  readonly text: string | null;
  /** The value's type OID, or a literal's kind. */
  readonly type: number | 'number' | 'string' | 'boolean' | 'null' | 'param';
  /** For a parameter: its index, to find its text cast to the other side's type. */
  readonly param?: number;
}

/** Parameter texts as the server casts them to a column's type, keyed `${param}:${oid}`. */
type ParameterCasts = ReadonlyMap<string, string | null>;

/**
 * A $n compared with a typed column in HAVING: PostgreSQL would read the parameter as that
 * type. Dates, timestamps, text, ... are cast by the server (one round trip for all of them),
 * so the comparison sees the type's own text form. Numbers compare as exact decimals directly.
 */
async function castParameters(
  having: Condition,
  fields: readonly FieldDef[],
  hiddenCount: number,
  context: MergeContext,
): Promise<ParameterCasts> {
  const wanted = new Map<string, { param: number; oid: number }>();
  const visit = (condition: Condition): void => {
    switch (condition.kind) {
      case 'and':
      case 'or':
        condition.args.forEach(visit);
        return;
      case 'not':
        visit(condition.arg);
        return;
      case 'compare':
      case 'between': {
        const operands = condition.kind === 'compare' ? [condition.left, condition.right] : [condition.arg, condition.low, condition.high];
        const column = operands.find((operand) => operand.kind === 'column');
        if (column?.kind !== 'column') return;
        const oid = fields[columnIndex(column.column, fields.length, hiddenCount)]!.dataTypeID;
        if (NUMBER_TYPES.has(oid) || FLOAT_TYPES.has(oid)) return;
        for (const operand of operands) if (operand.kind === 'param') wanted.set(`${operand.index}:${oid}`, { param: operand.index, oid });
        return;
      }
      default:
        return;
    }
  };
  visit(having);
  const casts = new Map<string, string | null>();
  for (const [key, { param, oid }] of wanted) {
    const [text] = await context.caster(oid, [paramText(context.params[param])]);
    casts.set(key, text ?? null);
  }
  return casts;
}

/** What a HAVING condition is evaluated against: one merged row. */
interface Scope {
  readonly row: RawRow;
  readonly fields: readonly FieldDef[];
  readonly hiddenCount: number;
  readonly context: MergeContext;
  readonly casts: ParameterCasts;
}

/** SQL three-valued logic: true, false or null (unknown). */
function evaluate(condition: Condition, scope: Scope): boolean | null {
  switch (condition.kind) {
    case 'and':
      return connective(condition.args, scope, false);
    case 'or':
      return connective(condition.args, scope, true);
    case 'not': {
      const v = evaluate(condition.arg, scope);
      return v === null ? null : !v;
    }
    case 'is_null': {
      const isNull = resolve(condition.arg, scope).text === null;
      return condition.negated ? !isNull : isNull;
    }
    case 'truth': {
      const { text } = resolve(condition.arg, scope);
      return text === null ? null : text === 't' || text === 'true';
    }
    case 'compare': {
      const order = compareValues(resolve(condition.left, scope), resolve(condition.right, scope), scope.context.textOrder, scope.casts);
      return order === null ? null : holds(condition.op, order);
    }
    case 'between':
      return between(condition, scope);
    default: {
      const never: never = condition;
      throw new Error(`unknown condition ${String(never)}`);
    }
  }
}

/** Three-valued AND (`decisive` false) or OR (`decisive` true): the decisive value wins, else any unknown makes it unknown. */
function connective(args: readonly Condition[], scope: Scope, decisive: boolean): boolean | null {
  let result: boolean | null = !decisive;
  for (const arg of args) {
    const v = evaluate(arg, scope);
    if (v === decisive) return decisive;
    if (v === null) result = null;
  }
  return result;
}

/** x BETWEEN a AND b is x >= a AND x <= b, with three-valued AND. */
function between(condition: Extract<Condition, { kind: 'between' }>, scope: Scope): boolean | null {
  const arg = resolve(condition.arg, scope);
  const low = compareValues(arg, resolve(condition.low, scope), scope.context.textOrder, scope.casts);
  const high = compareValues(arg, resolve(condition.high, scope), scope.context.textOrder, scope.casts);
  const geLow = low === null ? null : low >= 0;
  const leHigh = high === null ? null : high <= 0;
  const inside = geLow === false || leHigh === false ? false : geLow === null || leHigh === null ? null : true;
  return inside === null ? null : condition.negated ? !inside : inside;
}

/** Whether `op` holds between two values that compare as `order`. */
function holds(op: ComparisonOperator, order: number): boolean {
  switch (op) {
    case '=':
      return order === 0;
    case '<>':
      return order !== 0;
    case '<':
      return order < 0;
    case '<=':
      return order <= 0;
    case '>':
      return order > 0;
    case '>=':
      return order >= 0;
    default: {
      const never: never = op;
      throw new Error(`unknown operator ${String(never)}`);
    }
  }
}

function resolve(operand: Operand, scope: Scope): Resolved {
  switch (operand.kind) {
    case 'literal':
      return { text: operand.text, type: operand.type };
    case 'param':
      return { text: paramText(scope.context.params[operand.index]), type: 'param', param: operand.index };
    case 'column': {
      const index = columnIndex(operand.column, scope.fields.length, scope.hiddenCount);
      return { text: scope.row[index]!, type: scope.fields[index]!.dataTypeID };
    }
    default: {
      const never: never = operand;
      throw new Error(`unknown operand ${String(never)}`);
    }
  }
}

/** Compares two HAVING values the way PostgreSQL would after resolving their common type. */
function compareValues(left: Resolved, right: Resolved, textOrder: TextOrder, casts: ParameterCasts): number | null {
  const cast = (r: Resolved, other: Resolved): Resolved =>
    r.param !== undefined && typeof other.type === 'number' && casts.has(`${r.param}:${other.type}`)
      ? { text: casts.get(`${r.param}:${other.type}`)!, type: other.type }
      : r;
  const a = cast(left, right);
  const b = cast(right, left);
  if (a.text === null || b.text === null) return null;
  const numeric = (r: Resolved) => r.type === 'number' || (typeof r.type === 'number' && NUMBER_TYPES.has(r.type));
  const float = (r: Resolved) => typeof r.type === 'number' && FLOAT_TYPES.has(r.type);
  if ((numeric(a) || float(a)) && (numeric(b) || float(b) || b.type === 'param' || b.type === 'string')) return compareNumbers(a, b);
  if ((numeric(b) || float(b)) && (a.type === 'param' || a.type === 'string')) return compareNumbers(a, b);
  const typed = typeof a.type === 'number' ? a.type : typeof b.type === 'number' ? b.type : undefined;
  if (typed === undefined) {
    if (a.type === 'boolean' || b.type === 'boolean') return a.text === b.text ? 0 : a.text === 'f' ? -1 : 1;
    throw new ShardRouterError('UNSUPPORTED', 'broadcast cannot compare two literals in HAVING; compare a column or an aggregate');
  }
  const compare = comparatorFor(typed, textOrder);
  if (!compare)
    throw new ShardRouterError('UNSUPPORTED', `broadcast cannot evaluate a HAVING comparison on values of type ${typed} in the router`);
  const order = compare(a.text, b.text);
  return order;

  function compareNumbers(x: Resolved, y: Resolved): number {
    if (float(x) || float(y)) {
      const p = Number(x.text);
      const q = Number(y.text);
      if (Number.isNaN(p) || Number.isNaN(q)) return Number.isNaN(p) ? (Number.isNaN(q) ? 0 : 1) : -1;
      return p < q ? -1 : p > q ? 1 : 0;
    }
    return compareNumeric(parseNumeric(x.text!.trim()), parseNumeric(y.text!.trim()));
  }
}
