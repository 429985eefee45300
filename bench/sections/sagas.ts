import type { ShardRouter } from '../../src/index.js';
import { check, size } from '../section.js';
import type { Section, SectionContext, SectionOutcome } from '../section.js';
import { formatTable, pairedRatios, percentile, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult } from '../workload.js';

/**
 * Sagas (docs/sagas.md): one "order" = +1 on three rows (three keys, usually three shards), four
 * variants in interleaved rounds, the same keys and concurrency:
 * - saga: a 3-step saga, each step one `step.execute` (idempotent), logged on the first key's shard;
 * - idempotent: the same three idempotent executes, no saga log (isolates the log's cost);
 * - twopc: the three updates in one `router.transaction` (two-phase commit over their shards);
 * - plain: the three updates one after another, no log, no key.
 * Log overhead per step = (mean latency saga - mean latency idempotent) / 3.
 */

const VARIANTS = ['saga', 'idempotent', 'twopc', 'plain'] as const;
type Variant = (typeof VARIANTS)[number];

export interface SagaBenchDetails {
  readonly concurrency: number;
  readonly opsPerRound: number;
  readonly rounds: number;
  readonly opsPerSecond: Readonly<Record<Variant, Series>>;
  readonly p99Millis: Readonly<Record<Variant, number>>;
  readonly meanMillis: Readonly<Record<Variant, number>>;
  readonly logOverheadPerStepMillis: number;
  readonly sagaVsTwopc: number;
}

interface Plan {
  readonly concurrency: number;
  readonly opsPerRound: number;
  readonly rounds: number;
  readonly warmupRounds: number;
}

function ops(ctx: SectionContext, router: ShardRouter, keys: readonly number[]) {
  const update = `UPDATE ${ctx.schema}.counters SET n = n + 1 WHERE id = $1`;
  const order = (i: number) => [keys[3 * i]!, keys[3 * i + 1]!, keys[3 * i + 2]!];
  const saga = router.defineSaga<{ keys: number[] }, number>(
    'bench-order',
    [0, 1, 2].map((step) => ({
      name: `update-${step}`,
      run: async (context, input) => (await context.execute(input.keys[step]!, update, [input.keys[step]!])).rowCount,
      compensate: async () => undefined,
    })),
  );
  let runs = 0;
  const variants: Record<Variant, (i: number) => Promise<boolean>> = {
    saga: async (i) => (await saga.run(order(i)[0]!, { keys: order(i) })).result === 1,
    idempotent: async (i) => {
      const tag = `${++runs}`;
      let ok = true;
      for (const key of order(i))
        ok &&= (await router.execute(key, update, [key], { idempotencyKey: `bench-${tag}-${key}` })).rowCount === 1;
      return ok;
    },
    twopc: async (i) =>
      router.transaction(order(i), async (tx) => {
        let ok = true;
        for (const key of order(i)) ok &&= (await tx.execute(key, update, [key])).rowCount === 1;
        return ok;
      }),
    plain: async (i) => {
      let ok = true;
      for (const key of order(i)) ok &&= (await router.execute(key, update, [key])).rowCount === 1;
      return ok;
    },
  };
  return variants;
}

