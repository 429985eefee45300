import pg from 'pg';
import type { ShardRouter } from '../../src/index.js';
import { NaiveRouter } from '../naive-router.js';
import { atMost, check, size } from '../section.js';
import type { Figure, Section, SectionContext } from '../section.js';
import { formatTable, nowNs, pairedRatios, percentile, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';

/**
 * Broadcast reads over 4 shards, three measures:
 *
 * 1. Latency of a merged aggregate, `SELECT g, count(*), avg(x) FROM t GROUP BY g` through
 *    router.broadcast, against the shards' own latency for the same query sent to all of them at
 *    once over plain pg.Clients (the slowest one's answer ends it; nothing is merged). Sent at
 *    once, not one by one, so both sides share the 2 cores the same way: what is left is the
 *    router's planning, rewriting, merging and parsing.
 * 2. Throughput of a row-returning broadcast (`WHERE g = $1`, whose concatenated shard rows are
 *    the right answer) against the textbook naive broadcast: one connection per shard, asked one
 *    after another, rows concatenated.
 * 3. The plan cache: router.explain(sql) of a cached SQL text against a new one (parse + plan).
 *
 * The guard compares every merged aggregate row, as text, with what one server holding all the
 * rows returns, and every filtered broadcast's rows with the expected ids and sum.
 */

/** The aggregate, on `table` (schema-qualified). */
export const aggregateSql = (table: string) => `SELECT g, count(*), avg(x) FROM ${table} GROUP BY g`;
const filterSqlOn = (table: string) => `SELECT id, x FROM ${table} WHERE g = $1`;
/** merged <= 1.2 x slowest + 2 ms (the target). */
const LATENCY_FACTOR = 1.2;
const LATENCY_SLACK_MS = 2;
const GROUPS = 100;

const LATENCY_VARIANTS = ['broadcast', 'direct'] as const;
const THROUGHPUT_VARIANTS = ['router', 'naive'] as const;
type ThroughputVariant = (typeof THROUGHPUT_VARIANTS)[number];

const xOf = (id: number) => (id * 37) % 1000;

interface AggregateRow {
  readonly g: number;
  readonly count: string;
  readonly avg: string;
}

export interface BroadcastDetails {
  readonly shards: number;
  readonly rows: number;
  readonly groups: number;
  readonly latency: {
    readonly sql: string;
    readonly rounds: number;
    readonly queriesPerRound: number;
    readonly millis: Readonly<
      Record<(typeof LATENCY_VARIANTS)[number], { readonly p50: number; readonly p99: number; readonly roundMedians: Series }>
    >;
    readonly ratio: number;
    /** Each shard's latency with the query sent to it alone (nothing else running), p50 ms. */
    readonly soloShardMillis: Readonly<Record<string, number>>;
  };
  readonly throughput: {
    readonly sql: string;
    readonly concurrency: number;
    readonly broadcastsPerRound: number;
    readonly rounds: number;
    readonly perSecond: Readonly<Record<ThroughputVariant, Series>>;
    readonly ratio: number;
    /** This process's CPU per broadcast (µs), median over rounds. */
    readonly cpuMicrosPerBroadcast: Readonly<Record<ThroughputVariant, number>>;
  };
  readonly planCache: { readonly hitMicros: number; readonly missMicros: number; readonly calls: number };
}

async function loadRows(ctx: SectionContext, router: ShardRouter, shardCount: number, rows: number): Promise<void> {
  const index = new Map(ctx.shards.map((s, i) => [s.id, i]));
  const ids = Array.from({ length: shardCount }, () => [] as number[]);
  for (let id = 1; id <= rows; id++) ids[index.get(router.shardFor(id))!]!.push(id);
  const create = (table: string) => `CREATE TABLE ${ctx.schema}.${table} (id int PRIMARY KEY, g int NOT NULL, x int NOT NULL)`;
  const fill = (table: string) =>
    `INSERT INTO ${ctx.schema}.${table} SELECT id, id % ${GROUPS}, id * 37 % 1000 FROM unnest($1::int[]) AS id`;
  for (let shard = 0; shard < shardCount; shard++) {
    await ctx.admin(shard, create('t'));
    await ctx.admin(shard, fill('t'), [ids[shard]]);
    await ctx.admin(shard, `CREATE INDEX ON ${ctx.schema}.t (g)`);
    await ctx.admin(shard, `VACUUM ANALYZE ${ctx.schema}.t`);
  }
  // The reference: every row on one server, for the guard.
  await ctx.admin(0, create('t_all'));
  await ctx.admin(0, `INSERT INTO ${ctx.schema}.t_all SELECT id, id % ${GROUPS}, id * 37 % 1000 FROM generate_series(1, ${rows}) AS id`);
  await ctx.admin(0, `VACUUM ANALYZE ${ctx.schema}.t_all`);
}

/** Aggregate rows, sorted by g, as comparable text. */
function aggregateText(rows: readonly AggregateRow[]): string {
  return [...rows]
    .sort((a, b) => a.g - b.g)
    .map((r) => `${r.g}:${r.count}:${r.avg}`)
    .join(',');
}

/** What every measurement of the section works on. */
interface Bench {
  readonly ctx: SectionContext;
  readonly router: ShardRouter;
  readonly shardCount: number;
  readonly rows: number;
  /** The aggregate and the filtered read, on the section's table. */
  readonly sql: string;
  readonly filterSql: string;
  /** One plain pg.Client per shard. */
  readonly clients: readonly pg.Client[];
  readonly naive: NaiveRouter;
}

interface LatencyResult {
  readonly rounds: number;
  readonly perRound: number;
  readonly millis: BroadcastDetails['latency']['millis'];
  readonly ratio: number;
  readonly checks: number;
  readonly wrong: number;
}

/** 1. Latency: one query at a time on each side. */
async function measureLatency(b: Bench): Promise<LatencyResult> {
  const { ctx, router, sql, clients } = b;
  const expected = aggregateText(await ctx.admin<AggregateRow & Record<string, unknown>>(0, aggregateSql(`${ctx.schema}.t_all`)));
  let checks = 0;
  let wrong = 0;
  const latencyRounds = size(ctx, 12, 3);
  const perRound = size(ctx, 6, 3);
  const samples = { broadcast: [] as number[], direct: [] as number[] };
  const timeOne = {
    broadcast: async () => {
      const start = nowNs();
      const result = await router.broadcast<AggregateRow>(sql);
      const ms = secondsSince(start) * 1e3;
      checks++;
      if (aggregateText(result.rows) !== expected) wrong++;
      return ms;
    },
    direct: async () => {
      const start = nowNs();
      await Promise.all(clients.map((client) => client.query(sql)));
      return secondsSince(start) * 1e3;
    },
  };
  ctx.log(
    `latency: ${b.rows.toLocaleString('en-US')} rows in ${GROUPS} groups over ${b.shardCount} shards; 1 warm-up round, then ${latencyRounds} rounds of ${perRound} queries per side`,
  );
  const latencyResults = await interleavedRounds(
    LATENCY_VARIANTS,
    { rounds: latencyRounds, warmupRounds: 1 },
    async (variant) => {
      const times: number[] = [];
      for (let i = 0; i < perRound; i++) times.push(await timeOne[variant]());
      return times;
    },
    (r, t) =>
      ctx.log(
        `round ${r}: broadcast ${summarize(t.broadcast).median.toFixed(2)} ms, slowest shard ${summarize(t.direct).median.toFixed(2)} ms`,
      ),
  );
  for (const v of LATENCY_VARIANTS) for (const times of latencyResults[v]) samples[v].push(...times);
  const roundMedians = (v: (typeof LATENCY_VARIANTS)[number]) => latencyResults[v].map((times) => summarize(times).median);
  const ratio = summarize(pairedRatios(roundMedians('broadcast'), roundMedians('direct'))).median;
  const p = (v: (typeof LATENCY_VARIANTS)[number]) => ({
    p50: percentile(samples[v], 50),
    p99: percentile(samples[v], 99),
    roundMedians: summarize(roundMedians(v)),
  });
  return { rounds: latencyRounds, perRound, millis: { broadcast: p('broadcast'), direct: p('direct') }, ratio, checks, wrong };
}

/** Each shard's latency with the aggregate sent to it alone, p50 ms. */
async function measureSoloShards(b: Bench, perRound: number): Promise<Record<string, number>> {
  const soloShardMillis: Record<string, number> = {};
  for (const [i, client] of b.clients.entries()) {
    const times: number[] = [];
    for (let k = 0; k < perRound; k++) {
      const start = nowNs();
      await client.query(b.sql);
      times.push(secondsSince(start) * 1e3);
    }
    soloShardMillis[b.ctx.shards[i]!.id] = summarize(times).median;
  }
  return soloShardMillis;
}

/** Whether `result` is exactly group `g`'s rows, by a checker built once per row count. */
function filterChecker(rows: number): (g: number, result: readonly { id: number; x: number }[]) => boolean {
  const expectedFilter = (g: number) => {
    let count = 0;
    let sum = 0;
    for (let id = g === 0 ? GROUPS : g; id <= rows; id += GROUPS) {
      count++;
      sum += xOf(id);
    }
    return { count, sum };
  };
  const expectedByGroup = Array.from({ length: GROUPS }, (_, g) => expectedFilter(g));
  return (g, result) => {
    const want = expectedByGroup[g]!;
    let sum = 0;
    for (const row of result) {
      if (row.id % GROUPS !== g || row.x !== xOf(row.id)) return false;
      sum += row.x;
    }
    return result.length === want.count && sum === want.sum && new Set(result.map((r) => r.id)).size === result.length;
  };
}

interface ThroughputResult {
  readonly details: BroadcastDetails['throughput'];
  readonly checks: Readonly<Record<ThroughputVariant, number>>;
  readonly wrong: Readonly<Record<ThroughputVariant, number>>;
}

/** 2. Throughput against the naive sequential broadcast. */
async function measureThroughput(b: Bench): Promise<ThroughputResult> {
  const { ctx, router, naive, filterSql } = b;
  const concurrency = 8;
  const broadcastsPerRound = size(ctx, 250, 80);
  const throughputRounds = size(ctx, 7, 3);
  const filterChecks = { router: 0, naive: 0 };
  const filterWrong = { router: 0, naive: 0 };
  const isRight = filterChecker(b.rows);
  const ops: Record<ThroughputVariant, (index: number) => Promise<boolean>> = {
    router: async (index) => {
      const g = index % GROUPS;
      const { rows: got } = await router.broadcast<{ id: number; x: number }>(filterSql, [g]);
      return isRight(g, got);
    },
    naive: async (index) => {
      const g = index % GROUPS;
      return isRight(g, await naive.broadcast<{ id: number; x: number }>(filterSql, [g]));
    },
  };
  ctx.log(
    `throughput: ${filterSql.replace(ctx.schema, 's')}, ${concurrency} in flight; 1 warm-up round, then ${throughputRounds} rounds of ${broadcastsPerRound} broadcasts per side`,
  );
  const throughput = await interleavedRounds(
    THROUGHPUT_VARIANTS,
    { rounds: throughputRounds, warmupRounds: 1 },
    async (variant) => {
      const result = await closedLoop(broadcastsPerRound, concurrency, ops[variant]);
      filterChecks[variant] += result.ops;
      filterWrong[variant] += result.wrong;
      return result;
    },
    (r, t) =>
      ctx.log(
        `round ${r}: router ${Math.round(t.router.opsPerSecond)}  naive ${Math.round(t.naive.opsPerSecond)} broadcasts/s  (ratio ${(t.router.opsPerSecond / t.naive.opsPerSecond).toFixed(3)})`,
      ),
  );
  const bps = (v: ThroughputVariant) => throughput[v].map((r) => r.opsPerSecond);
  const cpuPerBroadcast = (v: ThroughputVariant) => summarize(throughput[v].map((r) => r.cpuMicrosPerOp)).median;
  const ratio = summarize(pairedRatios(bps('router'), bps('naive'))).median;
  const perSecond = { router: summarize(bps('router')), naive: summarize(bps('naive')) };
  const cpuMicrosPerBroadcast = { router: cpuPerBroadcast('router'), naive: cpuPerBroadcast('naive') };
  return {
    details: { sql: filterSql, concurrency, broadcastsPerRound, rounds: throughputRounds, perSecond, ratio, cpuMicrosPerBroadcast },
    checks: filterChecks,
    wrong: filterWrong,
  };
}

/** 3. Plan cache: the same SQL text again (hit) against new texts (miss: parse with PostgreSQL's parser + plan). */
function measurePlanCache(b: Bench): BroadcastDetails['planCache'] {
  const { ctx, router } = b;
  const calls = size(ctx, 20_000, 5_000);
  // Fewer than the cache's 1,000 entries, so the cached text is never evicted.
  const missCalls = size(ctx, 500, 200);
  const cachedSql = b.sql;
  router.explain(cachedSql);
  const timeExplain = (n: number, sqlOf: (i: number) => string): number => {
    const start = nowNs();
    let length = 0;
    for (let i = 0; i < n; i++) length += router.explain(sqlOf(i)).length;
    if (length === 0) throw new Error('empty plans');
    return (secondsSince(start) * 1e6) / n;
  };
  const hits: number[] = [];
  const misses: number[] = [];
  let fresh = 0;
  for (let r = 0; r < 5; r++) {
    hits.push(timeExplain(calls / 5, () => cachedSql));
    misses.push(timeExplain(missCalls / 5, () => `${cachedSql} -- ${fresh++}`));
  }
  return { hitMicros: summarize(hits).median, missMicros: summarize(misses).median, calls };
}

function broadcastFigures(
  b: Bench,
  latency: LatencyResult,
  throughput: BroadcastDetails['throughput'],
  planCache: BroadcastDetails['planCache'],
): Figure[] {
  const { millis } = latency;
  const threshold = LATENCY_FACTOR * millis.direct.p50 + LATENCY_SLACK_MS;
  return [
    {
      label: 'broadcast GROUP BY aggregate, p50 latency',
      value: millis.broadcast.p50,
      unit: 'ms',
      baseline: { label: 'slowest shard, same query sent directly', value: millis.direct.p50 },
      ratio: latency.ratio,
      note: `p99 ${millis.broadcast.p99.toFixed(2)} ms vs ${millis.direct.p99.toFixed(2)} ms; ratio is the median of ${latency.rounds} paired round medians`,
      target: atMost('value', millis.broadcast.p50, threshold, 'ms', `${LATENCY_FACTOR} x slowest shard + ${LATENCY_SLACK_MS} ms`),
    },
    {
      label: `broadcast throughput, WHERE g = $1, ${b.shardCount} shards`,
      value: throughput.perSecond.router.median,
      unit: 'queries/s',
      baseline: { label: 'naive sequential broadcast', value: throughput.perSecond.naive.median },
      ratio: throughput.ratio,
      note:
        `median of ${throughput.rounds} paired rounds; client CPU per broadcast ${throughput.cpuMicrosPerBroadcast.router.toFixed(0)} µs ` +
        `vs ${throughput.cpuMicrosPerBroadcast.naive.toFixed(0)} µs`,
    },
    {
      label: 'plan-cache hit: router.explain(same SQL)',
      value: planCache.hitMicros,
      unit: 'µs',
      baseline: { label: 'new SQL text (parse + plan)', value: planCache.missMicros },
      ratio: planCache.hitMicros / planCache.missMicros,
      note: 'includes formatting the plan as text, so an upper bound of the lookup broadcast() does',
    },
  ];
}

function setupText(b: Bench, latency: LatencyResult, throughput: BroadcastDetails['throughput']): string {
  const { rows } = b;
  return (
    `${b.shardCount} shards, ${rows.toLocaleString('en-US')} rows of t(id, g, x) in ${GROUPS} groups. Latency: ${aggregateSql('t')} one at a time, ` +
    `router.broadcast vs the same SQL sent to every shard at once over plain pg.Clients (the slowest answer ends it), ${latency.rounds} interleaved rounds of ${latency.perRound}. ` +
    `Throughput: SELECT id, x FROM t WHERE g = $1 (indexed, ${Math.round(rows / GROUPS)} rows), ${throughput.concurrency} in flight, router.broadcast (pool max 10 per shard) vs the naive ` +
    `broadcast (one pg.Client per shard, one shard after another, rows concatenated), ${throughput.rounds} interleaved rounds of ${throughput.broadcastsPerRound}. ` +
    `Plan cache: router.explain(sql), which plans through the same cache as broadcast and formats the plan, for a cached SQL text vs a new one`
  );
}

export const broadcastSection: Section<BroadcastDetails> = {
  name: 'broadcast',
  title: 'merged aggregate latency vs the slowest shard, throughput vs the naive sequential broadcast, plan-cache hit cost',
  async run(ctx) {
    const shardCount = Math.min(4, ctx.shards.length);
    const rows = size(ctx, 200_000, 40_000);
    const router = await ctx.router(shardCount, { poolMax: 10 });
    await loadRows(ctx, router, shardCount, rows);
    const sql = aggregateSql(`${ctx.schema}.t`);
    const filterSql = filterSqlOn(`${ctx.schema}.t`);
    const clients = ctx.shards
      .slice(0, shardCount)
      .map((s) => new pg.Client({ connectionString: s.connectionString, application_name: 'bench direct' }));
    const naive = await NaiveRouter.connect(ctx.shards.slice(0, shardCount).map((s) => s.connectionString));
    try {
      for (const client of clients) {
        client.on('error', () => undefined);
        await client.connect();
      }
      const b: Bench = { ctx, router, shardCount, rows, sql, filterSql, clients, naive };
      const latency = await measureLatency(b);
      const soloShardMillis = await measureSoloShards(b, latency.perRound);
      const throughput = await measureThroughput(b);
      const planCache = measurePlanCache(b);
      return {
        setup: setupText(b, latency, throughput.details),
        figures: broadcastFigures(b, latency, throughput.details, planCache),
        guard: [
          check(
            'merged aggregate = one server holding every row (text of every group)',
            latency.wrong === 0 && latency.checks > 0,
            `${latency.checks - latency.wrong}/${latency.checks} broadcasts exact`,
          ),
          ...THROUGHPUT_VARIANTS.map((v) =>
            check(
              `${v}: WHERE g = $1 returns exactly that group's rows`,
              throughput.wrong[v] === 0,
              `${(throughput.checks[v] - throughput.wrong[v]).toLocaleString('en-US')}/${throughput.checks[v].toLocaleString('en-US')} broadcasts right (warm-up included)`,
            ),
          ),
        ],
        details: {
          shards: shardCount,
          rows,
          groups: GROUPS,
          latency: {
            sql,
            rounds: latency.rounds,
            queriesPerRound: latency.perRound,
            millis: latency.millis,
            ratio: latency.ratio,
            soloShardMillis,
          },
          throughput: throughput.details,
          planCache,
        },
      };
    } finally {
      await naive.close();
      await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
    }
  },
  format(outcome) {
    const d = outcome.details;
    const l = d.latency.millis;
    const solo = Object.entries(d.latency.soloShardMillis)
      .map(([id, ms]) => `${id} ${ms.toFixed(2)}`)
      .join(', ');
    const q = (v: number) => Math.round(v).toString();
    return [
      formatTable(
        ['aggregate latency', 'p50 ms', 'p99 ms', 'round medians min-max'],
        [
          [
            'router.broadcast (merged)',
            l.broadcast.p50.toFixed(2),
            l.broadcast.p99.toFixed(2),
            `${l.broadcast.roundMedians.min.toFixed(2)}-${l.broadcast.roundMedians.max.toFixed(2)}`,
          ],
          [
            'slowest shard, sent directly',
            l.direct.p50.toFixed(2),
            l.direct.p99.toFixed(2),
            `${l.direct.roundMedians.min.toFixed(2)}-${l.direct.roundMedians.max.toFixed(2)}`,
          ],
        ],
      ),
      `ratio ${d.latency.ratio.toFixed(3)}; each shard alone, p50 ms: ${solo}`,
      formatTable(
        ['filtered broadcast', 'median q/s', 'min', 'max', 'CPU µs/broadcast'],
        (['router', 'naive'] as const).map((v) => [
          v === 'router' ? 'router.broadcast' : 'naive sequential',
          q(d.throughput.perSecond[v].median),
          q(d.throughput.perSecond[v].min),
          q(d.throughput.perSecond[v].max),
          q(d.throughput.cpuMicrosPerBroadcast[v]),
        ]),
      ),
      `ratio router/naive ${d.throughput.ratio.toFixed(3)}; plan cache: hit ${d.planCache.hitMicros.toFixed(2)} µs, miss ${d.planCache.missMicros.toFixed(1)} µs`,
    ].join('\n');
  },
};
