import { ShardRouterError } from '../errors.js';
import type { FieldDef, QueryResultRow, ShardQueryResult } from '../pool/session.js';

/**
 * The stored form of an idempotent `execute`'s result: rows, rowCount, command and fields, as
 * JSON in which the values the driver produces beyond JSON keep their type: a Date (timestamp
 * columns), a Buffer (bytea), a bigint, a non-finite number, arrays of those. Every other
 * object must be plain (json/jsonb values, points); anything else (an interval object, say) is
 * refused before the statement commits: cast it to text in the SQL.
 *
 * A cell is stored as itself when it is null, a string, a boolean or a finite number, and
 * otherwise as a one-key object naming its type, so a stored object is never ambiguous.
 */

interface StoredResult {
  readonly rows: unknown[][];
  readonly columns: string[];
  readonly rowCount: number | null;
  readonly command: string;
  readonly fields: FieldDef[];
}

type Cell = null | string | boolean | number | { readonly [tag: string]: unknown };

export function encodeExecuteResult(result: ShardQueryResult): string {
  const columns = result.fields.length > 0 ? result.fields.map((field) => field.name) : Object.keys(result.rows[0] ?? {});
  const rows = result.rows.map((row) => columns.map((column) => encodeCell(row[column], column)));
  const fields = result.fields.map((field) => ({ ...field }));
  const stored: StoredResult = { rows, columns, rowCount: result.rowCount, command: result.command, fields };
  return JSON.stringify(stored);
}

export function decodeExecuteResult<R extends QueryResultRow>(text: string, shardId: string): ShardQueryResult<R> {
  const stored = JSON.parse(text) as StoredResult;
  const rows = stored.rows.map((cells) => {
    const row: Record<string, unknown> = {};
    stored.columns.forEach((column, index) => {
      row[column] = decodeCell(cells[index] as Cell);
    });
    return row as R;
  });
  return { rows, rowCount: stored.rowCount, fields: stored.fields, command: stored.command, shardId };
}

function encodeCell(value: unknown, column: string): Cell {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return Number.isFinite(value) ? value : { n: String(value) };
    case 'bigint':
      return { i: value.toString() };
    case 'object':
      return encodeObject(value, column);
    default:
      throw unstorable(column, typeof value);
  }
}

function encodeObject(value: object, column: string): Cell {
  if (value instanceof Date) return { d: Number.isNaN(value.getTime()) ? null : value.toISOString() };
  if (value instanceof Uint8Array) return { b: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (Array.isArray(value)) return { a: value.map((item) => encodeCell(item, column)) };
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) throw unstorable(column, proto?.constructor?.name ?? 'object');
  // json / jsonb values (JSON.parse made them) and plain geometric objects.
  return { j: value };
}

function decodeCell(cell: Cell): unknown {
  if (cell === null || typeof cell !== 'object') return cell;
  if ('d' in cell) return new Date(cell.d === null ? Number.NaN : (cell.d as string));
  if ('b' in cell) return Buffer.from(cell.b as string, 'base64');
  if ('a' in cell) return (cell.a as Cell[]).map(decodeCell);
  if ('i' in cell) return BigInt(cell.i as string);
  if ('n' in cell) return Number(cell.n);
  return cell.j;
}

function unstorable(column: string, type: string): ShardRouterError {
  return new ShardRouterError(
    'INVALID_ARGUMENT',
    `column "${column}" holds a ${type}, which an idempotent execute cannot store for replay; cast it to text in the SQL. Nothing was committed`,
  );
}
