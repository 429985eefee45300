import type { ShardRouter } from '../../src/index.js';
import { atLeast, atMost } from '../section.js';
import type { Figure, Section } from '../section.js';
import { formatTable, max, median, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { FENCE_RATIO_TARGET, describeServerLoop, measureFence } from './rebalance-fence.js';
import type { FenceDetails } from './rebalance-fence.js';
import { MAX_PAYLOAD, MB, MIN_PAYLOAD, loadBucket, measureMoves, movePlan } from './rebalance-moves.js';
import type { LoadedBucket, MovePlan, MoveRound } from './rebalance-moves.js';

/**
 * Online rebalancing (docs/rebalance.md) on the bench's local shards, through one router over
 * two of them:
 *
 * 1. Copy rate: one bucket holding ~10 MB of rows (keys found with router.bucketFor) moved with
 *    rebalancer.moveBucket; MB/s = MoveReport.bytesCopied (COPY text) / the copy's time (the
 *    'copying' to 'copied' progress reports: the snapshot piped into the target). First with
 *    nobody writing, then in every round under writers. Just before every move the same rows
 *    are piped the same way round the barest way (the move's SELECT in COPY TO STDOUT into COPY
 *    FROM STDIN of a table like the moving one, autocommit), under the same writers: the
 *    baseline that says how much of the rate is the machine's and how much the rebalancer's.
 *    What follows the copy before the cutover (the catch-up rounds, the wait for the move row's
 *    lock) is reported as its own figure, and with the copy as the copy-to-cutover rate
 *    (bytesCopied / MoveReport.copyMillis).
 * 2. Write pause: while the bucket moves, writers keep sending single-row UPDATEs and INSERTs
 *    to keys of the moving bucket (and UPDATEs to other buckets of the source shard) through
 *    the router; every write's latency is recorded. Each round first runs the same writers for
 *    a while with no move (the baseline, same round), then moves the bucket, back and forth.
 * 3. Fencing cost: the same single-row INSERTs through router.execute into a registered table
 *    (statement fence trigger) and into an identical unregistered one, interleaved rounds. Then
 *    two finer looks, since round-to-round noise on a shared machine is larger than the effect:
 *    one closed loop whose statements alternate between the tables (A B B A ...), so both see
 *    exactly the same noise, compared by mean latency; and the same INSERTs in a server-side
 *    loop (DO) on a router connection (which carries its map version): the trigger's own cost
 *    without the round trip, once with a COMMIT after every INSERT (as router.execute's
 *    autocommit INSERTs; synchronous_commit off for the loop's transactions, so no WAL flush
 *    drowns the difference) and once with all INSERTs in one transaction.
 *
 * The moves go back and forth an even number of times, so the bucket ends on the shard that
 * owned it at the start: the catalog is shared with other sections over the same shard count.
 * The section's tables stay in that catalog's table registry after its schema is dropped (there
 * is no unregister); only a rebalancer reads the registry, and no other section rebalances.
 */

export const COPY_RATE_TARGET_MB_PER_SECOND = 20;
export const MOVING_WRITE_P99_TARGET_MILLIS = 100;
/** A move's copy at least this fraction of the speed of a bare COPY pipe of the same rows. */
export const COPY_RATIO_TARGET = 0.8;
export { FENCE_RATIO_TARGET };
export type { FenceDetails, ServerLoopResult } from './rebalance-fence.js';
export type { LatencySummary, MoveRound } from './rebalance-moves.js';

export interface RebalanceDetails {
  readonly shardIds: readonly string[];
  readonly bucketCount: number;
  readonly bucket: number;
  readonly homeShard: string;
  readonly initialRows: number;
  readonly initialPayloadMB: number;
  readonly movingWriters: number;
  readonly otherWriters: number;
  readonly quietMillis: number;
  readonly keyGenerationSeconds: number;
  readonly rounds: readonly MoveRound[];
  readonly idleMoves: number;
  readonly loadedMoves: number;
  /** Worst over the moves under writes, each with its baseline from the same move's round. */
  readonly worst: {
    readonly movingP99: number;
    /** p99 of the same writers just before that move. */
    readonly movingQuietP99: number;
    readonly movingMax: number;
    /** MoveReport.pauseMillis of the move with that max. */
    readonly pauseMillisAtMax: number;
    readonly pauseMillis: number;
    readonly otherP99: number;
    readonly otherQuietP99: number;
  };
  readonly fence: FenceDetails;
}

export const rebalanceSection: Section<RebalanceDetails> = {
  name: 'rebalance',
  title: 'rebalance: bucket copy MB/s, write latency of the moving bucket during a move, cost of the write fence',
  async run(ctx) {
    if (ctx.shards.length < 2) throw new Error('the rebalance section needs at least 2 shards');
    const plan = movePlan(ctx);
    const router = await ctx.router(2, { poolMax: plan.poolMax });
    const data = await loadBucket(ctx, router, plan);
    const moves = await measureMoves(ctx, router, plan, data);
    const fence = await measureFence(ctx, router);
    const loaded = moves.rounds.filter((r) => r.underWrites && r.moving !== undefined);
    const worst = worstMoves(loaded);
    const { keys } = data;
    return {
      setup: setupText(router, plan, data, fence.details),
      figures: [...moveFigures(plan, moves.rounds, worst), ...fence.figures],
      guard: [...moves.guards, ...fence.guards],
      details: {
        shardIds: router.shardIds,
        bucketCount: router.bucketCount,
        bucket: keys.bucket,
        homeShard: data.homeShard,
        initialRows: keys.initial.length,
        initialPayloadMB: keys.initialPayloadBytes / MB,
        movingWriters: plan.movingWriters,
        otherWriters: plan.otherWriters,
        quietMillis: plan.quietMillis,
        keyGenerationSeconds: data.keyGenerationSeconds,
        idleMoves: plan.idleMoves,
        loadedMoves: plan.loadRounds,
        rounds: moves.rounds,
        worst,
        fence: fence.details,
      },
    };
  },
  format(outcome) {
    const d = outcome.details;
    const f1 = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '' : v.toFixed(1));
    const moves = formatTable(
      [
        'move',
        'writers',
        'rows',
        'MB',
        'copy ms',
        'MB/s',
        'bare MB/s',
        'ratio',
        'catch-up ms',
        'cutover wait ms',
        'to cutover MB/s',
        'pause ms',
        'move ms',
        'moving p50',
        'p99',
        'max',
        'p99 no move',
        'other p99',
        'p99 no move',
      ],
      d.rounds.map((r) => [
        `${r.round} ${r.from}->${r.to}`,
        r.underWrites ? `${d.movingWriters}+${d.otherWriters}` : '0',
        String(r.rowsCopied),
        f1(r.bytesCopied / MB),
        String(Math.round(r.snapshotCopyMillis)),
        f1(r.copyMBPerSecond),
        f1(r.bareCopy.mbPerSecond),
        r.copyRatio.toFixed(2),
        String(Math.round(r.catchUpMillis)),
        String(Math.round(r.cutoverWaitMillis)),
        f1(r.copyToCutoverMBPerSecond),
        String(r.pauseMillis),
        String(Math.round(r.moveMillis)),
        f1(r.moving?.move.p50),
        f1(r.moving?.move.p99),
        f1(r.moving?.move.max),
        f1(r.moving?.quiet.p99),
        f1(r.other?.move.p99),
        f1(r.other?.quiet.p99),
      ]),
    );
    const fence = d.fence;
    const q = (v: number) => Math.round(v).toString();
    const row = (name: string, s: Series, cpu: Series) => [name, q(s.median), q(s.min), q(s.max), cpu.median.toFixed(1)];
    const fenceTable = formatTable(
      ['single-row INSERT into', 'median inserts/s', 'min', 'max', 'CPU µs/insert'],
      [
        row('registered table (fence trigger)', fence.insertsPerSecond.fenced, fence.cpuMicrosPerInsert.fenced),
        row('unregistered table', fence.insertsPerSecond.plain, fence.cpuMicrosPerInsert.plain),
      ],
    );
    return (
      `${moves}\n(write latencies in ms; "no move": the same writers just before the move; bare: the same rows piped with COPY just before the move, same writers; to cutover: bytes over copy + catch-up + cutover wait)\n` +
      `copy target >= ${COPY_RATE_TARGET_MB_PER_SECOND} MB/s; moving-bucket write p99 target <= ${MOVING_WRITE_P99_TARGET_MILLIS} ms (worst ${d.worst.movingP99.toFixed(1)} ms)\n\n` +
      `${fenceTable}\nratio registered/unregistered ${fence.ratio.toFixed(3)} (median of paired rounds; ratio of medians ${fence.ratioOfMedians.toFixed(3)}); target >= ${FENCE_RATIO_TARGET}\n` +
      `alternating statements (${fence.alternating.statements}, one closed loop): mean ${fence.alternating.meanMillis.fenced.toFixed(3)} ms registered vs ${fence.alternating.meanMillis.plain.toFixed(3)} ms unregistered ` +
      `(ratio ${fence.alternating.ratio.toFixed(3)}; p50 ${fence.alternating.p50Millis.fenced.toFixed(3)} vs ${fence.alternating.p50Millis.plain.toFixed(3)})\n` +
      `server-side loop on ${fence.serverSide.shardId}, COMMIT after each INSERT: ${describeServerLoop(fence.serverSide.commitEach)}\n` +
      `server-side loop on ${fence.serverSide.shardId}, one transaction: ${describeServerLoop(fence.serverSide.oneTransaction)}`
    );
  },
};

