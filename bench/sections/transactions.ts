import type { ShardRouter } from '../../src/index.js';
import { atLeast, check, size } from '../section.js';
import type { Section } from '../section.js';
import { formatTable, nowNs, pairedRatios, percentile, roundOrder, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';

/** The target (issue 18): 2-shard (2PC) throughput at least 0.6x the single-shard (1PC) one. */
export const TWO_SHARD_RATIO_TARGET = 0.6;

/**
 * Money transfers through `router.transaction`, each an UPDATE debit plus an UPDATE
 * credit. Single-shard transfers (both accounts on one shard: the plain 1PC path) against
 * 2-shard transfers (accounts on two shards: two-phase commit with the decision row on one of
 * them), in interleaved rounds on the same router, pool and concurrency. Each variant has its
 * own accounts, and concurrent transfers almost never share one, so this measures the commit
 * protocol rather than row-lock waits.
 */

export interface TransferBenchOptions {
  /** In-flight transfers (async workers). */
  readonly concurrency: number;
  readonly transfersPerRound: number;
  readonly rounds: number;
  readonly warmupRounds: number;
  /** Schema for the accounts table, created on every shard (dropped by the caller). */
  readonly schema: string;
  readonly onRound?: (round: number, transfersPerSecond: Readonly<Record<TransferVariant, number>>) => void;
}

export type TransferVariant = 'singleShard' | 'twoShard';
export const TRANSFER_VARIANTS: readonly TransferVariant[] = ['singleShard', 'twoShard'];

export interface LatencyMillis {
  readonly p50: number;
  readonly p99: number;
}

/** The correctness guard: every balance as expected, money conserved, nothing left prepared. */
export interface TransferGuard {
  readonly ok: boolean;
  readonly totalBefore: number;
  readonly totalAfter: number;
  readonly accounts: number;
  /** Accounts whose balance differs from initial +- the transfers that committed. */
  readonly wrongBalances: number;
  /** This cluster's prepared transactions still on the shards (recovery is off on this router). */
  readonly preparedLeft: number;
  /** Shards router.status() could not reach for the prepared-transaction check. */
  readonly unreachableShards: number;
  /** Accounts the guard expected (every account of every pair). */
  readonly expectedAccounts: number;
  readonly transfers: number;
}

export interface TransferBenchResult {
  readonly shardIds: readonly string[];
  readonly concurrency: number;
  readonly poolMax: number;
  readonly transfersPerRound: number;
  readonly rounds: number;
  readonly transfersPerSecond: Readonly<Record<TransferVariant, Series>>;
  /** Per transfer, over every measured round. */
  readonly latencyMillis: Readonly<Record<TransferVariant, LatencyMillis>>;
  /** Median of the per-round twoShard/singleShard ratios (paired, same noise). */
  readonly ratio: number;
  readonly ratioOfMedians: number;
  /** Benchmark-process CPU per transfer (µs), median over rounds. */
  readonly cpuMicrosPerTransfer: Readonly<Record<TransferVariant, Series>>;
  readonly guard: TransferGuard;
}

interface Pair {
  readonly from: number;
  readonly to: number;
  /** Committed transfers over this pair, for the guard. */
  moved: number;
}

const INITIAL_BALANCE = 1_000_000;
const AMOUNT = 1;
/** Pairs per variant, far above the concurrency: in-flight transfers take consecutive pairs. */
const PAIRS_PER_WORKER = 16;

/** Integer keys grouped by the shard that owns them, `perShard` each. */
function keysByShard(router: ShardRouter, perShard: number): Map<string, number[]> {
  const byShard = new Map(router.shardIds.map((id) => [id, [] as number[]]));
  for (let key = 1; [...byShard.values()].some((keys) => keys.length < perShard); key++) {
    const keys = byShard.get(router.shardFor(key))!;
    if (keys.length < perShard) keys.push(key);
  }
  return byShard;
}

/**
 * Single-shard pairs rotate over the shards so every shard works; 2-shard pairs go from shard
 * i to shard i+1, so every shard is both debited and credited. Within a pair the order of the
 * two UPDATEs is fixed, so two transfers over one pair wait for each other but never deadlock.
 */
function makePairs(router: ShardRouter, count: number): Record<TransferVariant, Pair[]> {
  const shardIds = router.shardIds;
  const byShard = keysByShard(router, 4 * Math.ceil(count / shardIds.length) + 4);
  const take = (shardId: string) => byShard.get(shardId)!.shift()!;
  const pairs: Record<TransferVariant, Pair[]> = { singleShard: [], twoShard: [] };
  for (let p = 0; p < count; p++) {
    const a = shardIds[p % shardIds.length]!;
    const b = shardIds[(p + 1) % shardIds.length]!;
    pairs.singleShard.push({ from: take(a), to: take(a), moved: 0 });
    pairs.twoShard.push({ from: take(a), to: take(b), moved: 0 });
  }
  return pairs;
}

interface RoundResult {
  readonly transfersPerSecond: number;
  readonly cpuMicrosPerTransfer: number;
  readonly latenciesMillis: number[];
}

async function runRound(
  router: ShardRouter,
  schema: string,
  pairs: readonly Pair[],
  transfers: number,
  concurrency: number,
): Promise<RoundResult> {
  const debit = `UPDATE ${schema}.accounts SET balance = balance - $2 WHERE id = $1`;
  const credit = `UPDATE ${schema}.accounts SET balance = balance + $2 WHERE id = $1`;
  const latencies = new Array<number>(transfers);
  let cursor = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const index = cursor++;
      if (index >= transfers) return;
      const pair = pairs[index % pairs.length]!;
      const start = nowNs();
      await router.transaction([pair.from, pair.to], async (tx) => {
        const debited = await tx.execute(pair.from, debit, [pair.from, AMOUNT]);
        const credited = await tx.execute(pair.to, credit, [pair.to, AMOUNT]);
        if (debited.rowCount !== 1 || credited.rowCount !== 1) throw new Error(`account ${pair.from} or ${pair.to} is missing`);
      });
      latencies[index] = secondsSince(start) * 1e3;
      pair.moved++;
    }
  };
  const cpuStart = process.cpuUsage();
  const start = nowNs();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = secondsSince(start);
  const cpu = process.cpuUsage(cpuStart);
  return { transfersPerSecond: transfers / seconds, cpuMicrosPerTransfer: (cpu.user + cpu.system) / transfers, latenciesMillis: latencies };
}

