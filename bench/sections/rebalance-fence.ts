import type { ShardRouter } from '../../src/index.js';
import { atLeast, check, size } from '../section.js';
import type { Figure, GuardCheck, SectionContext } from '../section.js';
import { median, nowNs, pairedRatios, percentile, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult } from '../workload.js';
import { MIN_PAYLOAD } from './rebalance-moves.js';

/**
 * The rebalance section's fencing cost (see rebalance.ts): the same single-row INSERTs into a
 * registered (fenced) and an unregistered table, in interleaved rounds, in one alternating
 * closed loop, and in server-side loops.
 */

/** Issue 18: fencing costs at most 3% of single-row INSERT throughput. */
export const FENCE_RATIO_TARGET = 0.97;

const FENCE_PAYLOAD = 'f'.repeat(MIN_PAYLOAD);
const VARIANTS = ['fenced', 'plain'] as const;
type Variant = (typeof VARIANTS)[number];

export interface FenceDetails {
  readonly concurrency: number;
  readonly insertsPerRound: number;
  readonly rounds: number;
  readonly payloadBytes: number;
  readonly insertsPerSecond: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly ratioOfMedians: number;
  readonly cpuMicrosPerInsert: Readonly<Record<Variant, Series>>;
  /** The server-side loops: µs per INSERT inside one DO block, per round. */
  readonly serverSide: {
    readonly shardId: string;
    readonly insertsPerRound: number;
    readonly rounds: number;
    /** A COMMIT after every INSERT (synchronous_commit off). */
    readonly commitEach: ServerLoopResult;
    /** Every INSERT in one transaction. */
    readonly oneTransaction: ServerLoopResult;
  };
  /** One closed loop of `statements` INSERTs alternating between the tables (A B B A ...). */
  readonly alternating: {
    readonly statements: number;
    readonly meanMillis: Readonly<Record<Variant, number>>;
    readonly p50Millis: Readonly<Record<Variant, number>>;
    /** mean fenced / mean plain. */
    readonly ratio: number;
  };
}

export interface ServerLoopResult {
  readonly microsPerInsert: Readonly<Record<Variant, Series>>;
  /** Median of paired fenced/plain ratios. */
  readonly ratio: number;
  /** Median of paired (fenced - plain) differences, µs. */
  readonly extraMicros: number;
}

/** The fence measurements, with their figures and guard. */
export interface FenceOutcome {
  readonly details: FenceDetails;
  readonly figures: readonly Figure[];
  readonly guards: readonly GuardCheck[];
}

/** The fence part: tables, the three measurements in order, then the row and trigger guard. */
export async function measureFence(ctx: SectionContext, router: ShardRouter): Promise<FenceOutcome> {
  const fenceTable = (variant: Variant) => `${ctx.schema}.${variant}`;
  for (let i = 0; i < 2; i++) {
    for (const variant of VARIANTS)
      await ctx.admin(i, `CREATE TABLE ${fenceTable(variant)} (id text PRIMARY KEY, v bigint NOT NULL, payload text NOT NULL)`);
  }
  await router.registerShardedTable(fenceTable('fenced'), 'id');
  const rounds = await measureFenceRounds(ctx, router, fenceTable);
  const alternating = await measureAlternating(ctx, router, fenceTable);
  const loops = await measureServerLoops(ctx, router, fenceTable);
  const details = fenceDetails(rounds, alternating.details, loops.details);
  const expectedRows = rounds.inserts + alternating.details.statements + loops.inserts;
  const guards = await fenceGuard(ctx, fenceTable, rounds.wrong + alternating.wrong, expectedRows);
  return { details, figures: fenceFigures(details, rounds.results), guards };
}

type FenceTable = (variant: Variant) => string;

interface FenceRounds {
  readonly concurrency: number;
  readonly insertsPerRound: number;
  readonly rounds: number;
  readonly results: Record<Variant, ClosedLoopResult[]>;
  /** INSERTs sent (warm-up included). */
  readonly inserts: number;
  readonly wrong: number;
}

