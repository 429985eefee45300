import type { ShardRouter } from '../../src/index.js';
import { check, size } from '../section.js';
import type { Section, SectionContext, SectionOutcome } from '../section.js';
import { formatTable, pairedRatios, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import type { ClosedLoopResult } from '../workload.js';

/**
 * Idempotency keys (docs/idempotency.md), four variants in interleaved rounds over 4 shards, the
 * same keys and concurrency:
 * - replay: `execute` with an idempotency key already on record (one point read of the record);
 * - read: a plain point read of a one-row-per-key table (the baseline of a replay);
 * - first: `execute` of an INSERT with a fresh idempotency key (lookup, claim, statement, store, COMMIT);
 * - plain: the same INSERT without a key (its baseline).
 */

const VARIANTS = ['replay', 'read', 'first', 'plain'] as const;
type Variant = (typeof VARIANTS)[number];

export interface IdempotencyDetails {
  readonly concurrency: number;
  readonly opsPerRound: number;
  readonly rounds: number;
  readonly opsPerSecond: Readonly<Record<Variant, Series>>;
  /** This process's CPU per call: what the client side costs, far less noisy than throughput. */
  readonly cpuMicrosPerOp: Readonly<Record<Variant, Series>>;
  readonly replayVsRead: number;
  readonly firstVsPlain: number;
}

interface Plan {
  readonly concurrency: number;
  readonly opsPerRound: number;
  readonly rounds: number;
  readonly warmupRounds: number;
}

async function prepare(ctx: SectionContext, router: ShardRouter, keys: readonly number[]): Promise<void> {
  for (let index = 0; index < Math.min(4, ctx.shards.length); index++) {
    await ctx.admin(index, `CREATE TABLE ${ctx.schema}.points (id bigint PRIMARY KEY, v int NOT NULL)`);
    await ctx.admin(index, `CREATE TABLE ${ctx.schema}.events (k bigint NOT NULL, n int NOT NULL)`);
  }
  await closedLoop(keys.length, 8, async (i) => {
    const key = keys[i]!;
    await router.execute(key, `INSERT INTO ${ctx.schema}.points VALUES ($1, $2)`, [key, key % 1000]);
    const first = await router.execute(key, `INSERT INTO ${ctx.schema}.events VALUES ($1, $2) RETURNING n`, [key, 1], {
      idempotencyKey: `replay-${key}`,
    });
    return !first.replayed;
  });
}

async function measure(ctx: SectionContext, plan: Plan, router: ShardRouter, keys: readonly number[]) {
  const insert = `INSERT INTO ${ctx.schema}.events VALUES ($1, $2) RETURNING n`;
  let wrong = 0;
  let firstRounds = 0;
  let inserted = 0;
  let round = 0;
  const ops: Record<Variant, (index: number) => Promise<boolean>> = {
    replay: async (i) => {
      const result = await router.execute(keys[i]!, insert, [keys[i]!, 1], { idempotencyKey: `replay-${keys[i]!}` });
      return result.replayed && result.rows[0]?.n === 1;
    },
    read: async (i) => {
      const { rows } = await router.execute<{ v: number }>(keys[i]!, `SELECT v FROM ${ctx.schema}.points WHERE id = $1`, [keys[i]!]);
      return rows[0]?.v === keys[i]! % 1000;
    },
    first: async (i) => {
      const result = await router.execute(keys[i]!, insert, [keys[i]!, 2], { idempotencyKey: `first-${round}-${keys[i]!}` });
      inserted++;
      return !result.replayed && result.rows[0]?.n === 2;
    },
    plain: async (i) => {
      const result = await router.execute<{ n: number }>(keys[i]!, insert, [keys[i]!, 3]);
      inserted++;
      return result.rows[0]?.n === 3;
    },
  };
  const results = await interleavedRounds(
    VARIANTS,
    plan,
    async (variant) => {
      if (variant === 'first') round = ++firstRounds;
      const result = await closedLoop(keys.length, plan.concurrency, ops[variant]);
      wrong += result.wrong;
      return result;
    },
    (r, q) =>
      ctx.log(
        `round ${r}: ${VARIANTS.map((v) => `${v} ${Math.round(q[v].opsPerSecond)}`).join('  ')} ops/s (replay/read ${(q.replay.opsPerSecond / q.read.opsPerSecond).toFixed(3)}, first/plain ${(q.first.opsPerSecond / q.plain.opsPerSecond).toFixed(3)})`,
      ),
  );
  return { results, wrong, inserted };
}

function outcome(plan: Plan, measured: Awaited<ReturnType<typeof measure>>, rowsFound: number): SectionOutcome<IdempotencyDetails> {
  const { results } = measured;
  const ops = (v: Variant) => results[v].map((r: ClosedLoopResult) => r.opsPerSecond);
  const series = Object.fromEntries(VARIANTS.map((v) => [v, summarize(ops(v))])) as Record<Variant, Series>;
  const cpu = Object.fromEntries(VARIANTS.map((v) => [v, summarize(results[v].map((r) => r.cpuMicrosPerOp))])) as Record<Variant, Series>;
  const replayVsRead = summarize(pairedRatios(ops('replay'), ops('read'))).median;
  const firstVsPlain = summarize(pairedRatios(ops('first'), ops('plain'))).median;
  return {
    setup: `4 shards, ${plan.concurrency} in flight, pool max ${plan.concurrency}, ${plan.rounds} interleaved rounds of ${plan.opsPerRound} calls per variant`,
    figures: [
      {
        label: 'idempotent replay (execute, key on record)',
        value: series.replay.median,
        unit: 'queries/s',
        baseline: { label: 'plain point read', value: series.read.median },
        ratio: replayVsRead,
        note: 'a replay is one point read of the record',
      },
      {
        label: 'idempotent first run (INSERT, fresh key)',
        value: series.first.median,
        unit: 'queries/s',
        baseline: { label: 'the same INSERT without a key', value: series.plain.median },
        ratio: firstVsPlain,
        note: 'lookup + BEGIN/claim + statement + store + COMMIT vs one round trip',
      },
    ],
    guard: [
      check('every answer right (replays replayed, first runs ran)', measured.wrong === 0, `${measured.wrong} wrong answers`),
      check(
        'every acknowledged insert is there exactly once',
        rowsFound === measured.inserted,
        `${rowsFound} rows for ${measured.inserted} inserts`,
      ),
    ],
    details: {
      concurrency: plan.concurrency,
      opsPerRound: plan.opsPerRound,
      rounds: plan.rounds,
      opsPerSecond: series,
      cpuMicrosPerOp: cpu,
      replayVsRead,
      firstVsPlain,
    },
  };
}

export const idempotencySection: Section<IdempotencyDetails> = {
  name: 'idempotency',
  title: 'idempotency keys: a replay vs a plain point read, a first run vs the same execute without a key',
  async run(ctx) {
    const plan: Plan = { concurrency: 8, opsPerRound: size(ctx, 3_000, 500), rounds: size(ctx, 10, 3), warmupRounds: 1 };
    const router = await ctx.router(Math.min(4, ctx.shards.length), { poolMax: plan.concurrency });
    const keys = Array.from({ length: plan.opsPerRound }, (_, i) => i + 1);
    ctx.log(`${keys.length} keys over ${router.shardIds.length} shards: point rows and records on record`);
    await prepare(ctx, router, keys);
    const measured = await measure(ctx, plan, router, keys);
    const { rows } = await router.broadcast<{ n: string }>(`SELECT count(*) AS n FROM ${ctx.schema}.events WHERE n IN (2, 3)`);
    return outcome(plan, measured, Number(rows[0]!.n));
  },
  format(report) {
    const d = report.details;
    const q = (v: number) => Math.round(v).toString();
    return (
      formatTable(
        ['variant', 'median ops/s', 'min', 'max', 'client CPU µs/call'],
        VARIANTS.map((v) => [
          v,
          q(d.opsPerSecond[v].median),
          q(d.opsPerSecond[v].min),
          q(d.opsPerSecond[v].max),
          d.cpuMicrosPerOp[v].median.toFixed(1),
        ]),
      ) + `\nreplay/read ${d.replayVsRead.toFixed(3)}, first/plain ${d.firstVsPlain.toFixed(3)} (medians of paired rounds)`
    );
  },
};
