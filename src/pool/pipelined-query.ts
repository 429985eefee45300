import pg from 'pg';
import type { QueryResult } from 'pg';
import { RAW_TEXT } from './raw-text.js';

/** The parts of pg's Connection that a submittable drives (the same ones pg-cursor uses). */
interface ProtocolConnection {
  parse(config: { text: string; name?: string; types?: unknown[] }): void;
  bind(config: { portal?: string; statement?: string; values?: unknown[] }): void;
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
 * Several statements in one round trip: parameterless preamble statements, then one
 * parameterized statement, as one extended-protocol pipeline with a single Sync. It opens a
 * transaction and runs its first statement for the price of one round trip, the way JDBC sends
 * BEGIN with the first query. If a statement fails, the server skips the rest up to the Sync,
 * so the statement never runs outside the transaction its preamble opened.
 *
 * pg's Query already collects one result per statement; this only adds the preamble messages
 * before pg's own Parse/Bind/Describe/Execute/Sync.
 */
export class PipelinedQuery extends PgQuery {
  readonly #preamble: readonly string[];

  constructor(
    preamble: readonly string[],
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
    this.#preamble = preamble;
  }

  override prepare(connection: ProtocolConnection): void {
    for (const text of this.#preamble) {
      connection.parse({ text });
      connection.bind({});
      connection.describe({ type: 'P' });
      connection.execute({});
    }
    super.prepare(connection);
  }
}
