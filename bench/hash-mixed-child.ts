/**
 * The child of the hash section's mixed-process case (bench/sections/hash-mixed.ts): a fresh
 * process that first hashes every kind of key through `router.shardFor` and `hashKey`
 * (integers, bigints, ASCII, multi-byte and emoji strings, and invalid keys that throw), as a
 * real service does, and only then times short ASCII keys against a Math.imul MurmurHash3
 * written out in this file, in interleaved rounds. Prints one JSON line (MixedHashResult).
 *
 * Input (env): PSR_BENCH_ROUTER, JSON { shards, catalogSchema }, and PSR_BENCH_PLAN, JSON MixedHashPlan.
 */
import murmurhash from 'murmurhash';
import { hashKey, ShardRouter } from '../src/index.js';
import type { ShardKey } from '../src/index.js';
import type { MixedHashPlan, MixedHashResult } from './sections/hash-mixed.js';
import { pairedRatios, roundOrder, summarize } from './stats.js';

/** MurmurHash3 x86 32-bit, seed 0, of an ASCII string, with Math.imul: the reference of the issue. */
function referenceMurmur3(key: string): number {
  const length = key.length;
  const blockEnd = length & ~3;
  let h = 0;
  let i = 0;
  for (; i < blockEnd; i += 4) {
    let k = key.charCodeAt(i) | (key.charCodeAt(i + 1) << 8) | (key.charCodeAt(i + 2) << 16) | (key.charCodeAt(i + 3) << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    h ^= k;
    h = (Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64) | 0;
  }
  const rest = length & 3;
  if (rest !== 0) {
    let k = key.charCodeAt(i);
    if (rest > 1) k |= key.charCodeAt(i + 1) << 8;
    if (rest > 2) k |= key.charCodeAt(i + 2) << 16;
    k = Math.imul(k, 0xcc9e2d51);
    h ^= Math.imul((k << 15) | (k >>> 17), 0x1b873593);
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Every kind of key a service may route: the pollution that the measured loops come after. */
function mixedKeys(count: number): ShardKey[] {
  const keys: ShardKey[] = [];
  for (let i = 0; i < count; i++) {
    keys.push(i, -i, 2 ** 40 + i, 1_300_000_000_000_000_000n + BigInt(i), `k${i}`, `clé-${i}`, `ключ-${i}`, `用户${i}`, `😀${i}`);
  }
  return keys;
}

const INVALID_KEYS: readonly unknown[] = ['', 1.5, Number.NaN, 2 ** 60, null, undefined, {}, [], true];

/** Hashes every mixed key through both entry points (and the invalid ones, which throw); returns mismatches against murmurhash. */
function pollute(router: ShardRouter, keys: readonly ShardKey[], passes: number): { mismatches: number; threw: number } {
  let mismatches = 0;
  let threw = 0;
  for (let pass = 0; pass < passes; pass++) {
    for (const key of keys) {
      if (hashKey(key) !== murmurhash.v3(String(key))) mismatches++;
      router.shardFor(key);
    }
    for (const key of INVALID_KEYS) {
      for (const entry of [() => hashKey(key as ShardKey), () => router.shardFor(key as ShardKey)]) {
        try {
          entry();
        } catch {
          threw++;
        }
      }
    }
  }
  return { mismatches, threw };
}

type Pass = (from: number, to: number) => number;

function passes(router: ShardRouter, strings: readonly string[]): Record<'shardFor' | 'hashKey' | 'reference', Pass> {
  return {
    shardFor: (from, to) => {
      let acc = 0;
      for (let i = from; i < to; i++) {
        const id = router.shardFor(strings[i]!);
        acc = (acc + id.charCodeAt(id.length - 1)) | 0;
      }
      return acc;
    },
    hashKey: (from, to) => {
      let acc = 0;
      for (let i = from; i < to; i++) acc ^= hashKey(strings[i]!) % 1024;
      return acc;
    },
    reference: (from, to) => {
      let acc = 0;
      for (let i = from; i < to; i++) acc ^= referenceMurmur3(strings[i]!) % 1024;
      return acc;
    },
  };
}

/** Keys per CPU-second of one pass over slices of the keys until `seconds` of CPU. */
function rate(pass: Pass, keyCount: number, seconds: number, sink: { value: number }): number {
  const slice = 1 << 14;
  let keys = 0;
  let from = 0;
  const start = process.cpuUsage();
  let cpu = 0;
  do {
    const to = Math.min(from + slice, keyCount);
    sink.value = (sink.value + pass(from, to)) | 0;
    keys += to - from;
    from = to === keyCount ? 0 : to;
    const used = process.cpuUsage(start);
    cpu = (used.user + used.system) / 1e6;
  } while (cpu < seconds);
  return keys / cpu;
}

async function main(): Promise<void> {
  const { shards, catalogSchema } = JSON.parse(process.env.PSR_BENCH_ROUTER!) as {
    shards: { id: string; connectionString: string }[];
    catalogSchema: string;
  };
  const plan = JSON.parse(process.env.PSR_BENCH_PLAN!) as MixedHashPlan;
  const router = await ShardRouter.connect({ shards, catalogSchema, recovery: { intervalMillis: 0, atConnect: false } });
  try {
    const polluted = pollute(router, mixedKeys(plan.mixedKeysPerKind), 3);
    const strings = Array.from({ length: plan.keyCount }, (_, i) => `user-${i}`);
    let identical = 0;
    for (const key of strings) if (hashKey(key) === murmurhash.v3(key) && referenceMurmur3(key) === murmurhash.v3(key)) identical++;
    const variants = passes(router, strings);
    const names = Object.keys(variants) as (keyof typeof variants)[];
    const sink = { value: 0 };
    for (let w = 0; w < 3; w++) for (const name of names) rate(variants[name], plan.keyCount, plan.secondsPerRound, sink);
    const perRound = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<(typeof names)[number], number[]>;
    for (let r = 0; r < plan.rounds; r++) {
      for (const index of roundOrder(names.length, r))
        perRound[names[index]!].push(rate(variants[names[index]!], plan.keyCount, plan.secondsPerRound, sink));
    }
    const result: MixedHashResult = {
      mixedMismatches: polluted.mismatches,
      invalidThrew: polluted.threw,
      asciiIdentical: identical,
      asciiChecked: strings.length,
      keysPerSecond: {
        shardFor: summarize(perRound.shardFor),
        hashKey: summarize(perRound.hashKey),
        reference: summarize(perRound.reference),
      },
      ratios: {
        shardFor: summarize(pairedRatios(perRound.shardFor, perRound.reference)).median,
        hashKey: summarize(pairedRatios(perRound.hashKey, perRound.reference)).median,
      },
      sink: sink.value,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await router.close();
  }
}

await main();
