import type { ShardSession } from '../pool/session.js';

/** A prepared transaction as the server lists it. */
export interface PreparedTransactionInfo {
  readonly gid: string;
  /** Since PREPARE, by the shard's clock. Prepared transactions hold locks and the vacuum horizon. */
  readonly ageMillis: number;
  readonly owner: string;
  /** True when the gid is this cluster's (recovery will settle it); others are left alone. */
  readonly ours: boolean;
}

/** Every prepared transaction of the shard's current database. */
export async function listAllPrepared(session: ShardSession, prefix: string): Promise<PreparedTransactionInfo[]> {
  const { rows } = await session.query<{ gid: string; age_ms: string; owner: string; ours: boolean }>(
    `SELECT gid, owner, starts_with(gid, $1) AS ours, floor(extract(epoch FROM now() - prepared) * 1000)::bigint::text AS age_ms
       FROM pg_prepared_xacts
      WHERE database = current_database()
      ORDER BY prepared`,
    [prefix],
  );
  return rows.map((row) => ({ gid: row.gid, ageMillis: Number(row.age_ms), owner: row.owner, ours: row.ours }));
}