async function totalBalance(router: ShardRouter, schema: string): Promise<number> {
  let total = 0;
  for (const shardId of router.shardIds) {
    const { rows } = await router.executeOn<{ total: string }>(
      shardId,
      `SELECT coalesce(sum(balance), 0)::text AS total FROM ${schema}.accounts`,
    );
    total += Number(rows[0]?.total);
  }
  return total;
}

async function checkAfterwards(
  router: ShardRouter,
  schema: string,
  pairs: Record<TransferVariant, Pair[]>,
  totalBefore: number,
): Promise<TransferGuard> {
  const expected = new Map<number, number>();
  let transfers = 0;
  for (const pair of [...pairs.singleShard, ...pairs.twoShard]) {
    expected.set(pair.from, INITIAL_BALANCE - pair.moved * AMOUNT);
    expected.set(pair.to, INITIAL_BALANCE + pair.moved * AMOUNT);
    transfers += pair.moved;
  }
  let wrongBalances = 0;
  let accounts = 0;
  for (const shardId of router.shardIds) {
    const { rows } = await router.executeOn<{ id: string; balance: string }>(
      shardId,
      `SELECT id::text, balance::text FROM ${schema}.accounts`,
    );
    for (const row of rows) {
      accounts++;
      if (expected.get(Number(row.id)) !== Number(row.balance)) wrongBalances++;
    }
  }
  const status = await router.status();
  const preparedLeft = status.shards.reduce((sum, shard) => sum + shard.preparedTransactions.filter((p) => p.ours).length, 0);
  const unreachableShards = status.shards.filter((shard) => !shard.reachable).length;
  const totalAfter = await totalBalance(router, schema);
  const ok =
    unreachableShards === 0 && totalAfter === totalBefore && accounts === expected.size && wrongBalances === 0 && preparedLeft === 0;
  return {
    ok,
    totalBefore,
    totalAfter,
    accounts,
    wrongBalances,
    preparedLeft,
    unreachableShards,
    expectedAccounts: expected.size,
    transfers,
  };
}

