import type { DedicatedConnection, Queryable } from '../pool/session.js';
import { ShardRouterError } from '../errors.js';
import { q } from '../sql.js';
import type { RebalanceContext } from './context.js';

/**
 * The move row on its source shard (the persisted state of move.ts's state machine) and the
 * move's lease, the advisory lock held by whoever runs it.
 */

/** A move row as stored on its source shard. */
export interface StoredMove {
  readonly moveId: string;
  readonly buckets: number[];
  readonly source: string;
  readonly target: string;
  readonly state: 'copying' | 'switched' | 'done' | 'undone';
  readonly mapVersion: number | null;
}

/** Advisory-lock class of move leases ("PSRM"). */
export const MOVE_LOCK_CLASS = 0x5053524d;

/** Takes a move's lease: held by whoever runs it, released by the server if that process dies. */
export async function takeMoveLease(client: DedicatedConnection, moveId: string): Promise<void> {
  const lease = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', [
    MOVE_LOCK_CLASS,
    moveId,
  ]);
  if (!lease.rows[0]?.locked) throw new ShardRouterError('REBALANCE_CONFLICT', `move ${moveId} is being run by another rebalancer`);
}

/** Gives a move's lease back (before handing the move to runMove, which takes it again). */
export async function releaseMoveLease(client: DedicatedConnection, moveId: string): Promise<void> {
  await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [MOVE_LOCK_CLASS, moveId]);
}

/** Records a new move on its source (state 'copying'). */
export async function recordMove(
  client: DedicatedConnection,
  schema: string,
  moveId: string,
  buckets: readonly number[],
  source: string,
  target: string,
): Promise<void> {
  await client.query(
    `INSERT INTO ${q(schema)}.moves (move_id, buckets, source_shard, target_shard, state) VALUES ($1, $2, $3, $4, 'copying')`,
    [moveId, buckets, source, target],
  );
}

/** Open (copying or switched) moves recorded on one shard. */
export async function readOpenMoves(client: Queryable, schema: string): Promise<StoredMove[]> {
  const { rows } = await client.query<{
    move_id: string;
    buckets: number[];
    source_shard: string;
    target_shard: string;
    state: StoredMove['state'];
    map_version: string | null;
  }>(
    `SELECT move_id, buckets, source_shard, target_shard, state, map_version::text FROM ${q(schema)}.moves WHERE state IN ('copying', 'switched') ORDER BY started_at`,
  );
  return rows.map((row) => ({
    moveId: row.move_id,
    buckets: row.buckets,
    source: row.source_shard,
    target: row.target_shard,
    state: row.state,
    mapVersion: row.map_version === null ? null : Number(row.map_version),
  }));
}

/**
 * Open moves on every shard the cluster has had: a move's row lives on its source, which may
 * own no buckets any more (removeShard's last move). A removed shard that cannot be reached
 * is skipped: it was removed only after its last move closed.
 */
export async function readOpenMovesEverywhere(context: RebalanceContext): Promise<StoredMove[]> {
  const open: StoredMove[] = [];
  const active = new Set(context.shardIds());
  for (const shardId of context.knownShardIds()) {
    const client = context.pool(shardId);
    try {
      const moves = await readOpenMoves(client, context.config.catalogSchema);
      for (const move of moves) open.push(move);
    } catch (error) {
      if (active.has(shardId)) throw error;
    }
  }
  return open;
}
