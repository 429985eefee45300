import { ShardRouterError } from '../errors.js';
import type { BucketMap } from '../placement/bucket-map.js';
import { q, quoteIdent } from '../sql.js';
import type { RebalanceContext, RebalanceRun } from './context.js';
import { runMove } from './move.js';
import { groupMoves, planByCount, planBySize } from './move-plan.js';
import type { BucketMove, PlannedMove } from './move-plan.js';
import { readOpenMovesEverywhere } from './move-record.js';
import type { MoveReport, RebalanceReport } from './types.js';

/**
 * Plans from the live cluster (move-plan.ts has the pure planners) and runs a plan, one move
 * after another, reporting progress over the whole plan.
 */

/** The moves that even out `shardIds` now, grouped into moves of at most bucketsPerMove buckets. */
export async function planMoves(run: RebalanceRun, shardIds: readonly string[], by: 'count' | 'size'): Promise<PlannedMove[]> {
  const map = await run.context.refresh();
  let moves: BucketMove[];
  if (by === 'size') moves = planBySize(map, shardIds, await bucketSizes(run.context, map));
  else if (by === 'count') moves = planByCount(map, shardIds);
  else throw new ShardRouterError('INVALID_ARGUMENT', `by must be 'count' or 'size'`);
  return groupMoves(moves, run.bucketsPerMove);
}

/** Bytes per bucket over every sharded table, read from the owners. */
async function bucketSizes(context: RebalanceContext, map: BucketMap): Promise<Map<number, number>> {
  const sizes = new Map<number, number>();
  const schema = context.config.catalogSchema;
  for (const table of context.tables) {
    if (table.kind !== 'sharded') continue;
    for (const shardId of new Set(map.owners)) {
      const { rows } = await context
        .pool(shardId)
        .query<{ bucket: number; bytes: string }>(
          `SELECT ${q(schema)}.bucket_of(${quoteIdent(table.shardKey!)}::text, ${map.bucketCount}) AS bucket, sum(pg_column_size(t.*))::text AS bytes FROM ${table.table} t GROUP BY 1`,
          [],
        );
      for (const row of rows) sizes.set(row.bucket, (sizes.get(row.bucket) ?? 0) + Number(row.bytes));
    }
  }
  return sizes;
}

/** Runs the plan's moves (none in a dry run) and reports buckets per shard after it (as planned, in a dry run). */
export async function runPlan(run: RebalanceRun, plan: readonly PlannedMove[], dryRun: boolean): Promise<RebalanceReport> {
  const { context } = run;
  const reports = dryRun ? [] : await runMoves(run, plan);
  const map = dryRun ? context.map : await context.refresh();
  const owners = [...map.owners];
  if (dryRun) for (const move of plan) for (const bucket of move.buckets) owners[bucket] = move.target;
  const counts: Record<string, number> = Object.fromEntries(context.shardIds().map((id) => [id, 0]));
  for (const owner of owners) counts[owner] = (counts[owner] ?? 0) + 1;
  return { dryRun, plan, moves: reports, mapVersion: map.version, bucketsPerShard: counts };
}

/** Runs the moves one after another, refusing while moves an earlier rebalancer left open remain. */
async function runMoves(run: RebalanceRun, plan: readonly PlannedMove[]): Promise<MoveReport[]> {
  const open = await readOpenMovesEverywhere(run.context);
  if (open.length > 0) {
    throw new ShardRouterError(
      'REBALANCE_CONFLICT',
      `${open.length} move(s) left open by an earlier rebalancer (e.g. ${open[0]!.moveId}); resume them first (rebalance({ resume: true }) or \`pg-shard-router rebalance --resume\`)`,
    );
  }
  const reports: MoveReport[] = [];
  const bucketsTotal = plan.reduce((sum, move) => sum + move.buckets.length, 0);
  const started = Date.now();
  let bucketsDone = 0;
  let rowsBefore = 0;
  let bytesBefore = 0;
  for (const [index, move] of plan.entries()) {
    const report = await runMove(run.context, move, {
      ...run.moveOptions,
      onProgress: (current) =>
        run.onProgress?.({
          move: index + 1,
          moves: plan.length,
          bucketsDone,
          bucketsTotal,
          rowsCopied: rowsBefore + current.rowsCopied,
          bytesCopied: bytesBefore + current.bytesCopied,
          elapsedMillis: Date.now() - started,
          current,
        }),
    });
    reports.push(report);
    bucketsDone += move.buckets.length;
    rowsBefore += report.rowsCopied;
    bytesBefore += report.bytesCopied;
  }
  return reports;
}
