import { ProxyTracerProvider, SpanKind } from '@opentelemetry/api';
import type { Context, SpanOptions } from '@opentelemetry/api';
import { BasicTracerProvider, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import { Registry } from 'prom-client';
import type { ShardRouter, TracerProviderLike } from '../../src/index.js';
import { registerMetrics } from '../../src/prometheus.js';
import { atLeast, check, size } from '../section.js';
import type { Section, SectionContext, SectionOutcome } from '../section.js';
import { formatTable, pairedRatios, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult } from '../workload.js';
import { EXECUTE_SQL, keysOnShard } from './execute.js';

/**
 * What instrumentation costs `router.execute`: the same point queries through three routers over
 * the same shards, pool size and concurrency, in interleaved rounds. `plain` has nothing plugged
 * in (its metrics are still counted: router.metrics() always works; no global tracer provider is
 * registered, so it starts no span). `observed` has its metrics registered with a prom-client
 * registry, scraped after every round, and an OpenTelemetry SDK BasicTracerProvider with no span
 * processor (registered, no exporter): its default sampler (parent-based, always on) records
 * every span, which then ends with nowhere to go. `sampled` is the same with a 10% ratio
 * sampler, as production tracing commonly runs: 9 in 10 spans are non-recording.
 *
 * Two extra figures split that cost between the router and the SDK. `api` is the same again
 * with the OpenTelemetry API's own no-op tracer (a ProxyTracerProvider with no SDK behind it)
 * passed as the tracer provider: the router builds its attributes, starts and ends a span per
 * statement exactly as with an SDK, but the span is the API's non-recording one, so the figure
 * is the router's own instrumentation code. The SDK floor is the SDK's `startSpan` + `end` with
 * no attributes in a tight loop, CPU per span: what any instrumentation with that SDK pays per
 * statement, before a single attribute.
 */

export const OBSERVE_RATIO_TARGET = 0.97;
const VARIANTS = ['plain', 'observed', 'sampled', 'api'] as const;
type Variant = (typeof VARIANTS)[number];
type Instrumented = Exclude<Variant, 'plain'>;
const SAMPLED_RATIO = 0.1;

/** A tracer provider that counts the spans its tracer started and how many of them record (a call, a branch and two increments per span). */
function countingProvider(provider: {
  getTracer(
    name: string,
    version?: string,
  ): { startSpan(name: string, options?: SpanOptions, context?: Context): { isRecording(): boolean } };
}): TracerProviderLike & { started: number; recording: number } {
  const counting = {
    started: 0,
    recording: 0,
    getTracer(name: string, version?: string) {
      const tracer = provider.getTracer(name, version);
      return {
        // Fixed arity: a rest parameter would allocate an array per span, charged to the instrumented side.
        startSpan(name: string, options?: SpanOptions, context?: Context) {
          const span = tracer.startSpan(name, options, context);
          counting.started++;
          if (span.isRecording()) counting.recording++;
          return span;
        },
      };
    },
  };
  return counting;
}

export interface ObserveDetails {
  readonly shardId: string;
  readonly concurrency: number;
  readonly rounds: number;
  readonly queriesPerRound: number;
  readonly queriesPerSecond: Readonly<Record<Variant, Series>>;
  readonly cpuMicrosPerQuery: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly sampledRatio: number;
  readonly apiRatio: number;
  readonly cpuRatio: number;
  /** The SDK's startSpan + end with no attributes, tight loop, CPU µs per span. */
  readonly sdkFloorMicros: { readonly recorded: number; readonly sampledOut: number };
  readonly spansRecorded: Readonly<Record<Instrumented, number>>;
  readonly scrapes: number;
}

interface Measured {
  readonly results: Record<Variant, ClosedLoopResult[]>;
  readonly wrong: number;
  readonly checked: number;
  readonly calls: Record<Variant, number>;
  readonly scrapes: number;
  readonly lastScrapeOk: boolean;
}

async function measure(
  ctx: SectionContext,
  routers: Readonly<Record<Variant, ShardRouter>>,
  registries: Readonly<Record<Instrumented, Registry>>,
  keys: readonly number[],
  plan: { concurrency: number; rounds: number; warmupRounds: number },
): Promise<Measured> {
  let wrong = 0;
  let checked = 0;
  const calls: Record<Variant, number> = { plain: 0, observed: 0, sampled: 0, api: 0 };
  let scrapes = 0;
  let lastScrapeOk = true;
  const op = (variant: Variant) => async (index: number) => {
    const key = keys[index]!;
    calls[variant]++;
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
      if (variant !== 'plain') {
        // A scrape between rounds, as Prometheus would (not timed).
        const text = await registries[variant].metrics();
        lastScrapeOk &&= text.includes('pg_shard_router_statements_total{route="single",outcome="ok"}');
        scrapes++;
      }
      return result;
    },
    (r, q) => {
      const ratio = (v: Variant) => (q[v].opsPerSecond / q.plain.opsPerSecond).toFixed(3);
      ctx.log(
        `round ${r}: plain ${Math.round(q.plain.opsPerSecond)}  observed ${Math.round(q.observed.opsPerSecond)} (${ratio('observed')})  sampled ${Math.round(q.sampled.opsPerSecond)} (${ratio('sampled')})  api ${Math.round(q.api.opsPerSecond)} (${ratio('api')}) q/s`,
      );
    },
  );
  return { results, wrong, checked, calls, scrapes, lastScrapeOk };
}

