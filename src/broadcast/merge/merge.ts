import { parseRows } from '../../pool/raw-text.js';
import type { FieldDef, QueryResultRow } from '../../pool/session.js';
import type { RawQueryResult } from '../../pool/shard-pool.js';
import { ShardRouterError } from '../../errors.js';
import { compareNumeric, parseNumeric } from '../values/decimal.js';
import { mergeSorted } from './k-way-merge.js';
import { columnIndex } from '../plan/plan.js';
import type { ColumnRole, Condition, Count, Operand, SelectPlan } from '../plan/plan.js';
import { OID } from '../values/oid.js';
import { comparatorFor } from '../values/order.js';
import type { TextOrder } from '../values/order.js';
import { averageFromPartials, boolAndPartials, boolOrPartials, countPartials, maxPartials, minPartials, sumPartials } from '../values/partials.js';
import { equalityKeyFor, hasEqualityKey } from '../values/text-forms.js';
import { rankComparator, rowComparator, textOrderOf } from './row-order.js';
import type { RawRow, ServerRanker } from './row-order.js';
import type { ServerCaster } from '../server-probe.js';

/** One shard's answer to the shard query: field descriptions and rows of raw text forms. */
export type ShardRows = Pick<RawQueryResult, 'shardId' | 'fields' | 'rows'>;

export interface MergeContext {
  readonly params: readonly unknown[];
  /** Whether the database's default collation orders text by code point. */
  readonly textOrder: TextOrder;
  readonly ranker: ServerRanker;
  readonly caster: ServerCaster;
}

/**
 * Merges the shards' results of a SELECT plan into the rows one server would have returned.
 * Steps, in SQL's order: combine groups (aggregate plans), HAVING, DISTINCT, ORDER BY (a k-way
 * merge of the shards' sorted rows for plain queries), OFFSET/LIMIT, drop helper columns, parse.
 */
export async function mergeSelect<R extends QueryResultRow>(
  plan: SelectPlan,
  results: readonly ShardRows[],
  context: MergeContext,
): Promise<{ rows: R[]; fields: FieldDef[] }> {
  const first = results[0]!;
  const width = first.fields.length;
  const hiddenCount = plan.hidden.length;
  let fields = [...first.fields];
  let rows: RawRow[];
  let sorted = false;
  const limit = resolveCount(plan.limit, context.params, 'LIMIT');
  const offset = resolveCount(plan.offset, context.params, 'OFFSET') ?? 0;

  if (plan.aggregate) {
    const roles = [...plan.aggregate.visibleRoles, ...plan.aggregate.hiddenRoles];
    if (roles.length !== width) throw new Error(`shard result has ${width} columns, the plan expects ${roles.length}`);
    ({ rows, fields } = await combineGroups(plan, roles, results, fields, context));
    if (plan.having) {
      const having = plan.having;
      const casts = await castParameters(having, fields, hiddenCount, context);
      rows = rows.filter((row) => evaluate(having, row, fields, hiddenCount, context, casts) === true);
    }
  } else {
    const oids = fields.map((field) => field.dataTypeID);
    if (plan.sort.length > 0) {
      const all = () => results.flatMap((result) => result.rows);
      const compare = await rowComparator(plan.sort, oids, hiddenCount, context.textOrder, context.ranker, all);
      // DISTINCT can drop rows, so the merge may need more than offset+limit of them.
      const wanted = limit !== undefined && !plan.distinct ? offset + limit : Infinity;
      rows = mergeSorted(
        results.map((result) => result.rows),
        compare,
        wanted,
      );
      sorted = true;
    } else {
      rows = results.flatMap((result) => result.rows);
    }
  }

  const visibleCount = width - hiddenCount;
  if (plan.distinct) rows = distinctRows(rows, fields, visibleCount);
  if (plan.sort.length > 0 && !sorted) {
    const compare = await rowComparator(
      plan.sort,
      fields.map((field) => field.dataTypeID),
      hiddenCount,
      context.textOrder,
      context.ranker,
      () => rows,
    );
    rows.sort(compare);
  }
  if (offset > 0 || limit !== undefined) rows = rows.slice(offset, limit === undefined ? undefined : offset + limit);
  const visibleFields = fields.slice(0, visibleCount);
  return { rows: parseRows<R>(rows, visibleFields), fields: visibleFields };
}