/** The worst moves under writes; each figure's baseline comes from the same move's round. */
function worstMoves(loaded: readonly MoveRound[]): RebalanceDetails['worst'] {
  // The move where `pick` is highest (the worst), so its baseline comes from the same round.
  const worstRound = (pick: (r: MoveRound) => number): MoveRound | undefined =>
    loaded.reduce<MoveRound | undefined>((a, r) => (a === undefined || pick(r) > pick(a) ? r : a), undefined);
  const byMovingP99 = worstRound((r) => r.moving!.move.p99);
  const byMovingMax = worstRound((r) => r.moving!.move.max);
  const byOtherP99 = worstRound((r) => r.other!.move.p99);
  return {
    movingP99: byMovingP99?.moving?.move.p99 ?? Number.NaN,
    movingQuietP99: byMovingP99?.moving?.quiet.p99 ?? Number.NaN,
    movingMax: byMovingMax?.moving?.move.max ?? Number.NaN,
    pauseMillisAtMax: byMovingMax?.pauseMillis ?? Number.NaN,
    pauseMillis: max(loaded.map((r) => r.pauseMillis)),
    otherP99: byOtherP99?.other?.move.p99 ?? Number.NaN,
    otherQuietP99: byOtherP99?.other?.quiet.p99 ?? Number.NaN,
  };
}

