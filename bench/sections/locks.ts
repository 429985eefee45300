import type { ShardRouter } from '../../src/index.js';
import { check, size } from '../section.js';
import type { Section, SectionContext, SectionOutcome } from '../section.js';
import { formatTable, pairedRatios, percentile, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';
import { EXECUTE_SQL, keysOnShard } from './execute.js';

/**
 * withLock (docs/locks.md): (1) withLock around one point statement vs the statement alone,
 * uncontended (a key of its own per call), same concurrency, interleaved rounds; (2) the wait
 * under contention: 8 and 64 callers taking one lock key in turn, each holding it for one
 * statement. Every waiter holds a connection of its own to the key's shard (64 of the local
 * servers' max_connections of 100).
 */

const VARIANTS = ['withLock', 'statement'] as const;
type Variant = (typeof VARIANTS)[number];
const CONCURRENCY = 8;
const WAITERS = [8, 64] as const;

interface Contention {
  readonly waiters: number;
  readonly acquisitions: number;
  readonly perSecond: number;
  readonly waitP50: number;
  readonly waitP99: number;
  readonly maxHolders: number;
}

export interface LocksDetails {
  readonly opsPerSecond: Readonly<Record<Variant, Series>>;
  readonly ratio: number;
  readonly contention: readonly Contention[];
}

async function uncontended(ctx: SectionContext, router: ShardRouter, keys: readonly number[]) {
  let wrong = 0;
  const ops: Record<Variant, (index: number) => Promise<boolean>> = {
    withLock: (index) =>
      router.withLock(`bench-${keys[index]}`, async () => {
        const { rows } = await router.execute<{ int4: number }>(keys[index]!, EXECUTE_SQL, [keys[index]]);
        return rows[0]?.int4 === keys[index];
      }),
    statement: async (index) => {
      const { rows } = await router.execute<{ int4: number }>(keys[index]!, EXECUTE_SQL, [keys[index]]);
      return rows[0]?.int4 === keys[index];
    },
  };
  const rounds = size(ctx, 10, 4);
  const results = await interleavedRounds(
    VARIANTS,
    { rounds, warmupRounds: 1 },
    async (variant) => {
      const result = await closedLoop(keys.length, CONCURRENCY, ops[variant]);
      wrong += result.wrong;
      return result;
    },
    (r, q) =>
      ctx.log(
        `round ${r}: withLock+statement ${Math.round(q.withLock.opsPerSecond)}/s, statement ${Math.round(q.statement.opsPerSecond)}/s`,
      ),
  );
  return { results, wrong, rounds };
}

/** `waiters` callers take one lock key in turn until `acquisitions` were made; wait = call to fn. */
async function contended(
  ctx: SectionContext,
  router: ShardRouter,
  key: number,
  waiters: number,
  acquisitions: number,
): Promise<Contention> {
  let holders = 0;
  let maxHolders = 0;
  const waits: number[] = [];
  const lockKey = `bench-contended-${waiters}`;
  const started = performance.now();
  await closedLoop(acquisitions, waiters, async () => {
    const asked = performance.now();
    return router.withLock(
      lockKey,
      async () => {
        waits.push(performance.now() - asked);
        maxHolders = Math.max(maxHolders, ++holders);
        try {
          const { rows } = await router.execute<{ int4: number }>(key, EXECUTE_SQL, [key]);
          return rows[0]?.int4 === key;
        } finally {
          holders--;
        }
      },
      { waitMillis: 120_000 },
    );
  });
  const seconds = (performance.now() - started) / 1000;
  const result = {
    waiters,
    acquisitions,
    perSecond: acquisitions / seconds,
    waitP50: percentile(waits, 50),
    waitP99: percentile(waits, 99),
    maxHolders,
  };
  ctx.log(
    `${waiters} waiters: ${Math.round(result.perSecond)} acquisitions/s, wait p50 ${result.waitP50.toFixed(1)} ms, p99 ${result.waitP99.toFixed(1)} ms`,
  );
  return result;
}

function outcome(
  measured: Awaited<ReturnType<typeof uncontended>>,
  contention: readonly Contention[],
  perRound: number,
): SectionOutcome<LocksDetails> {
  const ops = (v: Variant) => measured.results[v].map((r) => r.opsPerSecond);
  const withLock = summarize(ops('withLock'));
  const statement = summarize(ops('statement'));
  const ratio = summarize(pairedRatios(ops('withLock'), ops('statement'))).median;
  return {
    setup: `${EXECUTE_SQL} on one shard: withLock(own key) + the statement vs the statement alone, ${CONCURRENCY} in flight, ${measured.rounds} interleaved rounds of ${perRound}; then ${WAITERS.join(' and ')} callers on one lock key`,
    figures: [
      {
        label: 'withLock + one statement',
        value: withLock.median,
        unit: 'queries/s',
        baseline: { label: 'the statement alone', value: statement.median },
        ratio,
        note: 'uncontended: acquire (lock, gate, token), statement, release',
      },
      ...contention.map((c) => ({
        label: `lock wait p99, ${c.waiters} waiters on one key`,
        value: c.waitP99,
        unit: 'ms' as const,
        note: `p50 ${c.waitP50.toFixed(1)} ms, ${Math.round(c.perSecond)} acquisitions/s`,
      })),
    ],
    guard: [
      check('every answer is the key sent', measured.wrong === 0, `${measured.wrong} wrong answers`),
      check(
        'never two holders of one key',
        contention.every((c) => c.maxHolders === 1),
        contention.map((c) => `${c.waiters}: max ${c.maxHolders}`).join(', '),
      ),
    ],
    details: { opsPerSecond: { withLock, statement }, ratio, contention },
  };
}

export const locksSection: Section<LocksDetails> = {
  name: 'locks',
  title: 'withLock + one statement vs the statement alone; lock wait under contention (8 and 64 waiters)',
  async run(ctx) {
    const router = await ctx.router(Math.min(4, ctx.shards.length), { poolMax: CONCURRENCY });
    const shardId = ctx.shards[0]!.id;
    const perRound = size(ctx, 2_000, 500);
    const keys = keysOnShard(router, shardId, perRound);
    const measured = await uncontended(ctx, router, keys);
    const contention: Contention[] = [];
    for (const waiters of WAITERS) contention.push(await contended(ctx, router, keys[0]!, waiters, size(ctx, 2_000, 600)));
    return outcome(measured, contention, perRound);
  },
  format(result) {
    const d = result.details;
    const q = (v: number) => Math.round(v).toString();
    return (
      formatTable(
        ['variant', 'median /s', 'min', 'max'],
        [
          ['withLock(key, statement)', q(d.opsPerSecond.withLock.median), q(d.opsPerSecond.withLock.min), q(d.opsPerSecond.withLock.max)],
          ['statement alone', q(d.opsPerSecond.statement.median), q(d.opsPerSecond.statement.min), q(d.opsPerSecond.statement.max)],
        ],
      ) +
      `\nratio withLock/statement ${d.ratio.toFixed(3)} (median of paired rounds)\n` +
      formatTable(
        ['waiters on one key', 'acquisitions/s', 'wait p50 ms', 'wait p99 ms'],
        d.contention.map((c) => [String(c.waiters), q(c.perSecond), c.waitP50.toFixed(1), c.waitP99.toFixed(1)]),
      )
    );
  },
};
