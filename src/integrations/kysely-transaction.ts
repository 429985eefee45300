import { Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler } from 'kysely';
import type { CompiledQuery, DatabaseConnection, Dialect, Driver, KyselyPlugin, QueryResult } from 'kysely';
import { ShardRouterError } from '../errors.js';
import type { ShardKey } from '../placement/hash.js';
import type { Transaction } from '../twopc/coordinator.js';

/**
 * Kysely over one participant of a router transaction: every query Kysely compiles runs as
 * `tx.execute(key, sql, parameters)`, so it belongs to the router's transaction (one commit, or
 * a two-phase commit over several shards). Kysely's own transaction API is refused inside: the
 * router's transaction is the transaction.
 */

const AFFECTING = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);

/** A Kysely instance whose statements run inside `tx` on the shard that owns `key`. */
export function kyselyInTransaction<DB>(tx: Transaction, key: ShardKey, plugins: readonly KyselyPlugin[]): Kysely<DB> {
  return new Kysely<DB>({ dialect: new TransactionDialect(tx, key), plugins: [...plugins] });
}

class TransactionDialect implements Dialect {
  readonly #connection: DatabaseConnection;

  constructor(tx: Transaction, key: ShardKey) {
    this.#connection = {
      executeQuery: async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
        const result = await tx.execute(key, query.sql, query.parameters);
        return {
          rows: result.rows as R[],
          ...(AFFECTING.has(result.command) ? { numAffectedRows: BigInt(result.rowCount ?? 0) } : {}),
        };
      },
      // biome-ignore lint/correctness/useYield: refuses before the first row
      streamQuery: async function* () {
        throw new ShardRouterError('UNSUPPORTED', 'stream() is not available inside router.transaction; select the rows instead');
      },
    };
  }

  createAdapter() {
    return new PostgresAdapter();
  }

  createDriver(): Driver {
    return new TransactionDriver(this.#connection);
  }

  createQueryCompiler() {
    return new PostgresQueryCompiler();
  }

  createIntrospector(db: Kysely<unknown>) {
    return new PostgresIntrospector(db);
  }
}

function nested(): never {
  throw new ShardRouterError(
    'INVALID_ARGUMENT',
    'this Kysely instance already runs inside router.transaction; its own transaction() is not available (use the router transaction)',
  );
}

class TransactionDriver implements Driver {
  readonly #connection: DatabaseConnection;

  constructor(connection: DatabaseConnection) {
    this.#connection = connection;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    return this.#connection;
  }

  async beginTransaction(): Promise<void> {
    nested();
  }

  async commitTransaction(): Promise<void> {
    nested();
  }

  async rollbackTransaction(): Promise<void> {
    nested();
  }

  async releaseConnection(): Promise<void> {}

  async destroy(): Promise<void> {}
}
