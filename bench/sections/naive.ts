import type { ShardRouter } from '../../src/index.js';
import { NaiveRouter } from '../naive-router.js';
import { createPointTable, pointQuery, pointValue } from '../point-table.js';
import { check, size } from '../section.js';
import type { Section, SectionContext } from '../section.js';
import { formatTable, pairedRatios, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult, RoundsPlan } from '../workload.js';

/**
 * Point queries through the router against the textbook naive router (one pg.Client per shard,
 * `Number(key) % N`), over the same 4 shards, at the same client concurrency, in interleaved
 * rounds. Each side reads its own copy of the rows, placed where it routes.
 */

const VARIANTS = ['router', 'naive'] as const;
type Variant = (typeof VARIANTS)[number];

export interface NaiveDetails {
  readonly shards: number;
  readonly concurrency: number;
  readonly routerPoolMax: number;
  readonly queriesPerRound: number;
  readonly rounds: number;
  readonly queriesPerSecond: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly cpuMicrosPerQuery: Readonly<Record<Variant, Series>>;
}

interface NaivePlan extends RoundsPlan {
  readonly shardCount: number;
}

/** Interleaved rounds of the same point queries through the router and through the naive router. */
async function measureRounds(
  ctx: SectionContext,
  plan: NaivePlan,
  router: ShardRouter,
  naive: NaiveRouter,
): Promise<{ results: Record<Variant, ClosedLoopResult[]>; checked: Record<Variant, number>; wrong: Record<Variant, number> }> {
  const { shardCount, concurrency, rounds, warmupRounds, queriesPerRound } = plan;
  const sql = { router: pointQuery(ctx.schema, 'items_router'), naive: pointQuery(ctx.schema, 'items_naive') };
  const checked = { router: 0, naive: 0 };
  const wrong = { router: 0, naive: 0 };
  const ops: Record<Variant, (index: number) => Promise<boolean>> = {
    router: async (index) => {
      const id = index + 1;
      const { rows } = await router.execute<{ v: number }>(id, sql.router, [id]);
      return rows.length === 1 && rows[0]!.v === pointValue(id);
    },
    naive: async (index) => {
      const id = index + 1;
      const { rows } = await naive.query<{ v: number }>(id, sql.naive, [id]);
      return rows.length === 1 && rows[0]!.v === pointValue(id);
    },
  };
  ctx.log(
    `${shardCount} shards, ${concurrency} in flight: ${warmupRounds} warm-up round, then ${rounds} rounds of ${queriesPerRound} queries per variant`,
  );
  const results = await interleavedRounds(
    VARIANTS,
    { rounds, warmupRounds },
    async (variant) => {
      const result = await closedLoop(queriesPerRound, concurrency, ops[variant]);
      checked[variant] += result.ops;
      wrong[variant] += result.wrong;
      return result;
    },
    (r, q) =>
      ctx.log(
        `round ${r}: router ${Math.round(q.router.opsPerSecond)}  naive ${Math.round(q.naive.opsPerSecond)} q/s  (ratio ${(q.router.opsPerSecond / q.naive.opsPerSecond).toFixed(3)})`,
      ),
  );
  return { results, checked, wrong };
}

export const naiveSection: Section<NaiveDetails> = {
  name: 'naive',
  title: 'point queries: router vs the textbook naive router (one connection per shard, key % N), 4 shards',
  async run(ctx) {
    const shardCount = Math.min(4, ctx.shards.length);
    const concurrency = 16;
    // The router as configured out of the box (pool max 10 per shard); the naive one has 1 connection per shard by design.
    const routerPoolMax = 10;
    const queriesPerRound = size(ctx, 8_000, 1_500);
    const rounds = size(ctx, 13, 3);
    const warmupRounds = 1;
    const router = await ctx.router(shardCount, { poolMax: routerPoolMax });
    const shardIndex = new Map(ctx.shards.map((s, i) => [s.id, i]));
    const naive = await NaiveRouter.connect(ctx.shards.slice(0, shardCount).map((s) => s.connectionString));
    try {
      await createPointTable(ctx, 'items_router', queriesPerRound, shardCount, (id) => shardIndex.get(router.shardFor(id))!);
      await createPointTable(ctx, 'items_naive', queriesPerRound, shardCount, (id) => naive.shardOf(id));
      const { results, checked, wrong } = await measureRounds(
        ctx,
        { shardCount, concurrency, rounds, warmupRounds, queriesPerRound },
        router,
        naive,
      );
      const qps = (v: Variant) => results[v].map((r) => r.opsPerSecond);
      const cpu = (v: Variant) => results[v].map((r) => r.cpuMicrosPerOp);
      const ratio = summarize(pairedRatios(qps('router'), qps('naive'))).median;
      const queriesPerSecond = { router: summarize(qps('router')), naive: summarize(qps('naive')) };
      return {
        setup:
          `${pointQuery('s', 't')} (primary key) over ${shardCount} shards, ${concurrency} in flight on each side: router.execute (pool max ${routerPoolMax} per shard) ` +
          `vs the naive router (one pg.Client per shard, Number(key) % ${shardCount}), ${rounds} interleaved rounds of ${queriesPerRound} queries`,
        figures: [
          {
            label: `router.execute point query, ${shardCount} shards`,
            value: queriesPerSecond.router.median,
            unit: 'queries/s',
            baseline: { label: 'naive router', value: queriesPerSecond.naive.median },
            ratio,
            note: `median of ${rounds} paired rounds; client CPU per query ${summarize(cpu('router')).median.toFixed(1)} µs vs ${summarize(cpu('naive')).median.toFixed(1)} µs`,
          },
        ],
        guard: (['router', 'naive'] as const).map((v) =>
          check(
            `${v}: every point query returns its one row`,
            wrong[v] === 0,
            `${(checked[v] - wrong[v]).toLocaleString('en-US')}/${checked[v].toLocaleString('en-US')} right (warm-up included)`,
          ),
        ),
        details: {
          shards: shardCount,
          concurrency,
          routerPoolMax,
          queriesPerRound,
          rounds,
          queriesPerSecond,
          ratio,
          cpuMicrosPerQuery: { router: summarize(cpu('router')), naive: summarize(cpu('naive')) },
        },
      };
    } finally {
      await naive.close();
    }
  },
  format(outcome) {
    const d = outcome.details;
    const q = (v: number) => Math.round(v).toString();
    const row = (name: string, s: Series, c: Series) => [name, q(s.median), q(s.min), q(s.max), c.median.toFixed(1)];
    return (
      formatTable(
        ['variant', 'median q/s', 'min', 'max', 'CPU µs/query'],
        [
          row(`router.execute (pool max ${d.routerPoolMax}/shard)`, d.queriesPerSecond.router, d.cpuMicrosPerQuery.router),
          row('naive (1 pg.Client/shard, key % N)', d.queriesPerSecond.naive, d.cpuMicrosPerQuery.naive),
        ],
      ) + `\nratio router/naive ${d.ratio.toFixed(3)} (median of paired rounds)`
    );
  },
};
