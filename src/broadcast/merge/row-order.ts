import { ShardRouterError } from '../../errors.js';
import { columnIndex } from '../plan/plan.js';
import type { SortKey } from '../plan/plan.js';
import { comparatorFor } from '../values/order.js';
import type { TextComparator, TextOrder } from '../values/order.js';

/** A shard row as the server sent it: text forms by column, null for NULL. */
export type RawRow = (string | null)[];

/**
 * Asks a server to order values PostgreSQL's way, for types or collations JS cannot reproduce
 * (text under an ICU or libc locale, intervals, ...): returns a dense rank per distinct value.
 */
export type ServerRanker = (oid: number, collation: string | undefined, values: readonly string[]) => Promise<ReadonlyMap<string, number>>;

/** Collations whose order is plain Unicode code point order (byte order of UTF-8). */
const CODE_POINT_COLLATIONS = new Set([
  '"C"',
  '"POSIX"',
  '"ucs_basic"',
  '"pg_c_utf8"',
  '"pg_catalog"."C"',
  '"pg_catalog"."POSIX"',
  '"pg_catalog"."ucs_basic"',
]);

/** The text order a sort key needs: an explicit COLLATE decides, else the database default. */
export function textOrderOf(collation: string | undefined, databaseOrder: TextOrder): TextOrder {
  if (collation === undefined) return databaseOrder;
  return CODE_POINT_COLLATIONS.has(collation) ? 'codepoint' : 'server';
}

/** One sort key bound to a concrete column and value comparator. */
interface BoundKey {
  readonly index: number;
  readonly compare: TextComparator;
  readonly direction: 1 | -1;
  /** Where a NULL goes relative to any value: -1 first, 1 last. */
  readonly nullOrder: -1 | 1;
}

/**
 * A row comparator equal to PostgreSQL's ORDER BY for these keys. Where JS has no exact
 * comparator for a column, the server ranks the values of the rows `rankRows` gives (called only
 * then, so the common path builds nothing); without it (a stream, whose rows are not all known
 * yet) that is UNSUPPORTED.
 */
export async function rowComparator(
  keys: readonly SortKey[],
  oids: readonly number[],
  hiddenCount: number,
  databaseOrder: TextOrder,
  ranker: ServerRanker | undefined,
  rankRows: (() => readonly RawRow[]) | undefined,
): Promise<(a: RawRow, b: RawRow) => number> {
  const bound: BoundKey[] = [];
  for (const key of keys) {
    const index = columnIndex(key.column, oids.length, hiddenCount);
    const oid = oids[index];
    if (oid === undefined || index < 0) throw new ShardRouterError('INVALID_ARGUMENT', `ORDER BY ${key.text}: no such output column`);
    let compare = comparatorFor(oid, textOrderOf(key.collation, databaseOrder));
    if (!compare) {
      if (!ranker || !rankRows) {
        throw new ShardRouterError(
          'UNSUPPORTED',
          `broadcast cannot merge ORDER BY ${key.text} in a stream: values of type ${oid} under this collation are ordered by the server only. ` +
            'Add COLLATE "C", or use broadcast() instead of broadcastStream()',
        );
      }
      compare = await rankComparator(ranker, oid, key.collation, rankRows(), index);
    }
    bound.push({ index, compare, direction: key.descending ? -1 : 1, nullOrder: key.nullsFirst ? -1 : 1 });
  }
  return (a, b) => {
    for (const key of bound) {
      const x = a[key.index]!;
      const y = b[key.index]!;
      if (x === y) continue;
      if (x === null) return key.nullOrder;
      if (y === null) return -key.nullOrder;
      const order = key.compare(x, y);
      if (order !== 0) return order * key.direction;
    }
    return 0;
  };
}

/** Orders a column by ranks the server gives its distinct values. */
export async function rankComparator(
  ranker: ServerRanker,
  oid: number,
  collation: string | undefined,
  rows: readonly RawRow[],
  index: number,
): Promise<TextComparator> {
  const values = new Set<string>();
  for (const row of rows) {
    const value = row[index];
    if (value !== null && value !== undefined) values.add(value);
  }
  const ranks = await ranker(oid, collation, [...values]);
  return (a, b) => ranks.get(a)! - ranks.get(b)!;
}
