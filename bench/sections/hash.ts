import murmurhash from 'murmurhash';
import { hashKey } from '../src/index.js';
import type { ShardRouter } from '../src/index.js';
import { nowNs, pairedRatios, roundOrder, secondsSince, summarize } from './stats.js';
import type { Series } from './stats.js';

/**
 * Benchmark 1: key -> shard decision throughput on one core, short string keys.
 *
 * Each variant has its own loop function with a single, monomorphic call site, so V8 can inline
 * (or not) each candidate on its merits; a shared `measure(fn)` loop would make the call site
 * megamorphic and measure the indirect call instead. Every result is folded into a value that is
 * returned and accumulated into `sink`, which is printed, so nothing can be dead-code eliminated.
 */

/** The modulus of the hashKey and murmurhash variants: the router's default bucket count. */
export const BUCKETS = 1024;

export interface HashBenchOptions {
  readonly keyCount: number;
  readonly rounds: number;
  /** Each round of each variant repeats full passes over the keys until at least this long. */
  readonly minRoundSeconds: number;
  /** Warm-up time per variant (spread over a few interleaved passes). */
  readonly warmupSeconds: number;
  /** Called after each measured round. */
  readonly onRound?: (round: number, keysPerSecond: Readonly<Record<HashVariant, number>>) => void;
}

export type HashVariant = 'shardFor' | 'hashKey' | 'murmurhash';
export const HASH_VARIANTS: readonly HashVariant[] = ['shardFor', 'hashKey', 'murmurhash'];

export interface HashBenchResult {
  readonly keyCount: number;
  readonly sampleKeys: readonly string[];
  readonly bucketCount: number;
  readonly rounds: number;
  /** keys/s per round and summary, per variant. */
  readonly keysPerSecond: Readonly<Record<HashVariant, Series>>;
  /** Median of per-round paired ratios. */
  readonly shardForVsMurmurhash: number;
  readonly hashKeyVsMurmurhash: number;
  readonly shardForVsHashKey: number;
  readonly identity: IdentityCheck;
  readonly sink: number;
}

export interface IdentityCheck {
  /** Keys for which hashKey(key) was compared with murmurhash.v3(key). */
  readonly checked: number;
  readonly mismatches: number;
  readonly firstMismatch: string | undefined;
  /** Keys for which router.shardFor(key) was compared with the owner of murmurhash.v3(key) % bucketCount. */
  readonly routedChecked: number;
  readonly routedMismatches: number;
}

/** 'user-0' ... 'user-<n-1>': 6 to 11 ASCII characters, built up front so creation is not timed. */
export function makeKeys(count: number): string[] {
  const keys = new Array<string>(count);
  for (let i = 0; i < count; i++) keys[i] = 'user-' + i;
  return keys;
}

function passShardFor(router: ShardRouter, keys: readonly string[]): number {
  let acc = 0;
  for (let i = 0; i < keys.length; i++) {
    const id = router.shardFor(keys[i]!);
    acc = (acc + id.charCodeAt(id.length - 1)) | 0;
  }
  return acc;
}

function passHashKey(keys: readonly string[]): number {
  let acc = 0;
  for (let i = 0; i < keys.length; i++) acc ^= hashKey(keys[i]!) % BUCKETS;
  return acc;
}

function passMurmurhash(keys: readonly string[]): number {
  let acc = 0;
  for (let i = 0; i < keys.length; i++) acc ^= murmurhash.v3(keys[i]!) % BUCKETS;
  return acc;
}

/** Every key: hashKey must equal murmurhash.v3 bit for bit, and the router must route by it. */
export function checkIdentity(router: ShardRouter, keys: readonly string[]): IdentityCheck {
  let mismatches = 0;
  let firstMismatch: string | undefined;
  let routedMismatches = 0;
  const map = router.bucketMap;
  for (const key of keys) {
    const expected = murmurhash.v3(key);
    const actual = hashKey(key);
    if (actual !== expected) {
      mismatches++;
      firstMismatch ??= `${JSON.stringify(key)}: hashKey ${actual} != murmurhash.v3 ${expected}`;
    }
    if (router.shardFor(key) !== map.ownerOf(expected % map.bucketCount)) routedMismatches++;
  }
  return { checked: keys.length, mismatches, firstMismatch, routedChecked: keys.length, routedMismatches };
}

export function runHashBench(router: ShardRouter, options: HashBenchOptions): HashBenchResult {
  const keys = makeKeys(options.keyCount);
  let sink = 0;

  const passes: Record<HashVariant, () => number> = {
    shardFor: () => passShardFor(router, keys),
    hashKey: () => passHashKey(keys),
    murmurhash: () => passMurmurhash(keys),
  };

  /** Full passes until `minSeconds` elapsed; returns keys per second. */
  const timeVariant = (variant: HashVariant, minSeconds: number): number => {
    const pass = passes[variant];
    let count = 0;
    const start = nowNs();
    let seconds = 0;
    do {
      sink = (sink + pass()) | 0;
      count++;
      seconds = secondsSince(start);
    } while (seconds < minSeconds);
    return (count * keys.length) / seconds;
  };

  // Warm-up: a few interleaved slices per variant so all three reach optimized code.
  const warmupSlices = 3;
  for (let slice = 0; slice < warmupSlices; slice++) {
    for (const index of roundOrder(HASH_VARIANTS.length, slice)) timeVariant(HASH_VARIANTS[index]!, options.warmupSeconds / warmupSlices);
  }

  const perRound: Record<HashVariant, number[]> = { shardFor: [], hashKey: [], murmurhash: [] };
  for (let r = 0; r < options.rounds; r++) {
    const thisRound: Record<HashVariant, number> = { shardFor: 0, hashKey: 0, murmurhash: 0 };
    for (const index of roundOrder(HASH_VARIANTS.length, r)) {
      const variant = HASH_VARIANTS[index]!;
      thisRound[variant] = timeVariant(variant, options.minRoundSeconds);
    }
    for (const variant of HASH_VARIANTS) perRound[variant].push(thisRound[variant]);
    options.onRound?.(r + 1, thisRound);
  }

  const identity = checkIdentity(router, keys);
  const medianRatio = (a: HashVariant, b: HashVariant) => summarize(pairedRatios(perRound[a], perRound[b])).median;
  return {
    keyCount: keys.length,
    sampleKeys: [keys[0]!, keys[keys.length - 1]!],
    bucketCount: BUCKETS,
    rounds: options.rounds,
    keysPerSecond: {
      shardFor: summarize(perRound.shardFor),
      hashKey: summarize(perRound.hashKey),
      murmurhash: summarize(perRound.murmurhash),
    },
    shardForVsMurmurhash: medianRatio('shardFor', 'murmurhash'),
    hashKeyVsMurmurhash: medianRatio('hashKey', 'murmurhash'),
    shardForVsHashKey: medianRatio('shardFor', 'hashKey'),
    identity,
    sink,
  };
}