/** `router` must have pool max >= concurrency per shard, so the pool is never what limits either variant. */
export async function runTransferBench(router: ShardRouter, poolMax: number, options: TransferBenchOptions): Promise<TransferBenchResult> {
  const { schema, concurrency } = options;
  const pairs = makePairs(router, concurrency * PAIRS_PER_WORKER);
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await router.executeOn(shardId, `CREATE TABLE ${schema}.accounts (id bigint PRIMARY KEY, balance bigint NOT NULL)`);
  }
  const ids = [...pairs.singleShard, ...pairs.twoShard].flatMap((pair) => [pair.from, pair.to]);
  for (const shardId of router.shardIds) {
    const mine = ids.filter((id) => router.shardFor(id) === shardId);
    await router.executeOn(shardId, `INSERT INTO ${schema}.accounts (id, balance) SELECT unnest($1::bigint[]), $2`, [
      mine,
      INITIAL_BALANCE,
    ]);
  }
  const totalBefore = await totalBalance(router, schema);

  // Warm-up: opens the pools' connections and gets both paths optimized.
  for (let r = 0; r < options.warmupRounds; r++) {
    for (const index of roundOrder(TRANSFER_VARIANTS.length, r)) {
      const variant = TRANSFER_VARIANTS[index]!;
      await runRound(router, schema, pairs[variant], options.transfersPerRound, concurrency);
    }
  }

  const perRound: Record<TransferVariant, number[]> = { singleShard: [], twoShard: [] };
  const cpuPerRound: Record<TransferVariant, number[]> = { singleShard: [], twoShard: [] };
  const latencies: Record<TransferVariant, number[]> = { singleShard: [], twoShard: [] };
  for (let r = 0; r < options.rounds; r++) {
    const thisRound: Record<TransferVariant, number> = { singleShard: 0, twoShard: 0 };
    for (const index of roundOrder(TRANSFER_VARIANTS.length, r)) {
      const variant = TRANSFER_VARIANTS[index]!;
      const result = await runRound(router, schema, pairs[variant], options.transfersPerRound, concurrency);
      thisRound[variant] = result.transfersPerSecond;
      cpuPerRound[variant].push(result.cpuMicrosPerTransfer);
      for (const ms of result.latenciesMillis) latencies[variant].push(ms);
    }
    perRound.singleShard.push(thisRound.singleShard);
    perRound.twoShard.push(thisRound.twoShard);
    options.onRound?.(r + 1, thisRound);
  }

  const guard = await checkAfterwards(router, schema, pairs, totalBefore);
  const single = summarize(perRound.singleShard);
  const two = summarize(perRound.twoShard);
  const latency = (values: readonly number[]): LatencyMillis => ({ p50: percentile(values, 50), p99: percentile(values, 99) });
  return {
    shardIds: router.shardIds,
    concurrency,
    poolMax,
    transfersPerRound: options.transfersPerRound,
    rounds: options.rounds,
    transfersPerSecond: { singleShard: single, twoShard: two },
    latencyMillis: { singleShard: latency(latencies.singleShard), twoShard: latency(latencies.twoShard) },
    ratio: summarize(pairedRatios(perRound.twoShard, perRound.singleShard)).median,
    ratioOfMedians: two.median / single.median,
    cpuMicrosPerTransfer: { singleShard: summarize(cpuPerRound.singleShard), twoShard: summarize(cpuPerRound.twoShard) },
    guard,
  };
}

