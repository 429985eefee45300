/**
 * Quoting for the SQL this library builds. Values always travel as parameters; these are for the
 * identifiers and constants of our own DDL and catalog queries. The catalog schema name is
 * validated by the config (a plain identifier), so quoting it is enough; any other name goes
 * through quoteIdent, which follows PostgreSQL's quote_ident.
 */

/** The catalog schema, quoted (it is validated at config time). */
export function q(schema: string): string {
  return `"${schema}"`;
}

/** An identifier quoted the way PostgreSQL's quote_ident does (always quoted here). */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** A SQL string literal of internal text (e.g. table names as the registry stores them). */
export function sqlString(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}
