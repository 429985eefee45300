import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Registry } from 'prom-client';
import type { ShardRouter } from '../../src/index.js';
import { registerMetrics } from '../../src/prometheus.js';
import { atLeast, check, size } from '../section.js';
import type { Section, SectionContext, SectionOutcome } from '../section.js';
import { formatTable, pairedRatios, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult } from '../workload.js';
import { EXECUTE_SQL, keysOnShard } from './execute.js';

/**
 * What instrumentation costs `router.execute`: the same point queries through two routers over
 * the same shards, pool size and concurrency, in interleaved rounds. `plain` has nothing
 * plugged in (its metrics are still counted: router.metrics() always works); `observed` has an
 * OpenTelemetry SDK tracer provider (every span recorded, no exporter) and its metrics
 * registered with a prom-client registry, which is scraped after every round.
 */

export const OBSERVE_RATIO_TARGET = 0.97;
const VARIANTS = ['plain', 'observed'] as const;
type Variant = (typeof VARIANTS)[number];

/** Counts ended spans: proof that spans were recorded, at the price of one call (no exporter). */
class CountingProcessor implements SpanProcessor {
  ended = 0;
  onStart(): void {}
  onEnd(_span: ReadableSpan): void {
    this.ended++;
  }
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

export interface ObserveDetails {
  readonly shardId: string;
  readonly concurrency: number;
  readonly rounds: number;
  readonly queriesPerRound: number;
  readonly queriesPerSecond: Readonly<Record<Variant, Series>>;
  readonly cpuMicrosPerQuery: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly cpuRatio: number;
  readonly spansEnded: number;
  readonly scrapes: number;
}

interface Measured {
  readonly results: Record<Variant, ClosedLoopResult[]>;
  readonly wrong: number;
  readonly checked: number;
  readonly observedCalls: number;
  readonly scrapes: number;
  readonly lastScrapeOk: boolean;
}

async function measure(
  ctx: SectionContext,
  routers: Readonly<Record<Variant, ShardRouter>>,
  registry: Registry,
  keys: readonly number[],
  plan: { concurrency: number; rounds: number; warmupRounds: number },
): Promise<Measured> {
  let wrong = 0;
  let checked = 0;
  let observedCalls = 0;
  let scrapes = 0;
  let lastScrapeOk = false;
  const op = (variant: Variant) => async (index: number) => {
    const key = keys[index]!;
    if (variant === 'observed') observedCalls++;
    const result = await routers[variant].execute<{ int4: number }>(key, EXECUTE_SQL, [key]);
    return result.rows[0]?.int4 === key;
  };
  const results = await interleavedRounds(
    VARIANTS,
    plan,
    async (variant) => {
      const result = await closedLoop(keys.length, plan.concurrency, op(variant));
      wrong += result.wrong;
      checked += result.ops;
      if (variant === 'observed') {
        // A scrape between rounds, as Prometheus would (not timed).
        lastScrapeOk = (await registry.metrics()).includes('pg_shard_router_statements_total{route="single",outcome="ok"}');
        scrapes++;
      }
      return result;
    },
    (r, q) =>
      ctx.log(
        `round ${r}: plain ${Math.round(q.plain.opsPerSecond)}  observed ${Math.round(q.observed.opsPerSecond)} q/s  (ratio ${(q.observed.opsPerSecond / q.plain.opsPerSecond).toFixed(3)})`,
      ),
  );
  return { results, wrong, checked, observedCalls, scrapes, lastScrapeOk };
}

function outcome(
  shardId: string,
  plan: { concurrency: number; rounds: number },
  queriesPerRound: number,
  measured: Measured,
  spansEnded: number,
  metricsCount: number,
): SectionOutcome<ObserveDetails> {
  const { results } = measured;
  const qps = (v: Variant) => results[v].map((r) => r.opsPerSecond);
  const cpu = (v: Variant) => results[v].map((r) => r.cpuMicrosPerOp);
  const ratio = summarize(pairedRatios(qps('observed'), qps('plain'))).median;
  const cpuRatio = summarize(pairedRatios(cpu('observed'), cpu('plain'))).median;
  const series = { plain: summarize(qps('plain')), observed: summarize(qps('observed')) };
  const cpuSeries = { plain: summarize(cpu('plain')), observed: summarize(cpu('observed')) };
  return {
    setup: `${EXECUTE_SQL} on shard ${shardId}: a router with OpenTelemetry SDK spans (no exporter) and prom-client metrics vs one with nothing plugged in, ${plan.concurrency} in flight, ${plan.rounds} interleaved rounds of ${queriesPerRound} queries`,
    figures: [
      {
        label: 'execute with metrics + tracing',
        value: series.observed.median,
        unit: 'queries/s',
        baseline: { label: 'nothing plugged in', value: series.plain.median },
        ratio,
        note: `median of ${plan.rounds} paired rounds`,
        target: atLeast('ratio', ratio, OBSERVE_RATIO_TARGET, 'x'),
      },
      {
        label: 'client CPU per query, instrumented',
        value: cpuSeries.observed.median,
        unit: 'µs',
        baseline: { label: 'nothing plugged in', value: cpuSeries.plain.median },
        ratio: cpuRatio,
        note: 'lower is better',
      },
    ],
    guard: [
      check('every answer is the key sent', measured.wrong === 0, `${measured.checked - measured.wrong}/${measured.checked} right`),
      check('one span per observed execute', spansEnded === measured.observedCalls, `${spansEnded} spans, ${measured.observedCalls} calls`),
      check('metrics counted every observed execute', metricsCount === measured.observedCalls, `${metricsCount} counted`),
      check('the registry scrape shows the counters', measured.lastScrapeOk, `${measured.scrapes} scrapes`),
    ],
    details: {
      shardId,
      concurrency: plan.concurrency,
      rounds: plan.rounds,
      queriesPerRound,
      queriesPerSecond: series,
      cpuMicrosPerQuery: cpuSeries,
      ratio,
      cpuRatio,
      spansEnded,
      scrapes: measured.scrapes,
    },
  };
}

export const observeSection: Section<ObserveDetails> = {
  name: 'observe',
  title: 'router.execute with prom-client metrics and OpenTelemetry spans (no exporter) vs nothing plugged in',
  async run(ctx) {
    const concurrency = 8;
    const plan = { concurrency, rounds: size(ctx, 25, 8), warmupRounds: 2 };
    const queriesPerRound = size(ctx, 10_000, 3_000);
    const processor = new CountingProcessor();
    const provider = new BasicTracerProvider({ spanProcessors: [processor] });
    const shardCount = Math.min(4, ctx.shards.length);
    const plain = await ctx.router(shardCount, { poolMax: concurrency });
    const observed = await ctx.router(shardCount, { poolMax: concurrency, tracerProvider: provider });
    const registry = new Registry();
    registerMetrics(observed, { registry });
    const shardId = ctx.shards[0]!.id;
    const keys = keysOnShard(plain, shardId, queriesPerRound);
    const measured = await measure(ctx, { plain, observed }, registry, keys, plan);
    const counted = observed.metrics().statements.find((s) => s.route === 'single' && s.outcome === 'ok')!.count;
    return outcome(shardId, plan, keys.length, measured, processor.ended, counted);
  },
  format(outcome) {
    const d = outcome.details;
    const q = (v: number) => Math.round(v).toString();
    const row = (name: string, s: Series, cpu: Series) => [name, q(s.median), q(s.min), q(s.max), cpu.median.toFixed(2)];
    return (
      formatTable(
        ['variant', 'median q/s', 'min', 'max', 'CPU µs/query'],
        [
          row('nothing plugged in', d.queriesPerSecond.plain, d.cpuMicrosPerQuery.plain),
          row('prom-client + OTel SDK spans', d.queriesPerSecond.observed, d.cpuMicrosPerQuery.observed),
        ],
      ) +
      `\nratio observed/plain ${d.ratio.toFixed(3)} (median of paired rounds), CPU ratio ${d.cpuRatio.toFixed(3)}; target >= ${OBSERVE_RATIO_TARGET}; ${d.spansEnded} spans recorded, ${d.scrapes} scrapes`
    );
  },
};