type Providers = Readonly<Record<Instrumented, ReturnType<typeof countingProvider>>>;

function outcome(
  shardId: string,
  plan: { concurrency: number; rounds: number },
  queriesPerRound: number,
  measured: Measured,
  providers: Providers,
  metricsCount: Readonly<Record<Instrumented, number>>,
  sdkFloorMicros: ObserveDetails['sdkFloorMicros'],
): SectionOutcome<ObserveDetails> {
  const { results, calls } = measured;
  const qps = (v: Variant) => results[v].map((r) => r.opsPerSecond);
  const cpu = (v: Variant) => results[v].map((r) => r.cpuMicrosPerOp);
  const ratio = summarize(pairedRatios(qps('observed'), qps('plain'))).median;
  const sampledRatio = summarize(pairedRatios(qps('sampled'), qps('plain'))).median;
  const apiRatio = summarize(pairedRatios(qps('api'), qps('plain'))).median;
  const cpuRatio = summarize(pairedRatios(cpu('observed'), cpu('plain'))).median;
  const series = Object.fromEntries(VARIANTS.map((v) => [v, summarize(qps(v))])) as Record<Variant, Series>;
  const cpuSeries = Object.fromEntries(VARIANTS.map((v) => [v, summarize(cpu(v))])) as Record<Variant, Series>;
  const { observed, sampled, api } = providers;
  const plainCpu = cpuSeries.plain.median;
  return {
    setup: `${EXECUTE_SQL} on shard ${shardId}: routers with prom-client metrics and an OpenTelemetry SDK provider with no span processor (every span recorded / ${SAMPLED_RATIO * 100}% sampled; extra: the API's no-op tracer, no SDK) vs one with nothing plugged in, ${plan.concurrency} in flight, ${plan.rounds} interleaved rounds of ${queriesPerRound} queries`,
    figures: [
      {
        label: 'execute with metrics + tracing (every span recorded)',
        value: series.observed.median,
        unit: 'queries/s',
        baseline: { label: 'nothing plugged in', value: series.plain.median },
        ratio,
        note: `median of ${plan.rounds} paired rounds`,
        target: atLeast('ratio', ratio, OBSERVE_RATIO_TARGET, 'x'),
      },
      {
        label: `execute with metrics + tracing (${SAMPLED_RATIO * 100}% sampled)`,
        value: series.sampled.median,
        unit: 'queries/s',
        baseline: { label: 'nothing plugged in', value: series.plain.median },
        ratio: sampledRatio,
        note: `median of ${plan.rounds} paired rounds`,
        target: atLeast('ratio', sampledRatio, OBSERVE_RATIO_TARGET, 'x'),
      },
      {
        label: 'client CPU per query, every span recorded',
        value: cpuSeries.observed.median,
        unit: 'µs',
        baseline: { label: 'nothing plugged in', value: cpuSeries.plain.median },
        ratio: cpuRatio,
        note: 'lower is better',
      },
      {
        label: "extra: execute with metrics + tracing through the OpenTelemetry API, no SDK (the router's own instrumentation)",
        value: series.api.median,
        unit: 'queries/s',
        baseline: { label: 'nothing plugged in', value: series.plain.median },
        ratio: apiRatio,
        note: `median of ${plan.rounds} paired rounds; the API's no-op tracer, so the SDK's span work is left out`,
        target: atLeast('ratio', apiRatio, OBSERVE_RATIO_TARGET, 'x'),
      },
      {
        label: 'extra: OpenTelemetry SDK startSpan + end alone, recorded (floor per span)',
        value: sdkFloorMicros.recorded,
        unit: 'µs',
        baseline: { label: 'nothing plugged in, client CPU per query', value: plainCpu },
        ratio: (plainCpu + sdkFloorMicros.recorded) / plainCpu,
        note: `tight loop, no attributes, CPU per span (sampled out: ${sdkFloorMicros.sampledOut.toFixed(2)} µs); ratio: (plain CPU per query + it) / plain, the least CPU ratio an SDK span per execute can give`,
      },
    ],
    guard: [
      check('every answer is the key sent', measured.wrong === 0, `${measured.checked - measured.wrong}/${measured.checked} right`),
      check(
        'one recorded span per observed execute',
        observed.started === calls.observed && observed.recording === calls.observed,
        `${observed.recording} recorded of ${observed.started} spans, ${calls.observed} calls`,
      ),
      check(
        'one span per sampled execute, some of them recorded',
        sampled.started === calls.sampled && sampled.recording > 0 && sampled.recording < calls.sampled,
        `${sampled.recording} recorded of ${sampled.started} spans, ${calls.sampled} calls`,
      ),
      check(
        'metrics counted every instrumented execute',
        metricsCount.observed === calls.observed && metricsCount.sampled === calls.sampled && metricsCount.api === calls.api,
        `${metricsCount.observed} + ${metricsCount.sampled} + ${metricsCount.api} counted`,
      ),
      check(
        'one non-recording span per execute through the API alone',
        api.started === calls.api && api.recording === 0,
        `${api.recording} recorded of ${api.started} spans, ${calls.api} calls`,
      ),
      check('every registry scrape shows the counters', measured.lastScrapeOk, `${measured.scrapes} scrapes`),
    ],
    details: {
      shardId,
      concurrency: plan.concurrency,
      rounds: plan.rounds,
      queriesPerRound,
      queriesPerSecond: series,
      cpuMicrosPerQuery: cpuSeries,
      ratio,
      sampledRatio,
      apiRatio,
      cpuRatio,
      sdkFloorMicros,
      spansRecorded: { observed: observed.recording, sampled: sampled.recording, api: api.recording },
      scrapes: measured.scrapes,
    },
  };
}