/** Median copy rate of `rounds` against their bare pipes (each move's own, same conditions). */
function copyRateFigure(label: string, rounds: readonly MoveRound[], conditions: string): Figure {
  const copy = summarize(rounds.map((r) => r.copyMBPerSecond));
  return {
    label,
    value: copy.median,
    unit: 'MB/s',
    baseline: { label: `bare COPY pipe, same rows, ${conditions}`, value: median(rounds.map((r) => r.bareCopy.mbPerSecond)) },
    ratio: median(rounds.map((r) => r.copyRatio)),
    note:
      `median of ${rounds.length} move(s) of ${(median(rounds.map((r) => r.bytesCopied)) / MB).toFixed(1)} MB (COPY text; min ${copy.min.toFixed(1)}), ${Math.round(median(rounds.map((r) => r.copyRowsPerSecond))).toLocaleString('en-US')} rows/s; ` +
      `the copy alone (snapshot piped into the target), read through the bucket index; catch-up and cutover wait are a figure of their own`,
    target: atLeast('value', copy.median, COPY_RATE_TARGET_MB_PER_SECOND, 'MB/s'),
  };
}

/** Every move's copy against the bare COPY pipe of the same rows just before it, same writers (the worst move counts). */
function copyRatioFigures(rounds: readonly MoveRound[]): Figure[] {
  if (rounds.length === 0) return [];
  const worst = rounds.reduce((a, r) => (r.copyRatio < a.copyRatio ? r : a));
  const slowest = Math.min(...rounds.map((r) => r.copyMBPerSecond));
  return [
    {
      label: 'bucket copy rate, slowest move',
      value: slowest,
      unit: 'MB/s',
      note: `every move of the run (${rounds.map((r) => r.copyMBPerSecond.toFixed(1)).join(', ')} MB/s); the target holds for every move`,
      target: atLeast('value', slowest, COPY_RATE_TARGET_MB_PER_SECOND, 'MB/s'),
    },
    {
      label: 'bucket copy rate vs a bare COPY pipe, worst move',
      value: worst.copyMBPerSecond,
      unit: 'MB/s',
      baseline: { label: 'bare COPY TO STDOUT | COPY FROM STDIN, same rows, same writers', value: worst.bareCopy.mbPerSecond },
      ratio: worst.copyRatio,
      note: `bare pipe ms / move's copy ms per move: ${rounds.map((r) => `${Math.round(r.bareCopy.millis)}/${Math.round(r.snapshotCopyMillis)}`).join(', ')}`,
      target: atLeast('ratio', worst.copyRatio, COPY_RATIO_TARGET, 'x'),
    },
  ];
}