function outcome(
  plan: Plan,
  results: Record<Variant, ClosedLoopResult[]>,
  wrong: number,
  totals: { readonly found: number; readonly expected: number },
): SectionOutcome<SagaBenchDetails> {
  const perSecond = (v: Variant) => results[v].map((r) => r.opsPerSecond);
  const latencies = (v: Variant) => results[v].flatMap((r) => r.latenciesMillis);
  const mean = (values: readonly number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  const series = Object.fromEntries(VARIANTS.map((v) => [v, summarize(perSecond(v))])) as Record<Variant, Series>;
  const p99Millis = Object.fromEntries(VARIANTS.map((v) => [v, percentile(latencies(v), 99)])) as Record<Variant, number>;
  const meanMillis = Object.fromEntries(VARIANTS.map((v) => [v, mean(latencies(v))])) as Record<Variant, number>;
  const logOverheadPerStepMillis = (meanMillis.saga - meanMillis.idempotent) / 3;
  const sagaVsTwopc = summarize(pairedRatios(perSecond('saga'), perSecond('twopc'))).median;
  const fig = (v: Variant, label: string, base: Variant, note: string) => ({
    label,
    value: series[v].median,
    unit: 'transfers/s' as const,
    baseline: { label: base, value: series[base].median },
    ratio: summarize(pairedRatios(perSecond(v), perSecond(base))).median,
    note,
  });
  return {
    setup: `4 shards, ${plan.concurrency} in flight, ${plan.rounds} interleaved rounds of ${plan.opsPerRound} orders (3 updates each) per variant`,
    figures: [
      fig('saga', '3-step saga (orders/s)', 'twopc', `p99 ${p99Millis.saga.toFixed(1)} ms vs 2PC p99 ${p99Millis.twopc.toFixed(1)} ms`),
      fig('saga', '3-step saga (orders/s)', 'plain', 'three plain updates, no log, no idempotency key'),
      fig('saga', '3-step saga (orders/s)', 'idempotent', `log overhead per step ${logOverheadPerStepMillis.toFixed(2)} ms (mean latency)`),
    ],
    guard: [
      check('every update hit its row', wrong === 0, `${wrong} wrong answers`),
      check(
        'every counter moved exactly by the acknowledged orders',
        totals.found === totals.expected,
        `${totals.found} increments for ${totals.expected} acknowledged updates`,
      ),
    ],
    details: {
      concurrency: plan.concurrency,
      opsPerRound: plan.opsPerRound,
      rounds: plan.rounds,
      opsPerSecond: series,
      p99Millis,
      meanMillis,
      logOverheadPerStepMillis,
      sagaVsTwopc,
    },
  };
}

export const sagasSection: Section<SagaBenchDetails> = {
  name: 'sagas',
  title: 'sagas: a 3-step saga vs the same updates in one 2PC transaction, as idempotent executes, and plain',
  async run(ctx) {
    const plan: Plan = { concurrency: 8, opsPerRound: size(ctx, 1_000, 150), rounds: size(ctx, 8, 3), warmupRounds: 1 };
    const router = await ctx.router(Math.min(4, ctx.shards.length), { poolMax: plan.concurrency * 2 });
    const keys = Array.from({ length: plan.opsPerRound * 3 }, (_, i) => i + 1);
    for (let index = 0; index < Math.min(4, ctx.shards.length); index++) {
      await ctx.admin(index, `CREATE TABLE ${ctx.schema}.counters (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0)`);
    }
    await closedLoop(keys.length, 8, async (i) => {
      await router.execute(keys[i]!, `INSERT INTO ${ctx.schema}.counters (id) VALUES ($1)`, [keys[i]!]);
      return true;
    });
    const run = ops(ctx, router, keys);
    let wrong = 0;
    let acknowledged = 0;
    const results = await interleavedRounds(
      VARIANTS,
      plan,
      async (variant) => {
        const result = await closedLoop(plan.opsPerRound, plan.concurrency, run[variant], { latencies: true });
        wrong += result.wrong;
        acknowledged += result.ops;
        return result;
      },
      (r, q) => ctx.log(`round ${r}: ${VARIANTS.map((v) => `${v} ${Math.round(q[v].opsPerSecond)}`).join('  ')} orders/s`),
    );
    const { rows } = await router.broadcast<{ total: string }>(`SELECT sum(n) AS total FROM ${ctx.schema}.counters`);
    return outcome(plan, results, wrong, { found: Number(rows[0]!.total), expected: acknowledged * 3 });
  },
  format(report) {
    const d = report.details;
    const q = (v: number) => Math.round(v).toString();
    return (
      formatTable(
        ['variant', 'median orders/s', 'min', 'max', 'mean ms', 'p99 ms'],
        VARIANTS.map((v) => [
          v,
          q(d.opsPerSecond[v].median),
          q(d.opsPerSecond[v].min),
          q(d.opsPerSecond[v].max),
          d.meanMillis[v].toFixed(2),
          d.p99Millis[v].toFixed(2),
        ]),
      ) +
      `\nsaga/2PC ${d.sagaVsTwopc.toFixed(3)}; saga log overhead per step ${d.logOverheadPerStepMillis.toFixed(2)} ms (mean latency, vs the same idempotent executes)`
    );
  },
};
