import pg from 'pg';
import type { FieldDef, QueryResultRow } from './session.js';

/**
 * Rows as raw text: what exact merging needs (every value in the server's own text form), and
 * the parsing the driver would have done, applied once the merge is over.
 */

/** A row of raw text values, by column (null for NULL). */
export type RawRow = (string | null)[];

/** pg type parsing turned off: every value stays the server's text, for exact merging. */
export const RAW_TEXT = { getTypeParser: () => (text: string) => text };

/** Parses raw rows into objects the way pg.Client does for the same fields. */
export function parseRows<R extends QueryResultRow>(rows: readonly RawRow[], fields: readonly FieldDef[]): R[] {
  const parsers = fields.map((field) => pg.types.getTypeParser(field.dataTypeID, 'text') as (text: string) => unknown);
  const names = fields.map((field) => field.name);
  const out = new Array<R>(rows.length);
  for (let r = 0; r < rows.length; r++) {
    const raw = rows[r]!;
    const row: Record<string, unknown> = {};
    for (let c = 0; c < names.length; c++) {
      const value = raw[c];
      row[names[c]!] = value === null || value === undefined ? null : parsers[c]!(value);
    }
    out[r] = row as R;
  }
  return out;
}