/** Interleaved rounds of single-row INSERTs through router.execute, registered vs unregistered. */
async function measureFenceRounds(ctx: SectionContext, router: ShardRouter, fenceTable: FenceTable): Promise<FenceRounds> {
  const concurrency = 8;
  // Short rounds, many of them: the two halves of a pair then see nearly the same machine noise.
  const insertsPerRound = size(ctx, 1_000, 500);
  const fenceRounds = size(ctx, 40, 8);
  const runs: Record<Variant, number> = { fenced: 0, plain: 0 };
  let wrong = 0;
  ctx.log(
    `fence: ${concurrency} in flight, 2 warm-up rounds, then ${fenceRounds} rounds of ${insertsPerRound} single-row INSERTs per table`,
  );
  const results = await interleavedRounds(
    VARIANTS,
    { rounds: fenceRounds, warmupRounds: 2 },
    async (variant) => {
      const run = runs[variant]++;
      const sql = `INSERT INTO ${fenceTable(variant)} (id, v, payload) VALUES ($1, $2, $3)`;
      const result = await closedLoop(insertsPerRound, concurrency, async (index) => {
        const key = `f${run}-${index}`;
        const inserted = await router.execute(key, sql, [key, index, FENCE_PAYLOAD]);
        return inserted.rowCount === 1;
      });
      wrong += result.wrong;
      return result;
    },
    (r, q) => {
      if (r % 5 === 0 || r === fenceRounds)
        ctx.log(
          `round ${r}: fenced ${Math.round(q.fenced.opsPerSecond)}  plain ${Math.round(q.plain.opsPerSecond)} inserts/s  (ratio ${(q.fenced.opsPerSecond / q.plain.opsPerSecond).toFixed(3)})`,
        );
    },
  );
  return { concurrency, insertsPerRound, rounds: fenceRounds, results, inserts: (runs.fenced + runs.plain) * insertsPerRound, wrong };
}

