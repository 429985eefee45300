import { createRequire } from 'node:module';
import pg from 'pg';
import type { QueryResult } from 'pg';
import { RAW_TEXT } from './raw-text.js';

/** pg's own parameter conversion (what its Query applies to values), so a preamble statement's values travel exactly as a query's. */
const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue(value: unknown): unknown };

/** A statement sent before the pipeline's last one: parameterless text, or text with its values. */
export type PipelinedStatement = string | { readonly text: string; readonly values: readonly unknown[] };

/** The parts of pg's Connection that a submittable drives (the same ones pg-cursor uses). */
interface ProtocolConnection {
  parse(config: { text: string; name?: string; types?: unknown[] }): void;
  bind(config: { portal?: string; statement?: string; values?: readonly unknown[] }): void;
  describe(config: { type: 'P' | 'S'; name?: string }): void;
  execute(config: { portal?: string; rows?: number }): void;
}

interface PgQueryInstance {
  prepare(connection: ProtocolConnection): void;
}

const PgQuery = pg.Query as unknown as new (config: {
  text: string;
  values: unknown[];
  queryMode: 'extended';
  rowMode?: 'array';
  types?: typeof RAW_TEXT;
  callback: (error: Error | null, results: QueryResult | QueryResult[]) => void;
}) => PgQueryInstance;

/**
 * Several statements in one round trip: preamble statements (parameterless, or with their own
 * values), then one parameterized statement, as one extended-protocol pipeline with a single
 * Sync. It opens a transaction and runs its first statement for the price of one round trip,
 * the way JDBC sends BEGIN with the first query, and it carries writes deferred to ride with a
 * later statement (tx.publish). If a statement fails, the server skips the rest up to the Sync
 * and the call rejects, so the statement never runs outside the transaction its preamble
 * opened, and a COMMIT after a failed write is never executed (with one Sync per statement it
 * would be, answered with the tag ROLLBACK instead of an error).
 *
 * pg's Query already collects one result per statement; this only adds the preamble messages
 * before pg's own Parse/Bind/Describe/Execute/Sync.
 */
export class PipelinedQuery extends PgQuery {
  readonly #preamble: readonly { readonly text: string; readonly values: readonly unknown[] }[];

  constructor(
    preamble: readonly PipelinedStatement[],
    text: string,
    values: unknown[],
    callback: (error: Error | null, results: QueryResult[]) => void,
    raw = false,
  ) {
    super({
      text,
      values,
      queryMode: 'extended',
      ...(raw ? { rowMode: 'array' as const, types: RAW_TEXT } : {}),
      callback: (error, results) => callback(error, Array.isArray(results) ? results : [results]),
    });
    // Converted here, before anything is sent: a value pg cannot convert throws from the constructor.
    this.#preamble = preamble.map((statement) =>
      typeof statement === 'string'
        ? { text: statement, values: [] }
        : { text: statement.text, values: statement.values.map(prepareValue) },
    );
  }

  override prepare(connection: ProtocolConnection): void {
    for (const { text, values } of this.#preamble) {
      connection.parse({ text });
      connection.bind({ values });
      connection.describe({ type: 'P' });
      connection.execute({});
    }
    super.prepare(connection);
  }
}
