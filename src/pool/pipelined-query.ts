import { createRequire } from 'node:module';
import pg from 'pg';
import type { QueryResult } from 'pg';
import { RAW_TEXT } from './raw-text.js';

/** pg's own parameter conversion (what its Query applies to values), so a preamble statement's values travel exactly as a query's. */
const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue(value: unknown): unknown };

/**
 * A statement sent before the pipeline's last one: parameterless text, or text with its values.
 * With a `name`, the statement is prepared once per connection under that name (Parse sent the
 * first time, only Bind later): for a statement sent on every transaction (tx.publish), so the
 * server parses and plans it once per connection instead of each time.
 */
export type PipelinedStatement = string | { readonly text: string; readonly values: readonly unknown[]; readonly name?: string };

/**
 * Per connection, the named statements known to be prepared on its server session: recorded
 * only after a pipeline that parsed them succeeded (so their ParseComplete arrived), forgotten
 * after any failed pipeline. A statement not recorded is closed and parsed again (closing one
 * that does not exist is no error), so a Parse skipped by an earlier failure or a DEALLOCATE
 * on the session costs at most the one pipeline that failed on it.
 */
const preparedByConnection = new WeakMap<object, Set<string>>();

/** The parts of pg's Connection that a submittable drives (the same ones pg-cursor uses). */
interface ProtocolConnection {
  parse(config: { text: string; name?: string; types?: unknown[] }): void;
  close(config: { type: 'S' | 'P'; name?: string }): void;
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
  readonly #preamble: readonly { readonly text: string; readonly values: readonly unknown[]; readonly name?: string }[];
  /** The connection this pipeline was sent on and the named statements it parsed (see preparedByConnection). */
  #sent: { readonly connection: object; readonly parsed: readonly string[] } | undefined;

  constructor(
    preamble: readonly PipelinedStatement[],
    text: string,
    values: unknown[],
    callback: (error: Error | null, results: QueryResult[]) => void,
    raw = false,
  ) {
    // The callback runs after construction, but `this` cannot be named before super().
    let settle: (ok: boolean) => void = () => undefined;
    super({
      text,
      values,
      queryMode: 'extended',
      ...(raw ? { rowMode: 'array' as const, types: RAW_TEXT } : {}),
      callback: (error, results) => {
        settle(error === null);
        callback(error, Array.isArray(results) ? results : [results]);
      },
    });
    settle = (ok) => this.#settle(ok);
    // Converted here, before anything is sent: a value pg cannot convert throws from the constructor.
    this.#preamble = preamble.map((statement) =>
      typeof statement === 'string'
        ? { text: statement, values: [] }
        : { text: statement.text, values: statement.values.map(prepareValue), ...(statement.name ? { name: statement.name } : {}) },
    );
  }

  override prepare(connection: ProtocolConnection): void {
    const prepared = preparedByConnection.get(connection);
    const parsed: string[] = [];
    for (const { text, values, name } of this.#preamble) {
      if (name === undefined) {
        connection.parse({ text });
      } else if (!prepared?.has(name) && !parsed.includes(name)) {
        connection.close({ type: 'S', name });
        connection.parse({ text, name });
        parsed.push(name);
      }
      connection.bind(name === undefined ? { values } : { statement: name, values });
      connection.describe({ type: 'P' });
      connection.execute({});
    }
    this.#sent = { connection, parsed };
    super.prepare(connection);
  }

  /** Records the statements this pipeline prepared once it succeeded; after a failure, trusts nothing on that connection. */
  #settle(ok: boolean): void {
    if (!this.#sent) return;
    const { connection, parsed } = this.#sent;
    if (!ok) {
      preparedByConnection.delete(connection);
      return;
    }
    if (parsed.length === 0) return;
    const prepared = preparedByConnection.get(connection) ?? new Set<string>();
    for (const name of parsed) prepared.add(name);
    preparedByConnection.set(connection, prepared);
  }
}
