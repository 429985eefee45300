import pg from 'pg';
import type { ShardRouter } from '../../src/index.js';
import { atLeast, check, size } from '../section.js';
import type { Section, SectionContext, SectionOutcome } from '../section.js';
import { formatTable, pairedRatios, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult } from '../workload.js';

/**
 * `router.execute(key, 'SELECT $1::int', [key])` against a raw `pg.Pool` on the same shard, with
 * the same pool size and the same number of in-flight callers, in interleaved rounds. All keys
 * route to one shard, so both sides talk to the same server; the difference is the router's own
 * cost (routing, pool acquire and release, result wrapping).
 */

export const EXECUTE_SQL = 'SELECT $1::int';
export const EXECUTE_RATIO_TARGET = 0.97;
const VARIANTS = ['router', 'raw'] as const;
type Variant = (typeof VARIANTS)[number];

/** The first `count` positive integer keys that the router sends to `shardId`. */
export function keysOnShard(router: ShardRouter, shardId: string, count: number): number[] {
  const keys: number[] = [];
  for (let key = 1; keys.length < count; key++) {
    if (router.shardFor(key) === shardId) keys.push(key);
  }
  return keys;
}

export interface ExecuteDetails {
  readonly shardId: string;
  readonly sql: string;
  readonly concurrency: number;
  readonly poolMax: number;
  readonly queriesPerRound: number;
  readonly rounds: number;
  readonly queriesPerSecond: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly ratioOfMedians: number;
  readonly cpuMicrosPerQuery: Readonly<Record<Variant, Series>>;
}

interface ExecutePlan {
  readonly concurrency: number;
  readonly poolMax: number;
  readonly rounds: number;
  readonly warmupRounds: number;
}

interface ExecuteRounds {
  readonly results: Record<Variant, ClosedLoopResult[]>;
  readonly checked: number;
  readonly wrong: number;
  readonly offShard: number;
}

/** Interleaved rounds of the same point queries through the router and through a raw pg.Pool. */
async function measureRounds(
  ctx: SectionContext,
  plan: ExecutePlan,
  router: ShardRouter,
  pool: pg.Pool,
  shardId: string,
  keys: readonly number[],
): Promise<ExecuteRounds> {
  const { concurrency, poolMax, rounds, warmupRounds } = plan;
  let wrong = 0;
  let checked = 0;
  let offShard = 0;
  const ops: Record<Variant, (index: number) => Promise<boolean>> = {
    router: async (index) => {
      const key = keys[index]!;
      const result = await router.execute<{ int4: number }>(key, EXECUTE_SQL, [key]);
      if (result.shardId !== shardId) offShard++;
      return result.rows.length === 1 && result.rows[0]!.int4 === key;
    },
    raw: async (index) => {
      const key = keys[index]!;
      const result = await pool.query<{ int4: number }>(EXECUTE_SQL, [key]);
      return result.rows.length === 1 && result.rows[0]!.int4 === key;
    },
  };
  ctx.log(
    `shard ${shardId}, concurrency ${concurrency}, pool max ${poolMax}: ${warmupRounds} warm-up rounds, then ${rounds} rounds of ${keys.length} queries`,
  );
  const results = await interleavedRounds(
    VARIANTS,
    { rounds, warmupRounds },
    async (variant) => {
      const result = await closedLoop(keys.length, concurrency, ops[variant]);
      wrong += result.wrong;
      checked += result.ops;
      return result;
    },
    (r, q) =>
      ctx.log(
        `round ${r}: router ${Math.round(q.router.opsPerSecond)}  raw ${Math.round(q.raw.opsPerSecond)} q/s  (ratio ${(q.router.opsPerSecond / q.raw.opsPerSecond).toFixed(3)})`,
      ),
  );
  return { results, checked, wrong, offShard };
}

