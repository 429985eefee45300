import type { BucketMap } from '../placement/bucket-map.js';
import type { ShardPool } from '../pool/shard-pool.js';
import type { RegisteredTable } from '../catalog/registries.js';
import { q, quoteIdent } from '../sql.js';
import type { RebalanceContext } from './context.js';

/** Rows of a sharded table on a shard that does not own their bucket. */
export interface MisplacedRows {
  readonly table: string;
  readonly shardId: string;
  readonly bucket: number;
  /** The shard that owns the bucket. */
  readonly owner: string;
  readonly rows: number;
  /** Up to five of their shard keys. */
  readonly sampleKeys: readonly string[];
}

/** A reference table whose copy on some shard differs from the first shard's. */
export interface DivergentReferenceTable {
  readonly table: string;
  /** Row count and content digest per shard. */
  readonly shards: readonly { readonly shardId: string; readonly rows: number; readonly digest: string }[];
}

export interface VerifyReport {
  readonly mapVersion: number;
  readonly tablesChecked: number;
  /** Rows per shard per sharded table (all rows, placed or not). */
  readonly rowCounts: Readonly<Record<string, Readonly<Record<string, number>>>>;
  readonly misplaced: readonly MisplacedRows[];
  readonly divergent: readonly DivergentReferenceTable[];
  /** Moves that are not finished (a rebalance to resume); their rows are legitimately on two shards. */
  readonly openMoves: number;
  /** Removed shards that could not be asked (their rows take no part in any answer). */
  readonly unreachable: readonly { readonly shardId: string; readonly error: string }[];
  /** True when nothing is misplaced or divergent. */
  readonly ok: boolean;
}

type Unreachable = { shardId: string; error: string };

/**
 * Checks the whole cluster: placement on every shard it ever had (removed ones too: rows left
 * there are misplaced, and a move from there may be open) and the open moves. A removed shard
 * that cannot be reached is listed, not fatal: its data takes no part in any answer.
 */
export async function verifyCluster(context: RebalanceContext): Promise<VerifyReport> {
  const map = await context.refresh();
  const members = context.shardIds();
  const { reachable, unreachable, openMoves } = await countOpenMoves(context, members);
  const placement = await verifyPlacement(map, context.tables, reachable, members, (id) => context.pool(id), context.config.catalogSchema);
  return { ...placement, openMoves, unreachable, ok: placement.misplaced.length === 0 && placement.divergent.length === 0 };
}

/** Open moves on every shard the cluster has had, and which of those shards could be reached. */
async function countOpenMoves(
  context: RebalanceContext,
  members: readonly string[],
): Promise<{ reachable: string[]; unreachable: Unreachable[]; openMoves: number }> {
  const unreachable: Unreachable[] = [];
  const reachable: string[] = [];
  let openMoves = 0;
  for (const shardId of context.knownShardIds()) {
    try {
      const { rows } = await context
        .pool(shardId)
        .query<{ open: string }>(
          `SELECT count(*)::text AS open FROM "${context.config.catalogSchema}".moves WHERE state IN ('copying', 'switched')`,
          [],
        );
      openMoves += Number(rows[0]?.open ?? 0);
      reachable.push(shardId);
    } catch (error) {
      if (members.includes(shardId)) throw error;
      unreachable.push({ shardId, error: error instanceof Error ? error.message : String(error) });
    }
  }
  return { reachable, unreachable, openMoves };
}

/**
 * Checks placement: every row of every sharded table, on every shard in `shardIds` (removed ones
 * included), must live on the shard that owns its
 * bucket (computed in SQL by the same MurmurHash3 as the router), and every reference table
 * must be identical on all shards (row count and an md5 over the rows' text in a fixed order).
 */
export async function verifyPlacement(
  map: BucketMap,
  tables: readonly RegisteredTable[],
  shardIds: readonly string[],
  /** The shards whose reference tables must agree (the members; a removed shard keeps a stale copy). */
  referenceShardIds: readonly string[],
  pool: (shardId: string) => ShardPool,
  schema: string,
): Promise<Omit<VerifyReport, 'openMoves' | 'ok' | 'unreachable'>> {
  const misplaced: MisplacedRows[] = [];
  const divergent: DivergentReferenceTable[] = [];
  const rowCounts: Record<string, Record<string, number>> = {};
  for (const table of tables) {
    if (table.kind === 'sharded') {
      const key = quoteIdent(table.shardKey!);
      const counts: Record<string, number> = {};
      await Promise.all(
        shardIds.map(async (shardId) => {
          const { rows } = await pool(shardId).query<{ bucket: number; rows: string; sample: string[] }>(
            `SELECT b AS bucket, count(*)::text AS rows, (array_agg(k ORDER BY k))[1:5] AS sample
               FROM (SELECT ${q(schema)}.bucket_of(${key}::text, ${map.bucketCount}) AS b, ${key}::text AS k FROM ${table.table}) placed
              GROUP BY b`,
            [],
          );
          let total = 0;
          for (const row of rows) {
            total += Number(row.rows);
            const owner = map.ownerOf(row.bucket);
            if (owner !== shardId) {
              misplaced.push({ table: table.table, shardId, bucket: row.bucket, owner, rows: Number(row.rows), sampleKeys: row.sample });
            }
          }
          counts[shardId] = total;
        }),
      );
      rowCounts[table.table] = counts;
    } else {
      const digests = await Promise.all(
        referenceShardIds.map(async (shardId) => {
          const { rows } = await pool(shardId).query<{ rows: string; digest: string | null }>(
            `SELECT count(*)::text AS rows, md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')) AS digest FROM ${table.table} r`,
            [],
          );
          return { shardId, rows: Number(rows[0]!.rows), digest: rows[0]!.digest ?? '' };
        }),
      );
      if (new Set(digests.map((entry) => entry.digest)).size > 1) divergent.push({ table: table.table, shards: digests });
    }
  }
  misplaced.sort((a, b) => (a.table < b.table ? -1 : a.table > b.table ? 1 : a.bucket - b.bucket));
  return { mapVersion: map.version, tablesChecked: tables.length, rowCounts, misplaced, divergent };
}
