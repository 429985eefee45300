import type { FieldDef } from '../../pool/session.js';
import { ShardRouterError } from '../../errors.js';
import { columnIndex } from '../plan/plan.js';
import type { ColumnRef, ColumnRole, SelectPlan } from '../plan/plan.js';
import { OID } from '../values/oid.js';
import type { TextOrder } from '../values/order.js';
import {
  averageFromPartials,
  boolAndPartials,
  boolOrPartials,
  countPartials,
  maxPartials,
  minPartials,
  sumPartials,
} from '../values/partials.js';
import { equalityKeyFor, hasEqualityKey } from '../values/text-forms.js';
import type { MergeContext, ShardRows } from './merge.js';
import { rankComparator, textOrderOf } from './row-order.js';
import type { RawRow, ServerRanker } from './row-order.js';

/** One group: its first shard row (keys and group-determined values) and each column's partials. */
interface Group {
  readonly first: RawRow;
  readonly partials: RawRow[];
}

/** What combining a group's partials needs, the same for every group. */
interface Columns {
  readonly roles: readonly ColumnRole[];
  readonly fields: readonly FieldDef[];
  readonly oids: readonly number[];
  readonly hiddenCount: number;
  readonly textOrder: TextOrder;
}

type MinMaxRole = Extract<ColumnRole, { kind: 'min' | 'max' }>;

/** Combines the shards' partial aggregates, one merged row per group. */
export async function combineGroups(
  plan: SelectPlan,
  roles: readonly ColumnRole[],
  results: readonly ShardRows[],
  fields: FieldDef[],
  context: MergeContext,
): Promise<{ rows: RawRow[]; fields: FieldDef[] }> {
  const oids = fields.map((field) => field.dataTypeID);
  const groups = groupPartials(results, groupKeyColumns(roles, fields), oids, fields.length);
  if (plan.aggregate!.ungrouped && groups.length === 0) {
    // Every shard answers an ungrouped aggregate with one row; none can be here only if none answered.
    throw new Error('no shard returned the row of an ungrouped aggregate');
  }
  const columns: Columns = { roles, fields, oids, hiddenCount: plan.hidden.length, textOrder: context.textOrder };
  const outFields = [...fields];
  const serverOrdered = new Set<number>();
  const merged = groups.map((group) => combineGroup(group, columns, outFields, serverOrdered));
  // min/max of types or collations JS cannot order: one server ranking per column, all groups at once.
  for (const column of serverOrdered) {
    await pickByServerRank(context.ranker, oids[column]!, roles[column] as MinMaxRole, groups, column, merged);
  }
  return { rows: merged, fields: outFields };
}

/** The GROUP BY columns; UNSUPPORTED for a type whose equal values can print differently. */
function groupKeyColumns(roles: readonly ColumnRole[], fields: readonly FieldDef[]): number[] {
  const keyColumns = roles.flatMap((role, i) => (role.kind === 'key' ? [i] : []));
  for (const i of keyColumns) {
    const oid = fields[i]!.dataTypeID;
    if (!hasEqualityKey(oid)) {
      throw new ShardRouterError(
        'UNSUPPORTED',
        `broadcast cannot merge GROUP BY on column "${fields[i]!.name}" exactly across shards: equal values of its type (${oid}) can print differently`,
      );
    }
  }
  return keyColumns;
}

/** The shards' rows gathered by group key, groups in order of first appearance. */
function groupPartials(results: readonly ShardRows[], keyColumns: readonly number[], oids: readonly number[], width: number): Group[] {
  const keyOf = keyColumns.map((i) => equalityKeyFor(oids[i]!));
  const groups = new Map<string, Group>();
  for (const result of results) {
    for (const row of result.rows) {
      const key = equalityRowKey(row, keyColumns, keyOf);
      let group = groups.get(key);
      if (!group) {
        group = { first: row, partials: Array.from({ length: width }, () => []) };
        groups.set(key, group);
      }
      for (let c = 0; c < width; c++) group.partials[c]!.push(row[c]!);
    }
  }
  return [...groups.values()];
}

/**
 * A row's key over `columns`, equal for two rows iff PostgreSQL's `=` holds column by column
 * (`keyOf` gives each column's equality key). JSON-like quoting keeps ('a,b') and ('a','b')
 * apart; \u0000 marks NULL (one group, as in SQL).
 */
