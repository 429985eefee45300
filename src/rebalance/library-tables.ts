import type { CatalogExtension } from '../catalog/catalog.js';
import { describeTable } from '../catalog/registries.js';
import type { TableKind } from '../catalog/registries.js';
import type { Queryable } from '../pool/session.js';
import { q, quoteIdent } from '../sql.js';
import { captureFunctionDdl, fenceTriggerName } from './schema.js';

/** One table the library keeps in the catalog schema, registered like an application's. */
export interface LibraryTable {
  /** The table's name inside the catalog schema. */
  readonly name: string;
  readonly kind: TableKind;
  /** The shard-key column (sharded tables). */
  readonly keyColumn?: string;
}

/**
 * A catalog extension for tables the library itself keeps per key (idempotency records, the
 * saga log, the outbox): it creates them with `ddl` and registers them in the shard's table
 * registry with the fence trigger and, for sharded ones, the move-capture function, exactly
 * what `registerShardedTable` / `registerReferenceTable` install. So moves carry their rows and
 * the write fence guards them. Runs on every shard at connect (under the catalog lock) and on a
 * shard being added, in one local transaction; cheap when everything is there.
 */
export function libraryTablesExtension(
  name: string,
  tables: readonly LibraryTable[],
  ddl: (schema: string) => readonly string[],
): CatalogExtension {
  return {
    name,
    async ensure(session, schema) {
      if (await registered(session, schema, tables)) return;
      await session.query('BEGIN');
      try {
        for (const statement of ddl(schema)) await session.query(statement);
        for (const table of tables) await register(session, schema, table);
        await session.query('COMMIT');
      } catch (error) {
        await session.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    },
  };
}

async function registered(session: Queryable, schema: string, tables: readonly LibraryTable[]): Promise<boolean> {
  const { rows } = await session.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${q(schema)}.tables
      WHERE table_name = ANY (ARRAY(SELECT format('%I.%I', $1::text, t) FROM unnest($2::text[]) AS t))`,
    [schema, tables.map((table) => table.name)],
  );
  return rows[0]?.n === tables.length;
}

async function register(session: Queryable, schema: string, table: LibraryTable): Promise<void> {
  const shape = await describeTable(session, `${q(schema)}.${quoteIdent(table.name)}`);
  if (!shape) throw new Error(`${schema}.${table.name} was not created`);
  const keyColumn = table.kind === 'sharded' ? table.keyColumn! : null;
  await session.query(
    `INSERT INTO ${q(schema)}.tables (table_name, kind, key_column) VALUES ($1, $2, $3) ON CONFLICT (table_name) DO NOTHING`,
    [shape.name, table.kind, keyColumn],
  );
  if (keyColumn !== null) {
    const identity = await session.query<{ bucket_count: number }>(`SELECT bucket_count FROM ${q(schema)}.shard_identity`);
    const bucketCount = identity.rows[0]?.bucket_count;
    if (bucketCount === undefined) throw new Error('the shard has no identity yet');
    await session.query(captureFunctionDdl(schema, shape.oid, shape.name, keyColumn, bucketCount));
  }
  await session.query(
    `CREATE OR REPLACE TRIGGER ${fenceTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${shape.name}
       FOR EACH STATEMENT EXECUTE FUNCTION ${q(schema)}.write_fence()`,
  );
}
