import type { CatalogExtension } from '../catalog/catalog.js';
import { describeTable } from '../catalog/registries.js';
import type { TableShape } from '../catalog/registries.js';
import type { DedicatedConnection, Queryable } from '../pool/session.js';
import { q } from '../sql.js';
import { captureFunctionDdl, fenceTriggerName } from './schema.js';

/**
 * What bucket moves must know of the distributed locks in `src/lock/` (docs/locks.md). It lives
 * here because lock/ is above rebalance/ in the layers: the advisory-lock namespace, the
 * fencing-token table a move carries like a sharded table, and the bucket gate a cutover closes
 * so that no lock has a holder on the old owner and another on the new one (invariant L1).
 */

/** classid of a lock key's advisory lock: `pg_advisory_lock(LOCK_CLASS_ID, murmur3(key))` ('PSRL'). */
export const LOCK_CLASS_ID = 0x5053524c;
/** classid of a bucket's gate: `pg_advisory_lock_shared(GATE_CLASS_ID, bucket)`, held by every lock holder of the bucket ('PSRG'). */
export const GATE_CLASS_ID = 0x50535247;
/** The fencing-token table's name in the catalog schema, and its key column. */
export const LOCK_TOKENS_TABLE = 'lock_tokens';
export const LOCK_TOKENS_KEY = 'lock_key';

/** The token table, qualified by the catalog schema. */
export function lockTokensTable(schema: string): string {
  return `${q(schema)}.${LOCK_TOKENS_TABLE}`;
}

/**
 * The token table with the write fence and a capture function, like a registered sharded table,
 * on every shard (at connect and on addShard). It is not in the table registry (it is the
 * library's, not the application's); moves carry it through lockTokensShape.
 */
export const lockTokensExtension: CatalogExtension = {
  name: 'lock tokens',
  async ensure(session, schema) {
    const table = lockTokensTable(schema);
    const present = await session.query<{ present: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2) AS present`,
      [table, `${schema}_fence`.slice(0, 63)],
    );
    if (present.rows[0]?.present) return;
    await session.query(`CREATE TABLE IF NOT EXISTS ${table} (${LOCK_TOKENS_KEY} text PRIMARY KEY, token bigint NOT NULL)`);
    const shape = (await describeTable(session, table))!;
    const identity = await session.query<{ bucket_count: number }>(`SELECT bucket_count FROM ${q(schema)}.shard_identity`);
    const bucketCount = identity.rows[0]!.bucket_count;
    await session.query(captureFunctionDdl(schema, shape.oid, shape.name, LOCK_TOKENS_KEY, bucketCount));
    await session.query(
      `CREATE OR REPLACE TRIGGER ${fenceTriggerName(schema)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${table}
         FOR EACH STATEMENT EXECUTE FUNCTION ${q(schema)}.write_fence()`,
    );
  },
};

/** The token table's shape on a shard, or undefined where it is missing (a catalog older than locks). */
export async function lockTokensShape(source: Queryable, schema: string): Promise<TableShape | undefined> {
  return (await describeTable(source, lockTokensTable(schema))) ?? undefined;
}

/**
 * Closes the gates of `buckets` on a move's source (L1 in docs/locks.md): takes each bucket's
 * gate exclusively, in bucket order, on the rebalancer's own connection. That waits for every
 * holder of a lock in those buckets to release it, and new acquirers queue behind it. Waits at
 * most `timeoutMillis` in all; on timeout the gates taken so far are opened again and the lock
 * error (55P03) is thrown. Resolves to the function that opens them (the cutover calls it once
 * the move row is locked, from then on the capture trigger holds new holders back).
 */
export async function closeLockGates(
  connection: DedicatedConnection,
  buckets: readonly number[],
  timeoutMillis: number,
): Promise<() => Promise<void>> {
  const closed: number[] = [];
  const open = async () => {
    for (const bucket of closed.splice(0)) await connection.query('SELECT pg_advisory_unlock($1, $2)', [GATE_CLASS_ID, bucket]);
  };
  const deadline = Date.now() + timeoutMillis;
  // A transaction only so that lock_timeout is SET LOCAL; session locks outlive it either way.
  await connection.query('BEGIN');
  try {
    for (const bucket of [...buckets].sort((a, b) => a - b)) {
      await connection.query("SELECT set_config('lock_timeout', $1, true)", [`${Math.max(1, deadline - Date.now())}ms`]);
      await connection.query('SELECT pg_advisory_lock($1, $2)', [GATE_CLASS_ID, bucket]);
      closed.push(bucket);
    }
    await connection.query('COMMIT');
  } catch (error) {
    await connection.query('ROLLBACK').catch(() => undefined);
    await open().catch(() => undefined);
    throw error;
  }
  return open;
}