function executeOutcome(
  plan: ExecutePlan,
  shardId: string,
  queriesPerRound: number,
  measured: ExecuteRounds,
): SectionOutcome<ExecuteDetails> {
  const { concurrency, poolMax, rounds } = plan;
  const { results, wrong, checked, offShard } = measured;
  const qps = (v: Variant) => results[v].map((r) => r.opsPerSecond);
  const routerSeries = summarize(qps('router'));
  const rawSeries = summarize(qps('raw'));
  const ratio = summarize(pairedRatios(qps('router'), qps('raw'))).median;
  const cpu = { router: summarize(results.router.map((r) => r.cpuMicrosPerOp)), raw: summarize(results.raw.map((r) => r.cpuMicrosPerOp)) };
  return {
    setup: `${EXECUTE_SQL} on shard ${shardId}: router.execute vs pg.Pool.query, both pool max ${poolMax}, ${concurrency} in flight, ${rounds} interleaved rounds of ${queriesPerRound} queries`,
    figures: [
      {
        label: `router.execute point query, ${concurrency} in flight`,
        value: routerSeries.median,
        unit: 'queries/s',
        baseline: { label: 'raw pg.Pool', value: rawSeries.median },
        ratio,
        note: `median of ${rounds} paired rounds`,
        target: atLeast('ratio', ratio, EXECUTE_RATIO_TARGET, 'x'),
      },
      {
        label: `client CPU per query, ${concurrency} in flight`,
        value: cpu.router.median,
        unit: 'µs',
        baseline: { label: 'raw pg.Pool', value: cpu.raw.median },
        ratio: summarize(
          pairedRatios(
            results.router.map((r) => r.cpuMicrosPerOp),
            results.raw.map((r) => r.cpuMicrosPerOp),
          ),
        ).median,
        note: 'lower is better; far less noisy than throughput',
      },
    ],
    guard: [
      check(
        `${concurrency} in flight: every answer is the key sent`,
        wrong === 0,
        `${(checked - wrong).toLocaleString('en-US')}/${checked.toLocaleString('en-US')} answers right (warm-up included)`,
      ),
      check(`${concurrency} in flight: router answered from the key's shard`, offShard === 0, `${offShard} answers from another shard`),
    ],
    details: {
      shardId,
      sql: EXECUTE_SQL,
      concurrency,
      poolMax,
      queriesPerRound,
      rounds,
      queriesPerSecond: { router: routerSeries, raw: rawSeries },
      ratio,
      ratioOfMedians: routerSeries.median / rawSeries.median,
      cpuMicrosPerQuery: cpu,
    },
  };
}

/** Callers in flight per case, all against pools of POOL_MAX connections: at, above and far above the pool's size. */
const CONCURRENCIES = [8, 16, 64] as const;
const POOL_MAX = 10;

export const executeSection: Section<ExecuteDetails[]> = {
  name: 'execute',
  title: 'router.execute point query vs a raw pg.Pool on the same shard, same pool size (10), 8, 16 and 64 callers in flight',
  async run(ctx) {
    const queriesPerRound = size(ctx, 10_000, 2_000);
    const router = await ctx.router(Math.min(4, ctx.shards.length), { poolMax: POOL_MAX });
    const shard = ctx.shards[0]!;
    const keys = keysOnShard(router, shard.id, queriesPerRound);
    const pool = new pg.Pool({ connectionString: shard.connectionString, max: POOL_MAX });
    // An idle client's socket error must not crash the benchmark; a failing query still throws.
    pool.on('error', () => undefined);
    try {
      const outcomes: SectionOutcome<ExecuteDetails>[] = [];
      for (const concurrency of CONCURRENCIES) {
        const plan: ExecutePlan = { concurrency, poolMax: POOL_MAX, rounds: size(ctx, 15, 5), warmupRounds: 2 };
        outcomes.push(executeOutcome(plan, shard.id, keys.length, await measureRounds(ctx, plan, router, pool, shard.id, keys)));
      }
      return {
        setup: outcomes.map((outcome) => outcome.setup).join('; '),
        figures: outcomes.flatMap((outcome) => outcome.figures),
        guard: outcomes.flatMap((outcome) => outcome.guard),
        details: outcomes.map((outcome) => outcome.details),
      };
    } finally {
      await pool.end();
    }
  },
  format(outcome) {
    const q = (v: number) => Math.round(v).toString();
    const rows = outcome.details.flatMap((d) => [
      [
        `router.execute, ${d.concurrency} in flight`,
        q(d.queriesPerSecond.router.median),
        q(d.queriesPerSecond.router.min),
        q(d.queriesPerSecond.router.max),
        d.cpuMicrosPerQuery.router.median.toFixed(2),
        d.ratio.toFixed(3),
      ],
      [
        `pg.Pool.query, ${d.concurrency} in flight`,
        q(d.queriesPerSecond.raw.median),
        q(d.queriesPerSecond.raw.min),
        q(d.queriesPerSecond.raw.max),
        d.cpuMicrosPerQuery.raw.median.toFixed(2),
        '',
      ],
    ]);
    return (
      formatTable(['variant', 'median q/s', 'min', 'max', 'CPU µs/query', 'ratio'], rows) +
      `\nratio router/raw: median of paired rounds; target >= ${EXECUTE_RATIO_TARGET} in every case`
    );
  },
};
