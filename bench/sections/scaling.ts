import os from 'node:os';
import type { ShardRouter } from '../../src/index.js';
import { createPointTable, pointQuery, pointValue } from '../point-table.js';
import { check, size } from '../section.js';
import type { Figure, Section, SectionContext } from '../section.js';
import { formatTable, pairedRatios, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult, RoundsPlan } from '../workload.js';

/**
 * Point-query throughput through routers over 1, 2 and 4 shards at the same client concurrency,
 * in interleaved rounds. On one machine the shards share its cores with each other and with the
 * client, so this shows what the router adds or loses as the shard count grows (pools, routing,
 * spreading the load), not what separate servers would give.
 */

const SHARD_COUNTS = [1, 2, 4] as const;

export interface ScalingDetails {
  readonly concurrency: number;
  readonly poolMaxPerShard: number;
  readonly queriesPerRound: number;
  readonly rounds: number;
  readonly cores: number;
  readonly variants: readonly {
    readonly shards: number;
    readonly queriesPerSecond: Series;
    readonly vsOneShard: number;
    readonly cpuMicrosPerQuery: number;
  }[];
}

interface ScalingPlan extends RoundsPlan {
  readonly counts: readonly number[];
}

/** Interleaved rounds of the same point queries through the router of each shard count (by name, '1', '2', ...). */
async function measureRounds(
  ctx: SectionContext,
  routers: ReadonlyMap<string, ShardRouter>,
  names: readonly string[],
  plan: ScalingPlan,
): Promise<{ results: Record<string, ClosedLoopResult[]>; checked: Map<string, number>; wrong: Map<string, number> }> {
  const { counts, concurrency, rounds, warmupRounds, queriesPerRound } = plan;
  const checked = new Map(names.map((n) => [n, 0]));
  const wrong = new Map(names.map((n) => [n, 0]));
  ctx.log(
    `${counts.join(', ')} shards, ${concurrency} in flight: ${warmupRounds} warm-up round, then ${rounds} rounds of ${queriesPerRound} queries per shard count`,
  );
  const results = await interleavedRounds(
    names,
    { rounds, warmupRounds },
    async (name) => {
      const router = routers.get(name)!;
      const sql = pointQuery(ctx.schema, `items_${name}`);
      const result = await closedLoop(queriesPerRound, concurrency, async (index) => {
        const id = index + 1;
        const { rows } = await router.execute<{ v: number }>(id, sql, [id]);
        return rows.length === 1 && rows[0]!.v === pointValue(id);
      });
      checked.set(name, checked.get(name)! + result.ops);
      wrong.set(name, wrong.get(name)! + result.wrong);
      return result;
    },
    (r, q) =>
      ctx.log(`round ${r}: ${names.map((n) => `${n} shard${n === '1' ? '' : 's'} ${Math.round(q[n]!.opsPerSecond)}`).join('  ')} q/s`),
  );
  return { results, checked, wrong };
}

export const scalingSection: Section<ScalingDetails> = {
  name: 'scaling',
  title: 'point-query throughput with 1, 2 and 4 shards at fixed client concurrency',
  async run(ctx) {
    const counts = SHARD_COUNTS.filter((n) => n <= ctx.shards.length);
    const concurrency = 16;
    // Never the limit: even one shard gets a connection per in-flight query.
    const poolMaxPerShard = concurrency;
    const queriesPerRound = size(ctx, 8_000, 1_500);
    const rounds = size(ctx, 9, 3);
    const warmupRounds = 1;
    const shardIndex = new Map(ctx.shards.map((s, i) => [s.id, i]));
    const routers = new Map<string, ShardRouter>();
    for (const n of counts) {
      const router = await ctx.router(n, { poolMax: poolMaxPerShard });
      routers.set(String(n), router);
      await createPointTable(ctx, `items_${n}`, queriesPerRound, n, (id) => shardIndex.get(router.shardFor(id))!);
    }
    const names = counts.map(String);
    const { results, checked, wrong } = await measureRounds(ctx, routers, names, {
      counts,
      concurrency,
      rounds,
      warmupRounds,
      queriesPerRound,
    });
    const qps = (name: string) => results[name]!.map((r) => r.opsPerSecond);
    const variants = names.map((name) => ({
      shards: Number(name),
      queriesPerSecond: summarize(qps(name)),
      vsOneShard: summarize(pairedRatios(qps(name), qps('1'))).median,
      cpuMicrosPerQuery: summarize(results[name]!.map((r) => r.cpuMicrosPerOp)).median,
    }));
    const one = variants[0]!;
    const cores = os.cpus().length;
    const figures: Figure[] = variants.slice(1).map((v) => ({
      label: `point queries, ${v.shards} shards`,
      value: v.queriesPerSecond.median,
      unit: 'queries/s',
      baseline: { label: '1 shard', value: one.queriesPerSecond.median },
      ratio: v.vsOneShard,
      note:
        `median of ${rounds} paired rounds; ${cores} cores shared by the client and every shard; ` +
        `client CPU per query ${v.cpuMicrosPerQuery.toFixed(1)} µs vs ${one.cpuMicrosPerQuery.toFixed(1)} µs`,
    }));
    return {
      setup:
        `${pointQuery('s', 't')} through routers over ${counts.join(', ')} shards, ${concurrency} in flight, pool max ${poolMaxPerShard} per shard, ` +
        `${rounds} interleaved rounds of ${queriesPerRound} queries. All shards and the client share this machine's ${cores} cores, so more shards cannot mean more CPU here`,
      figures,
      guard: names.map((n) =>
        check(
          `${n} shard(s): every point query returns its one row`,
          wrong.get(n) === 0,
          `${(checked.get(n)! - wrong.get(n)!).toLocaleString('en-US')}/${checked.get(n)!.toLocaleString('en-US')} right (warm-up included)`,
        ),
      ),
      details: { concurrency, poolMaxPerShard, queriesPerRound, rounds, cores, variants },
    };
  },
  format(outcome) {
    const d = outcome.details;
    const q = (v: number) => Math.round(v).toString();
    return (
      formatTable(
        ['shards', 'median q/s', 'min', 'max', 'vs 1 shard', 'CPU µs/query'],
        d.variants.map((v) => [
          String(v.shards),
          q(v.queriesPerSecond.median),
          q(v.queriesPerSecond.min),
          q(v.queriesPerSecond.max),
          v.vsOneShard.toFixed(3),
          v.cpuMicrosPerQuery.toFixed(1),
        ]),
      ) + `\n(${d.concurrency} in flight; ${d.cores} cores shared by the client and all the shards)`
    );
  },
};
