import pg from 'pg';
import { atMost, check, size } from '../section.js';
import type { Section } from '../section.js';
import { formatTable, nowNs, pairedRatios, percentile, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { interleavedRounds } from '../workload.js';

/**
 * A broadcast that needs the coordinator step (an expression over an aggregate and a DISTINCT
 * aggregate: `SELECT g, round(avg(x), 2), count(DISTINCT y) FROM t GROUP BY g`) over 4 shards,
 * against the same query on one server holding all the rows (a plain pg.Client), in interleaved
 * rounds. The guard compares every answer, as text, with the one server's.
 */

const sqlOn = (table: string) => `SELECT g, round(avg(x), 2) AS ax, count(DISTINCT y) AS dy FROM ${table} GROUP BY g ORDER BY g`;
const GROUPS = 50;
const VARIANTS = ['coordinator', 'oneServer'] as const;
type Variant = (typeof VARIANTS)[number];
/** The aim: at most 2x one server. */
const RATIO_AIM = 2;

export interface CoordinatorDetails {
  readonly shards: number;
  readonly rows: number;
  readonly sql: string;
  readonly rounds: number;
  readonly perRound: number;
  readonly millis: Readonly<Record<Variant, { readonly p50: number; readonly p99: number; readonly roundMedians: Series }>>;
  readonly ratio: number;
}

export const coordinatorSection: Section<CoordinatorDetails> = {
  name: 'coordinator',
  title: 'broadcast coordinator step (round(avg), count(DISTINCT)) vs one server holding every row',
  async run(ctx) {
    const shardCount = Math.min(4, ctx.shards.length);
    const rows = size(ctx, 200_000, 40_000);
    const router = await ctx.router(shardCount);
    const index = new Map(ctx.shards.map((s, i) => [s.id, i]));
    const ids = Array.from({ length: shardCount }, () => [] as number[]);
    for (let id = 1; id <= rows; id++) ids[index.get(router.shardFor(id))!]!.push(id);
    const create = (table: string) => `CREATE TABLE ${ctx.schema}.${table} (id int PRIMARY KEY, g int NOT NULL, x int NOT NULL, y int)`;
    const values = `id % ${GROUPS}, id * 37 % 1000, id % 97`;
    for (let shard = 0; shard < shardCount; shard++) {
      await ctx.admin(shard, create('t'));
      await ctx.admin(shard, `INSERT INTO ${ctx.schema}.t SELECT id, ${values} FROM unnest($1::int[]) AS id`, [ids[shard]]);
      await ctx.admin(shard, `VACUUM ANALYZE ${ctx.schema}.t`);
    }
    await ctx.admin(0, create('t_all'));
    await ctx.admin(0, `INSERT INTO ${ctx.schema}.t_all SELECT id, ${values} FROM generate_series(1, ${rows}) AS id`);
    await ctx.admin(0, `VACUUM ANALYZE ${ctx.schema}.t_all`);
    const sql = sqlOn(`${ctx.schema}.t`);
    const oneSql = sqlOn(`${ctx.schema}.t_all`);
    const client = new pg.Client({ connectionString: ctx.shards[0]!.connectionString });
    await client.connect();
    try {
      const text = (result: readonly Record<string, unknown>[]) => JSON.stringify(result);
      const expected = text((await client.query(oneSql)).rows);
      let checks = 0;
      let wrong = 0;
      const timeOne: Record<Variant, () => Promise<number>> = {
        coordinator: async () => {
          const start = nowNs();
          const result = await router.broadcast(sql);
          const ms = secondsSince(start) * 1e3;
          checks++;
          if (text(result.rows) !== expected) wrong++;
          return ms;
        },
        oneServer: async () => {
          const start = nowNs();
          await client.query(oneSql);
          return secondsSince(start) * 1e3;
        },
      };
      const rounds = size(ctx, 8, 3);
      const perRound = size(ctx, 4, 2);
      ctx.log(
        `${rows.toLocaleString('en-US')} rows in ${GROUPS} groups over ${shardCount} shards; 1 warm-up round, ${rounds} rounds of ${perRound}`,
      );
      const results = await interleavedRounds(
        VARIANTS,
        { rounds, warmupRounds: 1 },
        async (variant) => {
          const times: number[] = [];
          for (let i = 0; i < perRound; i++) times.push(await timeOne[variant]());
          return times;
        },
        (r, t) =>
          ctx.log(
            `round ${r}: coordinator ${summarize(t.coordinator).median.toFixed(1)} ms, one server ${summarize(t.oneServer).median.toFixed(1)} ms`,
          ),
      );
      const roundMedians = (v: Variant) => results[v].map((times) => summarize(times).median);
      const ratio = summarize(pairedRatios(roundMedians('coordinator'), roundMedians('oneServer'))).median;
      const stats = (v: Variant) => {
        const all = results[v].flat();
        return { p50: percentile(all, 50), p99: percentile(all, 99), roundMedians: summarize(roundMedians(v)) };
      };
      const millis = { coordinator: stats('coordinator'), oneServer: stats('oneServer') };
      return {
        setup: `${shardCount} shards, ${rows} rows, ${sql}`,
        figures: [
          {
            label: `coordinator step over ${shardCount} shards, p50 latency`,
            value: millis.coordinator.p50,
            unit: 'ms',
            baseline: { label: 'one server holding every row', value: millis.oneServer.p50 },
            ratio,
            note: `median of ${rounds} paired round medians`,
            target: atMost('ratio', ratio, RATIO_AIM, 'x'),
          },
        ],
        guard: [check('coordinator answers equal one server', wrong === 0, `${checks - wrong}/${checks} answers equal (warm-up included)`)],
        details: { shards: shardCount, rows, sql, rounds, perRound, millis, ratio },
      };
    } finally {
      await client.end().catch(() => undefined);
    }
  },
  format(outcome) {
    const d = outcome.details;
    return [
      formatTable(
        ['query', 'p50 ms', 'p99 ms', 'round medians min-max'],
        VARIANTS.map((v) => [
          v === 'coordinator' ? 'router.broadcast (coordinator step)' : 'one server, all rows',
          d.millis[v].p50.toFixed(2),
          d.millis[v].p99.toFixed(2),
          `${d.millis[v].roundMedians.min.toFixed(2)}-${d.millis[v].roundMedians.max.toFixed(2)}`,
        ]),
      ),
      `ratio ${d.ratio.toFixed(3)} (aim <= ${RATIO_AIM})`,
    ].join('\n');
  },
};