export function equalityRowKey(row: RawRow, columns: readonly number[], keyOf: readonly ((text: string) => string)[]): string {
  let key = '';
  for (let k = 0; k < columns.length; k++) {
    const value = row[columns[k]!]!;
    key += value === null ? '\u0000,' : `${JSON.stringify(keyOf[k]!(value))},`;
  }
  return key;
}

/**
 * One merged row: each column combined by its role. A min/max whose type or collation JS cannot
 * order is left to the server and its column added to `serverOrdered`; an avg sets its column's
 * final type in `outFields`.
 */
function combineGroup(group: Group, columns: Columns, outFields: FieldDef[], serverOrdered: Set<number>): RawRow {
  const { roles, fields, oids } = columns;
  const row: RawRow = [...group.first];
  for (let c = 0; c < fields.length; c++) {
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
      case 'sum':
        row[c] = sumOrThrow(oids[c]!, partials, fields[c]!.name);
        break;
      case 'min':
      case 'max': {
        const textOrder = textOrderOf(role.collation, columns.textOrder);
        const value = role.kind === 'min' ? minPartials(oids[c]!, partials, textOrder) : maxPartials(oids[c]!, partials, textOrder);
        if (value === undefined) serverOrdered.add(c);
        else row[c] = value;
        break;
      }
      case 'bool_and':
        row[c] = boolAndPartials(partials);
        break;
      case 'bool_or':
        row[c] = boolOrPartials(partials);
        break;
      case 'avg':
        row[c] = combineAverage(group, c, role.count, columns, outFields);
        break;
      default: {
        const never: never = role;
        throw new Error(`unknown role ${String(never)}`);
      }
    }
  }
  return row;
}

/** avg = the summed sums / the summed counts of its helper column, typed as one server's avg. */
function combineAverage(group: Group, c: number, count: ColumnRef, columns: Columns, outFields: FieldDef[]): string | null {
  const { fields, oids } = columns;
  const countColumn = columnIndex(count, fields.length, columns.hiddenCount);
  const sum = sumOrThrow(oids[c]!, group.partials[c]!, fields[c]!.name);
  const average = averageFromPartials(oids[c]!, sum, countPartials(group.partials[countColumn]!));
  if (!average) throw unsupportedType('avg', fields[c]!.name, oids[c]!);
  outFields[c] = { ...fields[c]!, dataTypeID: average.oid, dataTypeSize: average.oid === OID.numeric ? -1 : 8, dataTypeModifier: -1 };
  return average.value;
}

/** Sets `column` of every merged row to its group's min or max under the server's ranking of all the groups' partials. */
async function pickByServerRank(
  ranker: ServerRanker,
  oid: number,
  role: MinMaxRole,
  groups: readonly Group[],
  column: number,
  merged: RawRow[],
): Promise<void> {
  const partialRows = groups.flatMap((group) => group.partials[column]!.map((value) => [value]));
  const compare = await rankComparator(ranker, oid, role.collation, partialRows, 0);
  groups.forEach((group, g) => {
    let best: string | null = null;
    for (const value of group.partials[column]!) {
      if (value === null) continue;
      if (best === null || (role.kind === 'min' ? compare(value, best) < 0 : compare(value, best) > 0)) best = value;
    }
    merged[g]![column] = best;
  });
}

function sumOrThrow(oid: number, partials: RawRow, column: string): string | null {
  let sum: string | null | undefined;
  try {
    sum = sumPartials(oid, partials);
  } catch (error) {
    // int8 overflow: what PostgreSQL itself reports as 22003 numeric_value_out_of_range.
    throw new ShardRouterError(
      'QUERY_FAILED',
      `sum of column "${column}" across shards: ${error instanceof Error ? error.message : String(error)}`,
      {
        cause: error,
      },
    );
  }
  if (sum === undefined) throw unsupportedType('sum', column, oid);
  return sum;
}

function unsupportedType(aggregate: string, column: string, oid: number): ShardRouterError {
  return new ShardRouterError(
    'UNSUPPORTED',
    `broadcast cannot merge ${aggregate} over values of type ${oid} (column "${column}") exactly across shards`,
  );
}