/** Combines the shards' partial aggregates, one merged row per group. */
async function combineGroups(
  plan: SelectPlan,
  roles: readonly ColumnRole[],
  results: readonly ShardRows[],
  fields: FieldDef[],
  context: MergeContext,
): Promise<{ rows: RawRow[]; fields: FieldDef[] }> {
  const width = fields.length;
  const oids = fields.map((field) => field.dataTypeID);
  const keyColumns = roles.flatMap((role, i) => (role.kind === 'key' ? [i] : []));
  for (const i of keyColumns) {
    if (!hasEqualityKey(oids[i]!)) {
      throw new ShardRouterError('UNSUPPORTED', `broadcast cannot merge GROUP BY on column "${fields[i]!.name}" exactly across shards: equal values of its type (${oids[i]}) can print differently`);
    }
  }
  const keyOf = keyColumns.map((i) => equalityKeyFor(oids[i]!));

  // Per group: the first shard row (keys and group-determined values) and each column's partials.
  const groups = new Map<string, { first: RawRow; partials: RawRow[] }>();
  for (const result of results) {
    for (const row of result.rows) {
      let key = '';
      for (let k = 0; k < keyColumns.length; k++) {
        const value = row[keyColumns[k]!]!;
        // JSON-like quoting keeps ('a,b') and ('a','b') apart; \u0000 marks NULL (one group, as in SQL).
        key += value === null ? '\u0000,' : `${JSON.stringify(keyOf[k]!(value))},`;
      }
      let group = groups.get(key);
      if (!group) {
        group = { first: row, partials: Array.from({ length: width }, () => []) };
        groups.set(key, group);
      }
      for (let c = 0; c < width; c++) group.partials[c]!.push(row[c]!);
    }
  }
  if (plan.aggregate!.ungrouped && groups.size === 0) {
    // Every shard answers an ungrouped aggregate with one row; none can be here only if none answered.
    throw new Error('no shard returned the row of an ungrouped aggregate');
  }

  const outFields = [...fields];
  const serverOrdered: { column: number; kind: 'min' | 'max'; collation: string | undefined }[] = [];
  const merged: RawRow[] = [];
  for (const group of groups.values()) {
    const row: RawRow = [...group.first];
    for (let c = 0; c < width; c++) {
      const role = roles[c]!;
      const partials = group.partials[c]!;
      switch (role.kind) {
        case 'key':
        case 'value':
        case 'avg_count':
          break;
        case 'count':
          row[c] = countPartials(partials);
          break;
        case 'sum': {
          const sum = sumOrThrow(oids[c]!, partials, fields[c]!.name);
          row[c] = sum;
          break;
        }
        case 'min':
        case 'max': {
          const textOrder = textOrderOf(role.collation, context.textOrder);
          const value = role.kind === 'min' ? minPartials(oids[c]!, partials, textOrder) : maxPartials(oids[c]!, partials, textOrder);
          if (value === undefined) serverOrdered.push({ column: c, kind: role.kind, collation: role.collation });
          else row[c] = value;
          break;
        }
        case 'bool_and':
          row[c] = boolAndPartials(partials);
          break;
        case 'bool_or':
          row[c] = boolOrPartials(partials);
          break;
        case 'avg': {
          const countColumn = columnIndex(role.count, width, plan.hidden.length);
          const sum = sumOrThrow(oids[c]!, partials, fields[c]!.name);
          const average = averageFromPartials(oids[c]!, sum, countPartials(group.partials[countColumn]!));
          if (!average) throw unsupportedType('avg', fields[c]!.name, oids[c]!);
          row[c] = average.value;
          outFields[c] = { ...fields[c]!, dataTypeID: average.oid, dataTypeSize: average.oid === OID.numeric ? -1 : 8, dataTypeModifier: -1 };
          break;
        }
        default: {
          const never: never = role;
          throw new Error(`unknown role ${String(never)}`);
        }
      }
    }
    merged.push(row);
  }

  // min/max of types or collations JS cannot order: one server ranking per column, all groups at once.
  const columns = [...new Set(serverOrdered.map((entry) => entry.column))];
  for (const column of columns) {
    const { kind, collation } = serverOrdered.find((entry) => entry.column === column)!;
    const partialRows = [...groups.values()].flatMap((group) => group.partials[column]!.map((value) => [value]));
    const compare = await rankComparator(context.ranker, oids[column]!, collation, partialRows, 0);
    let g = 0;
    for (const group of groups.values()) {
      let best: string | null = null;
      for (const value of group.partials[column]!) {
        if (value === null) continue;
        if (best === null || (kind === 'min' ? compare(value, best) < 0 : compare(value, best) > 0)) best = value;
      }
      merged[g++]![column] = best;
    }
  }
  return { rows: merged, fields: outFields };
}