/** Statement-level interleaving: the same closed loop alternates the two tables (A B B A ...). */
async function measureAlternating(
  ctx: SectionContext,
  router: ShardRouter,
  fenceTable: FenceTable,
): Promise<{ details: FenceDetails['alternating']; wrong: number }> {
  const concurrency = 8;
  const alternatingStatements = size(ctx, 20_000, 4_000);
  const alternatingVariant = (index: number): Variant => VARIANTS[(index + (index >> 1)) % 2]!;
  const alternatingRun = await closedLoop(
    alternatingStatements,
    concurrency,
    async (index) => {
      const key = `a-${index}`;
      const inserted = await router.execute(
        key,
        `INSERT INTO ${fenceTable(alternatingVariant(index))} (id, v, payload) VALUES ($1, $2, $3)`,
        [key, index, FENCE_PAYLOAD],
      );
      return inserted.rowCount === 1;
    },
    { latencies: true },
  );
  const latencyOf = (variant: Variant) => alternatingRun.latenciesMillis.filter((_, index) => alternatingVariant(index) === variant);
  const mean = (values: readonly number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;
  const alternating = {
    statements: alternatingStatements,
    meanMillis: { fenced: mean(latencyOf('fenced')), plain: mean(latencyOf('plain')) },
    p50Millis: { fenced: percentile(latencyOf('fenced'), 50), plain: percentile(latencyOf('plain'), 50) },
    ratio: mean(latencyOf('fenced')) / mean(latencyOf('plain')),
  };
  ctx.log(
    `alternating statements: mean ${alternating.meanMillis.fenced.toFixed(3)} ms registered vs ${alternating.meanMillis.plain.toFixed(3)} ms unregistered ` +
      `(p50 ${alternating.p50Millis.fenced.toFixed(3)} vs ${alternating.p50Millis.plain.toFixed(3)})`,
  );
  return { details: alternating, wrong: alternatingRun.wrong };
}

/** The same INSERTs in a server-side loop on a router connection: the trigger's own cost. */
async function measureServerLoops(
  ctx: SectionContext,
  router: ShardRouter,
  fenceTable: FenceTable,
): Promise<{ details: FenceDetails['serverSide']; inserts: number }> {
  const loopShard = router.shardIds[0]!;
  const loopInserts = size(ctx, 5_000, 2_000);
  const loopRounds = size(ctx, 15, 5);
  const loopRuns: Record<Variant, number> = { fenced: 0, plain: 0 };
  const serverLoop = async (variant: Variant, prefix: string, commitEach: boolean): Promise<number> => {
    const insert = `INSERT INTO ${fenceTable(variant)} (id, v, payload) VALUES ('${prefix}-' || i, i, repeat('f', ${FENCE_PAYLOAD.length}))`;
    // set_config(..., true) lasts one transaction: nothing leaks into the pooled connection.
    const body = commitEach ? `PERFORM set_config('synchronous_commit', 'off', true); ${insert}; COMMIT;` : `${insert};`;
    const start = nowNs();
    await router.executeOn(loopShard, `DO $loop$ BEGIN FOR i IN 1..${loopInserts} LOOP ${body} END LOOP; END $loop$`);
    return (secondsSince(start) * 1e6) / loopInserts;
  };
  const loopResults = await interleavedRounds(VARIANTS, { rounds: loopRounds, warmupRounds: 1 }, async (variant) => {
    const run = loopRuns[variant]++;
    return { commitEach: await serverLoop(variant, `c${run}`, true), oneTransaction: await serverLoop(variant, `d${run}`, false) };
  });
  const loopSummary = (mode: 'commitEach' | 'oneTransaction'): ServerLoopResult => {
    const fenced = loopResults.fenced.map((r) => r[mode]);
    const plain = loopResults.plain.map((r) => r[mode]);
    return {
      microsPerInsert: { fenced: summarize(fenced), plain: summarize(plain) },
      ratio: summarize(pairedRatios(fenced, plain)).median,
      extraMicros: median(fenced.map((f, i) => f - plain[i]!)),
    };
  };
  const serverSide = {
    shardId: loopShard,
    insertsPerRound: loopInserts,
    rounds: loopRounds,
    commitEach: loopSummary('commitEach'),
    oneTransaction: loopSummary('oneTransaction'),
  };
  ctx.log(`server-side loop on ${loopShard}, COMMIT after each INSERT: ${describeServerLoop(serverSide.commitEach)}`);
  ctx.log(`server-side loop on ${loopShard}, one transaction: ${describeServerLoop(serverSide.oneTransaction)}`);
  return { details: serverSide, inserts: 2 * (loopRuns.fenced + loopRuns.plain) * loopInserts };
}

function fenceDetails(rounds: FenceRounds, alternating: FenceDetails['alternating'], serverSide: FenceDetails['serverSide']): FenceDetails {
  const ips = (v: Variant) => rounds.results[v].map((r) => r.opsPerSecond);
  const cpu = (v: Variant) => rounds.results[v].map((r) => r.cpuMicrosPerOp);
  const insertsPerSecond = { fenced: summarize(ips('fenced')), plain: summarize(ips('plain')) };
  return {
    concurrency: rounds.concurrency,
    insertsPerRound: rounds.insertsPerRound,
    rounds: rounds.rounds,
    payloadBytes: FENCE_PAYLOAD.length,
    insertsPerSecond,
    ratio: summarize(pairedRatios(ips('fenced'), ips('plain'))).median,
    ratioOfMedians: insertsPerSecond.fenced.median / insertsPerSecond.plain.median,
    cpuMicrosPerInsert: { fenced: summarize(cpu('fenced')), plain: summarize(cpu('plain')) },
    serverSide,
    alternating,
  };
}

/** Every INSERT inserted one row; only the registered table has the fence trigger. */
async function fenceGuard(ctx: SectionContext, fenceTable: FenceTable, fenceWrong: number, expectedRows: number): Promise<GuardCheck[]> {
  let fenceRows = 0;
  const triggers: Record<Variant, number> = { fenced: 0, plain: 0 };
  for (let i = 0; i < 2; i++) {
    for (const variant of VARIANTS) {
      fenceRows += (await ctx.admin<{ n: number }>(i, `SELECT count(*)::int AS n FROM ${fenceTable(variant)}`))[0]?.n ?? 0;
      triggers[variant] += await triggerCount(ctx, i, fenceTable(variant));
    }
  }
  return [
    check(
      'fence: every INSERT inserted one row',
      fenceWrong === 0 && fenceRows === expectedRows,
      `${fenceRows}/${expectedRows} rows, ${fenceWrong} wrong answers (warm-up included)`,
    ),
    check(
      'fence: the registered table has its trigger, the plain one none',
      triggers.fenced === 2 && triggers.plain === 0,
      `triggers on 2 shards: registered ${triggers.fenced}, plain ${triggers.plain}`,
    ),
  ];
}

/** Triggers (not internal ones) on `table` on shard `index`. */
async function triggerCount(ctx: SectionContext, index: number, table: string): Promise<number> {
  const rows = await ctx.admin<{ n: number }>(
    index,
    'SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal',
    [table],
  );
  return rows[0]?.n ?? 0;
}

function fenceFigures(fence: FenceDetails, results: Record<Variant, ClosedLoopResult[]>): Figure[] {
  const ips = (v: Variant) => results[v].map((r) => r.opsPerSecond);
  const { alternating, serverSide } = fence;
  return [
    {
      label: 'single-row INSERT, registered table (fence)',
      value: fence.insertsPerSecond.fenced.median,
      unit: 'queries/s',
      baseline: { label: 'unregistered table', value: fence.insertsPerSecond.plain.median },
      ratio: fence.ratio,
      note: `median of ${fence.rounds} paired rounds; per-round ratios ${Math.min(...pairedRatios(ips('fenced'), ips('plain'))).toFixed(2)}..${Math.max(...pairedRatios(ips('fenced'), ips('plain'))).toFixed(2)}`,
      target: atLeast('ratio', fence.ratio, FENCE_RATIO_TARGET, 'x'),
    },
    {
      label: 'INSERT latency, registered table, statements alternated',
      value: alternating.meanMillis.fenced,
      unit: 'ms',
      baseline: { label: 'unregistered table', value: alternating.meanMillis.plain },
      ratio: alternating.ratio,
      note:
        `mean over ${alternating.statements.toLocaleString('en-US')} INSERTs alternating between the tables in one closed loop (${fence.concurrency} in flight); lower is better; ` +
        `+${((alternating.meanMillis.fenced - alternating.meanMillis.plain) * 1e3).toFixed(0)} µs per statement (both see the same queueing, so this ratio understates a CPU-bound throughput loss)`,
    },
    {
      label: 'INSERT + COMMIT in a server-side loop, registered table',
      value: serverSide.commitEach.microsPerInsert.fenced.median,
      unit: 'µs',
      baseline: { label: 'unregistered table', value: serverSide.commitEach.microsPerInsert.plain.median },
      ratio: serverSide.commitEach.ratio,
      note:
        `median of ${serverSide.rounds} paired rounds of ${serverSide.insertsPerRound} INSERTs, a COMMIT after each, in one DO block on ${serverSide.shardId}: the fence adds ${serverSide.commitEach.extraMicros.toFixed(1)} µs per transaction ` +
        `(all in one transaction: +${serverSide.oneTransaction.extraMicros.toFixed(1)} µs, ${serverSide.oneTransaction.microsPerInsert.fenced.median.toFixed(1)} vs ${serverSide.oneTransaction.microsPerInsert.plain.median.toFixed(1)} µs); lower is better`,
    },
  ];
}

export function describeServerLoop(r: ServerLoopResult): string {
  return `${r.microsPerInsert.fenced.median.toFixed(2)} µs per INSERT with the fence vs ${r.microsPerInsert.plain.median.toFixed(2)} µs without (+${r.extraMicros.toFixed(2)} µs, ratio ${r.ratio.toFixed(3)})`;
}
