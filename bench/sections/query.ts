import type { ShardRouter } from '../../src/index.js';
import { atLeast, check, size } from '../section.js';
import type { Section, SectionContext, SectionOutcome } from '../section.js';
import { formatTable, pairedRatios, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult } from '../workload.js';
import { keysOnShard } from './execute.js';

/**
 * `router.query(sql, [key])` (the shard read from the statement: cached analysis, one hash)
 * against `router.execute(key, sql, [key])` (the key given), the same point SELECT on a
 * registered sharded table, the same router and pool, in interleaved rounds. The difference is
 * the cost of routing by the statement.
 */

export const QUERY_RATIO_TARGET = 0.95;
const VARIANTS = ['query', 'execute'] as const;
type Variant = (typeof VARIANTS)[number];

export interface QueryDetails {
  readonly shardId: string;
  readonly sql: string;
  readonly concurrency: number;
  readonly queriesPerRound: number;
  readonly rounds: number;
  readonly queriesPerSecond: Readonly<Record<Variant, Series>>;
  readonly cpuMicrosPerQuery: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
}

async function setUp(ctx: SectionContext, router: ShardRouter, keys: readonly number[]): Promise<string> {
  const table = `${ctx.schema}.points`;
  await router.broadcast(`CREATE TABLE ${table} (k bigint PRIMARY KEY, v integer NOT NULL)`);
  await router.registerShardedTable(table, 'k');
  for (let at = 0; at < keys.length; at += 500) {
    const batch = keys.slice(at, at + 500);
    const values = batch.map((_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ');
    await router.query(
      `INSERT INTO ${table} (k, v) VALUES ${values}`,
      batch.flatMap((key) => [key, key]),
    );
  }
  return `SELECT v FROM ${table} WHERE k = $1`;
}

async function measure(
  ctx: SectionContext,
  router: ShardRouter,
  sql: string,
  keys: readonly number[],
  rounds: number,
  concurrency: number,
): Promise<{ results: Record<Variant, ClosedLoopResult[]>; wrong: number; checked: number }> {
  let wrong = 0;
  let checked = 0;
  const ops: Record<Variant, (index: number) => Promise<boolean>> = {
    query: async (index) => {
      const key = keys[index]!;
      const { rows } = await router.query<{ v: number }>(sql, [key]);
      return rows.length === 1 && rows[0]!.v === key;
    },
    execute: async (index) => {
      const key = keys[index]!;
      const { rows } = await router.execute<{ v: number }>(key, sql, [key]);
      return rows.length === 1 && rows[0]!.v === key;
    },
  };
  const results = await interleavedRounds(
    VARIANTS,
    { rounds, warmupRounds: 2 },
    async (variant) => {
      const result = await closedLoop(keys.length, concurrency, ops[variant]);
      wrong += result.wrong;
      checked += result.ops;
      return result;
    },
    (r, q) =>
      ctx.log(
        `round ${r}: query ${Math.round(q.query.opsPerSecond)}  execute ${Math.round(q.execute.opsPerSecond)} q/s  (ratio ${(q.query.opsPerSecond / q.execute.opsPerSecond).toFixed(3)})`,
      ),
  );
  return { results, wrong, checked };
}

function outcome(
  shardId: string,
  sql: string,
  concurrency: number,
  keys: number,
  rounds: number,
  measured: Awaited<ReturnType<typeof measure>>,
): SectionOutcome<QueryDetails> {
  const { results, wrong, checked } = measured;
  const qps = (v: Variant) => results[v].map((r) => r.opsPerSecond);
  const cpu = (v: Variant) => summarize(results[v].map((r) => r.cpuMicrosPerOp));
  const ratio = summarize(pairedRatios(qps('query'), qps('execute'))).median;
  const series = { query: summarize(qps('query')), execute: summarize(qps('execute')) };
  return {
    setup: `${sql} on shard ${shardId}: router.query(sql, [key]) vs router.execute(key, sql, [key]), one router, ${concurrency} in flight, ${rounds} interleaved rounds of ${keys} queries`,
    figures: [
      {
        label: 'router.query point select',
        value: series.query.median,
        unit: 'queries/s',
        baseline: { label: 'router.execute with the key', value: series.execute.median },
        ratio,
        note: `median of ${rounds} paired rounds`,
        target: atLeast('ratio', ratio, QUERY_RATIO_TARGET, 'x'),
      },
      {
        label: 'client CPU per query (query)',
        value: cpu('query').median,
        unit: 'µs',
        baseline: { label: 'execute', value: cpu('execute').median },
        note: 'lower is better',
      },
    ],
    guard: [check('every answer is the key sent', wrong === 0, `${checked - wrong}/${checked} answers right (warm-up included)`)],
    details: {
      shardId,
      sql,
      concurrency,
      queriesPerRound: keys,
      rounds,
      queriesPerSecond: series,
      cpuMicrosPerQuery: { query: cpu('query'), execute: cpu('execute') },
      ratio,
    },
  };
}

export const querySection: Section<QueryDetails> = {
  name: 'query',
  title: 'router.query point select (shard read from the statement) vs router.execute with the key given',
  async run(ctx) {
    const concurrency = 8;
    const rounds = size(ctx, 25, 5);
    const router = await ctx.router(Math.min(4, ctx.shards.length), { poolMax: concurrency });
    const shardId = ctx.shards[0]!.id;
    const keys = keysOnShard(router, shardId, size(ctx, 10_000, 2_000));
    const sql = await setUp(ctx, router, keys);
    ctx.log(`shard ${shardId}, concurrency ${concurrency}: 2 warm-up rounds, then ${rounds} rounds of ${keys.length} queries`);
    return outcome(shardId, sql, concurrency, keys.length, rounds, await measure(ctx, router, sql, keys, rounds, concurrency));
  },
  format(result) {
    const d = result.details;
    const q = (v: number) => Math.round(v).toString();
    const row = (name: string, s: Series, cpu: Series) => [name, q(s.median), q(s.min), q(s.max), cpu.median.toFixed(2)];
    return (
      formatTable(
        ['variant', 'median q/s', 'min', 'max', 'CPU µs/query'],
        [
          row('router.query(sql, [key])', d.queriesPerSecond.query, d.cpuMicrosPerQuery.query),
          row('router.execute(key, sql, [key])', d.queriesPerSecond.execute, d.cpuMicrosPerQuery.execute),
        ],
      ) + `\nratio query/execute ${d.ratio.toFixed(3)} (median of paired rounds); target >= ${QUERY_RATIO_TARGET}`
    );
  },
};
