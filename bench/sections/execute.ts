import pg from 'pg';
import type { ShardRouter } from '../src/index.js';
import { nowNs, pairedRatios, roundOrder, secondsSince, summarize } from './stats.js';
import type { Series } from './stats.js';

/**
 * Benchmark 2: `router.execute(key, 'SELECT $1::int', [key])` against a raw `pg.Pool` on the
 * same shard, with the same pool size and the same number of in-flight callers. All keys route
 * to one shard, so both sides talk to the same server; the difference is the router's own cost
 * (routing, ShardPool/generic-pool acquire and release, result wrapping).
 */

export const EXECUTE_SQL = 'SELECT $1::int';

export interface ExecuteBenchOptions {
  /** In-flight callers (async workers) on each side. */
  readonly concurrency: number;
  /** pg.Pool max for the raw side; must equal the router's pool max. */
  readonly poolMax: number;
  readonly queriesPerRound: number;
  readonly rounds: number;
  readonly warmupRounds: number;
  readonly onRound?: (round: number, queriesPerSecond: Readonly<Record<ExecuteVariant, number>>) => void;
}

export type ExecuteVariant = 'router' | 'raw';
export const EXECUTE_VARIANTS: readonly ExecuteVariant[] = ['router', 'raw'];

export interface ExecuteBenchResult {
  readonly shardId: string;
  readonly concurrency: number;
  readonly poolMax: number;
  readonly queriesPerRound: number;
  readonly rounds: number;
  readonly queriesPerSecond: Readonly<Record<ExecuteVariant, Series>>;
  /** Median of the per-round router/raw ratios (paired, same noise). */
  readonly ratio: number;
  /** median(router) / median(raw), for reference. */
  readonly ratioOfMedians: number;
  /** Benchmark-process CPU per query (µs): the router's own cost, independent of server noise. */
  readonly cpuMicrosPerQuery: Readonly<Record<ExecuteVariant, Series>>;
}

interface Row {
  readonly int4: number;
}

/** The first `count` positive integer keys that the router sends to `shardId`. */
export function keysOnShard(router: ShardRouter, shardId: string, count: number): number[] {
  const keys: number[] = [];
  for (let key = 1; keys.length < count; key++) {
    if (router.shardFor(key) === shardId) keys.push(key);
  }
  return keys;
}

interface RoundResult {
  readonly queriesPerSecond: number;
  /** This process's CPU time (user + system) per query, in microseconds: far less noisy than throughput. */
  readonly cpuMicrosPerQuery: number;
}

/**
 * Runs one query per key with `concurrency` workers pulling the next key from a shared cursor.
 * Checks every answer (the sum of the returned values must equal the sum of the keys sent),
 * which also keeps the results alive.
 */
async function runRound(query: (key: number) => Promise<number>, keys: readonly number[], concurrency: number): Promise<RoundResult> {
  let cursor = 0;
  let sum = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const index = cursor++;
      if (index >= keys.length) return;
      // Not `sum += await ...`: that reads `sum` before the await and loses other workers' additions.
      const value = await query(keys[index]!);
      sum += value;
    }
  };
  const cpuStart = process.cpuUsage();
  const start = nowNs();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = secondsSince(start);
  const cpu = process.cpuUsage(cpuStart);
  const expected = keys.reduce((a, b) => a + b, 0);
  if (sum !== expected) throw new Error(`wrong results: values summed to ${sum}, expected ${expected}`);
  return { queriesPerSecond: keys.length / seconds, cpuMicrosPerQuery: (cpu.user + cpu.system) / keys.length };
}

export async function runExecuteBench(
  router: ShardRouter,
  shard: { readonly id: string; readonly connectionString: string },
  options: ExecuteBenchOptions,
): Promise<ExecuteBenchResult> {
  const keys = keysOnShard(router, shard.id, options.queriesPerRound);
  const pool = new pg.Pool({ connectionString: shard.connectionString, max: options.poolMax });
  // An idle client's socket error must not crash the benchmark; a failing query still throws.
  pool.on('error', () => undefined);

  const queries: Record<ExecuteVariant, (key: number) => Promise<number>> = {
    router: async (key) => {
      const result = await router.execute<Row>(key, EXECUTE_SQL, [key]);
      return result.rows[0]?.int4 ?? Number.NaN;
    },
    raw: async (key) => {
      const result = await pool.query<Row>(EXECUTE_SQL, [key]);
      return result.rows[0]?.int4 ?? Number.NaN;
    },
  };

  try {
    // Warm-up: opens every connection of both pools and gets both paths optimized.
    for (let r = 0; r < options.warmupRounds; r++) {
      for (const index of roundOrder(EXECUTE_VARIANTS.length, r)) {
        await runRound(queries[EXECUTE_VARIANTS[index]!], keys, options.concurrency);
      }
    }

    const perRound: Record<ExecuteVariant, number[]> = { router: [], raw: [] };
    const cpuPerRound: Record<ExecuteVariant, number[]> = { router: [], raw: [] };
    for (let r = 0; r < options.rounds; r++) {
      const thisRound: Record<ExecuteVariant, number> = { router: 0, raw: 0 };
      for (const index of roundOrder(EXECUTE_VARIANTS.length, r)) {
        const variant = EXECUTE_VARIANTS[index]!;
        const result = await runRound(queries[variant], keys, options.concurrency);
        thisRound[variant] = result.queriesPerSecond;
        cpuPerRound[variant].push(result.cpuMicrosPerQuery);
      }
      perRound.router.push(thisRound.router);
      perRound.raw.push(thisRound.raw);
      options.onRound?.(r + 1, thisRound);
    }

    const routerSeries = summarize(perRound.router);
    const rawSeries = summarize(perRound.raw);
    return {
      shardId: shard.id,
      concurrency: options.concurrency,
      poolMax: options.poolMax,
      queriesPerRound: keys.length,
      rounds: options.rounds,
      queriesPerSecond: { router: routerSeries, raw: rawSeries },
      ratio: summarize(pairedRatios(perRound.router, perRound.raw)).median,
      ratioOfMedians: routerSeries.median / rawSeries.median,
      cpuMicrosPerQuery: { router: summarize(cpuPerRound.router), raw: summarize(cpuPerRound.raw) },
    };
  } finally {
    await pool.end();
  }
}