/** What the copy's time leaves out: catch-up rounds and the cutover's wait, per move, and the rate with them. */
function afterCopyFigures(rounds: readonly MoveRound[]): Figure[] {
  if (rounds.length === 0) return [];
  const after = (r: MoveRound) => r.catchUpMillis + r.cutoverWaitMillis;
  const worst = rounds.reduce((a, r) => (after(r) > after(a) ? r : a));
  const slowest = rounds.reduce((a, r) => (r.copyToCutoverMBPerSecond < a.copyToCutoverMBPerSecond ? r : a));
  return [
    {
      label: 'catch-up + cutover wait after the copy, worst move',
      value: after(worst),
      unit: 'ms',
      note: `catch-up/cutover wait ms per move: ${rounds.map((r) => `${Math.round(r.catchUpMillis)}/${Math.round(r.cutoverWaitMillis)}`).join(', ')} (writers go on meanwhile; the pause starts after)`,
    },
    {
      label: 'bucket copy rate to the cutover, slowest move',
      value: slowest.copyToCutoverMBPerSecond,
      unit: 'MB/s',
      baseline: { label: 'bare COPY pipe, same rows, same writers', value: slowest.bareCopy.mbPerSecond },
      ratio: slowest.copyToCutoverMBPerSecond / slowest.bareCopy.mbPerSecond,
      note: `bytesCopied / MoveReport.copyMillis (copy, catch-up, cutover wait) per move: ${rounds.map((r) => r.copyToCutoverMBPerSecond.toFixed(1)).join(', ')} MB/s`,
    },
  ];
}