export const transactionsSection: Section<TransferBenchResult> = {
  name: 'transactions',
  title: '1PC vs 2PC transactions: single-shard vs 2-shard transfers through router.transaction',
  async run(ctx) {
    const concurrency = 16;
    // A pool big enough that neither variant waits for connections (a 2-shard transfer holds one per shard).
    const poolMax = 16;
    const router = await ctx.router(Math.min(2, ctx.shards.length), { poolMax });
    if (router.shardIds.length < 2) throw new Error('the transactions section needs at least 2 shards');
    const options: TransferBenchOptions = {
      concurrency,
      transfersPerRound: size(ctx, 2_000, 300),
      rounds: size(ctx, 11, 3),
      warmupRounds: 1,
      schema: ctx.schema,
      onRound: (r, t) =>
        ctx.log(
          `round ${r}: single-shard ${Math.round(t.singleShard)}  2-shard ${Math.round(t.twoShard)} transfers/s  (ratio ${(t.twoShard / t.singleShard).toFixed(3)})`,
        ),
    };
    ctx.log(
      `${router.shardIds.join(', ')}, concurrency ${concurrency}, pool max ${poolMax}: ${options.warmupRounds} warm-up round, then ${options.rounds} rounds of ${options.transfersPerRound} transfers per variant`,
    );
    const result = await runTransferBench(router, poolMax, options);
    const { singleShard, twoShard } = result.latencyMillis;
    const g = result.guard;
    return {
      setup:
        `transfers (UPDATE debit + UPDATE credit) through router.transaction over ${result.shardIds.join(', ')}, ${concurrency} in flight, pool max ${poolMax} per shard, ` +
        `${result.rounds} interleaved rounds of ${result.transfersPerRound}: both accounts on one shard (1PC) vs on two shards (2PC)`,
      figures: [
        {
          label: '2-shard transfer (2PC) throughput',
          value: result.transfersPerSecond.twoShard.median,
          unit: 'transfers/s',
          baseline: { label: 'single-shard (1PC)', value: result.transfersPerSecond.singleShard.median },
          ratio: result.ratio,
          note: `median of ${result.rounds} paired rounds`,
          target: atLeast('ratio', result.ratio, TWO_SHARD_RATIO_TARGET, 'x'),
        },
        {
          label: '2-shard transfer (2PC) p50 latency',
          value: twoShard.p50,
          unit: 'ms',
          baseline: { label: 'single-shard (1PC)', value: singleShard.p50 },
          ratio: twoShard.p50 / singleShard.p50,
        },
        {
          label: '2-shard transfer (2PC) p99 latency',
          value: twoShard.p99,
          unit: 'ms',
          baseline: { label: 'single-shard (1PC)', value: singleShard.p99 },
          ratio: twoShard.p99 / singleShard.p99,
        },
      ],
      guard: [
        check(
          'every balance = initial +- its committed transfers',
          g.wrongBalances === 0 && g.accounts === g.expectedAccounts,
          `${g.transfers} transfers, ${g.accounts}/${g.expectedAccounts} accounts, ${g.wrongBalances} wrong balances`,
        ),
        check('money conserved', g.totalAfter === g.totalBefore, `total ${g.totalBefore} -> ${g.totalAfter}`),
        check(
          'no prepared transaction left behind',
          g.preparedLeft === 0 && g.unreachableShards === 0,
          `${g.preparedLeft} left, ${g.unreachableShards} shards unreachable`,
        ),
      ],
      details: result,
    };
  },
  format(outcome) {
    const d = outcome.details;
    const q = (v: number) => Math.round(v).toString();
    const row = (name: string, s: Series, l: LatencyMillis, cpu: Series) => [
      name,
      q(s.median),
      q(s.min),
      q(s.max),
      l.p50.toFixed(2),
      l.p99.toFixed(2),
      cpu.median.toFixed(1),
    ];
    return (
      formatTable(
        ['variant', 'median transfers/s', 'min', 'max', 'p50 ms', 'p99 ms', 'CPU µs/transfer'],
        [
          row('single-shard (1PC)', d.transfersPerSecond.singleShard, d.latencyMillis.singleShard, d.cpuMicrosPerTransfer.singleShard),
          row('2-shard (2PC)', d.transfersPerSecond.twoShard, d.latencyMillis.twoShard, d.cpuMicrosPerTransfer.twoShard),
        ],
      ) +
      `\nratio 2-shard/single-shard ${d.ratio.toFixed(3)} (median of paired rounds; ratio of medians ${d.ratioOfMedians.toFixed(3)}); target >= ${TWO_SHARD_RATIO_TARGET}`
    );
  },
};