/**
 * The SDK's own cost per span, before any attribute: `startSpan` + `end` in a tight loop (CPU
 * µs per span, the median of 5 batches after 2 warm-up ones), straight on the SDK's tracer.
 */
function sdkFloor(provider: BasicTracerProvider): number {
  const tracer = provider.getTracer('pg-shard-router bench floor');
  const spans = 50_000;
  const batches: number[] = [];
  for (let batch = 0; batch < 7; batch++) {
    const start = process.cpuUsage();
    for (let i = 0; i < spans; i++) tracer.startSpan('floor', { kind: SpanKind.CLIENT }).end();
    const used = process.cpuUsage(start);
    if (batch >= 2) batches.push((used.user + used.system) / spans);
  }
  return summarize(batches).median;
}

function singleOk(router: ShardRouter): number {
  return router.metrics().statements.find((s) => s.route === 'single' && s.outcome === 'ok')!.count;
}

export const observeSection: Section<ObserveDetails> = {
  name: 'observe',
  title: 'router.execute with prom-client metrics and OpenTelemetry spans (no exporter) vs nothing plugged in',
  async run(ctx) {
    const concurrency = 8;
    const plan = { concurrency, rounds: size(ctx, 25, 8), warmupRounds: 2 };
    const queriesPerRound = size(ctx, 10_000, 3_000);
    const sdk = {
      observed: new BasicTracerProvider(),
      sampled: new BasicTracerProvider({ sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(SAMPLED_RATIO) }) }),
    };
    const providers = {
      observed: countingProvider(sdk.observed),
      sampled: countingProvider(sdk.sampled),
      // No delegate is ever set on it: its tracer is the API's no-op one.
      api: countingProvider(new ProxyTracerProvider()),
    };
    const shardCount = Math.min(4, ctx.shards.length);
    const routers = {
      plain: await ctx.router(shardCount, { poolMax: concurrency }),
      observed: await ctx.router(shardCount, { poolMax: concurrency, tracerProvider: providers.observed }),
      sampled: await ctx.router(shardCount, { poolMax: concurrency, tracerProvider: providers.sampled }),
      api: await ctx.router(shardCount, { poolMax: concurrency, tracerProvider: providers.api }),
    };
    const registries = { observed: new Registry(), sampled: new Registry(), api: new Registry() };
    for (const variant of ['observed', 'sampled', 'api'] as const) registerMetrics(routers[variant], { registry: registries[variant] });
    const shardId = ctx.shards[0]!.id;
    const keys = keysOnShard(routers.plain, shardId, queriesPerRound);
    const measured = await measure(ctx, routers, registries, keys, plan);
    const counted = { observed: singleOk(routers.observed), sampled: singleOk(routers.sampled), api: singleOk(routers.api) };
    const floor = { recorded: sdkFloor(sdk.observed), sampledOut: sdkFloor(sdk.sampled) };
    return outcome(shardId, plan, keys.length, measured, providers, counted, floor);
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
          row('prom-client + OTel SDK, every span recorded', d.queriesPerSecond.observed, d.cpuMicrosPerQuery.observed),
          row(`prom-client + OTel SDK, ${SAMPLED_RATIO * 100}% sampled`, d.queriesPerSecond.sampled, d.cpuMicrosPerQuery.sampled),
          row('prom-client + OTel API, no SDK (extra)', d.queriesPerSecond.api, d.cpuMicrosPerQuery.api),
        ],
      ) +
      `\nratio observed/plain ${d.ratio.toFixed(3)}, sampled/plain ${d.sampledRatio.toFixed(3)}, api/plain ${d.apiRatio.toFixed(3)} (medians of paired rounds), CPU ratio ${d.cpuRatio.toFixed(3)}; target >= ${OBSERVE_RATIO_TARGET}; spans recorded ${d.spansRecorded.observed} / ${d.spansRecorded.sampled} / ${d.spansRecorded.api}, ${d.scrapes} scrapes` +
      `\nSDK floor (startSpan + end, no attributes, tight loop): ${d.sdkFloorMicros.recorded.toFixed(2)} µs recorded, ${d.sdkFloorMicros.sampledOut.toFixed(2)} µs sampled out, per span`
    );
  },
};