/** Copy rate and write latencies under writers. */
function loadedFigures(plan: MovePlan, loaded: readonly MoveRound[], worst: RebalanceDetails['worst']): Figure[] {
  if (loaded.length === 0) return [];
  return [
    copyRateFigure('bucket copy rate, under writes', loaded, 'same writers'),
    {
      label: 'moving-bucket write p99 during a move',
      value: worst.movingP99,
      unit: 'ms',
      baseline: { label: 'same writers, no move', value: worst.movingQuietP99 },
      ratio: worst.movingP99 / worst.movingQuietP99,
      note: `worst of ${loaded.length} moves (baseline: that move's round); p50 ${median(loaded.map((r) => r.moving!.move.p50)).toFixed(1)} ms (median of moves); ${plan.movingWriters} writers`,
      target: atMost('value', worst.movingP99, MOVING_WRITE_P99_TARGET_MILLIS, 'ms'),
    },
    {
      label: 'moving-bucket write max during a move',
      value: worst.movingMax,
      unit: 'ms',
      baseline: { label: "that move's pauseMillis", value: worst.pauseMillisAtMax },
      ratio: worst.movingMax / worst.pauseMillisAtMax,
      note: `worst of ${loaded.length} moves; pause per move: ${loaded.map((r) => r.pauseMillis).join(', ')} ms`,
    },
    {
      label: 'other-bucket write p99 during a move',
      value: worst.otherP99,
      unit: 'ms',
      baseline: { label: 'same writers, no move', value: worst.otherQuietP99 },
      ratio: worst.otherP99 / worst.otherQuietP99,
      note: `worst of ${loaded.length} moves (baseline: that move's round); other buckets of the source shard, ${plan.otherWriters} writers`,
    },
  ];
}

function moveFigures(plan: MovePlan, rounds: readonly MoveRound[], worst: RebalanceDetails['worst']): Figure[] {
  const idle = rounds.filter((r) => !r.underWrites);
  const loaded = rounds.filter((r) => r.underWrites && r.moving !== undefined);
  return [
    ...(idle.length === 0 ? [] : [copyRateFigure('bucket copy rate, no writers', idle, 'no writers')]),
    ...loadedFigures(plan, loaded, worst),
    ...copyRatioFigures(rounds),
    ...afterCopyFigures(rounds),
  ];
}

function setupText(router: ShardRouter, plan: MovePlan, data: LoadedBucket, fence: FenceDetails): string {
  const { keys } = data;
  const { table, movingWriters, otherWriters, quietMillis } = plan;
  const totalMoves = plan.idleMoves + plan.loadRounds;
  return (
    `router over ${router.shardIds.join(', ')} (pool max ${plan.poolMax}), ${router.bucketCount} buckets. ${table} (id text PK, v bigint, payload text ${MIN_PAYLOAD}-${MAX_PAYLOAD} B): ` +
    `bucket ${keys.bucket} loaded with ${keys.initial.length.toLocaleString('en-US')} rows (${(keys.initialPayloadBytes / MB).toFixed(1)} MB payload) and moved ${totalMoves} times back and forth with moveBucket: ` +
    `${plan.idleMoves} time(s) with no writers, then ${plan.loadRounds} time(s) while ${movingWriters} writers send single-row UPDATE (4 of 5) / INSERT (1 of 5) to the bucket's keys and ${otherWriters} send UPDATEs to other buckets of the source ` +
    `through router.execute; each of those rounds first runs the same writers ${quietMillis} ms with no move (baseline). Copy MB/s = bytesCopied (the snapshot's COPY text, MB = 2^20 B) / the copy's time ('copying' to 'copied'); ` +
    `just before each move the same rows are piped the same way round with the move's SELECT in COPY TO STDOUT into COPY FROM STDIN of a table like the moving one, autocommit, under the same writers (baseline); catch-up and cutover wait follow the copy and are reported apart. ` +
    `Fence: ${fence.concurrency} in flight, ${fence.rounds} interleaved rounds of ${fence.insertsPerRound} single-row INSERTs (${fence.payloadBytes} B payload) through router.execute into a registered vs an identical unregistered table; ` +
    `then ${fence.alternating.statements} INSERTs alternating between the two in one closed loop; and ${fence.serverSide.rounds} interleaved rounds of ${fence.serverSide.insertsPerRound} INSERTs in a DO loop on one router connection, with a COMMIT after each (synchronous_commit off) and in one transaction`
  );
}