function sumOrThrow(oid: number, partials: RawRow, column: string): string | null {
  let sum: string | null | undefined;
  try {
    sum = sumPartials(oid, partials);
  } catch (error) {
    // int8 overflow: what PostgreSQL itself reports as 22003 numeric_value_out_of_range.
    throw new ShardRouterError('QUERY_FAILED', `sum of column "${column}" across shards: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
  if (sum === undefined) throw unsupportedType('sum', column, oid);
  return sum;
}

function unsupportedType(aggregate: string, column: string, oid: number): ShardRouterError {
  return new ShardRouterError('UNSUPPORTED', `broadcast cannot merge ${aggregate} over values of type ${oid} (column "${column}") exactly across shards`);
}

function distinctRows(rows: readonly RawRow[], fields: readonly FieldDef[], visibleCount: number): RawRow[] {
  const keyOf = fields.slice(0, visibleCount).map((field) => equalityKeyFor(field.dataTypeID));
  const seen = new Set<string>();
  return rows.filter((row) => {
    let key = '';
    for (let c = 0; c < visibleCount; c++) {
      const value = row[c]!;
      key += value === null ? '\u0000,' : `${JSON.stringify(keyOf[c]!(value))},`;
    }
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** A LIMIT or OFFSET's value for this execution; undefined for none (or NULL). */
export function resolveCount(count: Count | undefined, params: readonly unknown[], clause: 'LIMIT' | 'OFFSET'): number | undefined {
  if (!count) return undefined;
  let value: unknown = count.kind === 'constant' ? count.value : params[count.index];
  if (value === null || value === undefined) return undefined; // LIMIT NULL is no limit
  if (typeof value === 'string' && /^\s*-?\d+\s*$/.test(value)) value = Number(value);
  if (typeof value === 'bigint') value = Number(value);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new ShardRouterError('INVALID_ARGUMENT', `${clause} must be a non-negative integer, got ${String(value)}`);
  }
  return value;
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
async function castParameters(having: Condition, fields: readonly FieldDef[], hiddenCount: number, context: MergeContext): Promise<ParameterCasts> {
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

/** SQL three-valued logic: true, false or null (unknown). */
function evaluate(
  condition: Condition,
  row: RawRow,
  fields: readonly FieldDef[],
  hiddenCount: number,
  context: MergeContext,
  casts: ParameterCasts,
): boolean | null {
  const value = (operand: Operand): Resolved => {
    switch (operand.kind) {
      case 'literal':
        return { text: operand.text, type: operand.type };
      case 'param':
        return { text: paramText(context.params[operand.index]), type: 'param', param: operand.index };
      case 'column': {
        const index = columnIndex(operand.column, fields.length, hiddenCount);
        return { text: row[index]!, type: fields[index]!.dataTypeID };
      }
      default: {
        const never: never = operand;
        throw new Error(`unknown operand ${String(never)}`);
      }
    }
  };
  switch (condition.kind) {
    case 'and': {
      let result: boolean | null = true;
      for (const arg of condition.args) {
        const v = evaluate(arg, row, fields, hiddenCount, context, casts);
        if (v === false) return false;
        if (v === null) result = null;
      }
      return result;
    }
    case 'or': {
      let result: boolean | null = false;
      for (const arg of condition.args) {
        const v = evaluate(arg, row, fields, hiddenCount, context, casts);
        if (v === true) return true;
        if (v === null) result = null;
      }
      return result;
    }
    case 'not': {
      const v = evaluate(condition.arg, row, fields, hiddenCount, context, casts);
      return v === null ? null : !v;
    }
    case 'is_null': {
      const isNull = value(condition.arg).text === null;
      return condition.negated ? !isNull : isNull;
    }
    case 'truth': {
      const { text } = value(condition.arg);
      return text === null ? null : text === 't' || text === 'true';
    }
    case 'compare': {
      const order = compareValues(value(condition.left), value(condition.right), context.textOrder, casts);
      if (order === null) return null;
      switch (condition.op) {
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
          const never: never = condition.op;
          throw new Error(`unknown operator ${String(never)}`);
        }
      }
    }
    case 'between': {
      const arg = value(condition.arg);
      const low = compareValues(arg, value(condition.low), context.textOrder, casts);
      const high = compareValues(arg, value(condition.high), context.textOrder, casts);
      // x BETWEEN a AND b is x >= a AND x <= b, with three-valued AND.
      const geLow = low === null ? null : low >= 0;
      const leHigh = high === null ? null : high <= 0;
      const inside = geLow === false || leHigh === false ? false : geLow === null || leHigh === null ? null : true;
      return inside === null ? null : condition.negated ? !inside : inside;
    }
    default: {
      const never: never = condition;
      throw new Error(`unknown condition ${String(never)}`);
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
  if (!compare) throw new ShardRouterError('UNSUPPORTED', `broadcast cannot evaluate a HAVING comparison on values of type ${typed} in the router`);
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
