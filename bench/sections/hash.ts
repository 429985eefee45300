import murmurhash from 'murmurhash';
import { hashKey } from '../../src/index.js';
import type { ShardKey, ShardRouter } from '../../src/index.js';
import { formatValue } from '../report.js';
import { atLeast, check, size } from '../section.js';
import type { Figure, GuardCheck, Section, SectionContext } from '../section.js';
import { formatTable, nowNs, pairedRatios, roundOrder, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';

/**
 * Hot path (micro): the key -> shard decision on one core, for short strings, integers and
 * bigints, against the murmurhash package used as-is (`murmurhash.v3(String(key)) % 1024`), in
 * interleaved rounds. No I/O: the router only supplies its bucket map.
 *
 * Each variant has its own loop function with a single, monomorphic call site, so V8 can inline
 * (or not) each candidate on its merits; a shared `measure(fn)` loop would make the call site
 * megamorphic and measure the indirect call instead. Every result is folded into a value that is
 * returned and accumulated into `sink`, which is reported, so nothing can be dead-code eliminated.
 */

/** The modulus of the hashKey and murmurhash variants: the router's default bucket count. */
export const BUCKETS = 1024;
/** The string target from the issue, keys per second. */
export const SHORT_STRING_TARGET = 25e6;
/** Keys per timed slice: long enough that reading the clock once per slice costs nothing. */
const SLICE = 1 << 14;

export const KEY_KINDS = ['string', 'integer', 'bigint'] as const;
export type KeyKind = (typeof KEY_KINDS)[number];

type Pass = (from: number, to: number) => number;

interface Rate {
  readonly perCpuSecond: number;
  readonly perSecond: number;
}

interface Variant {
  readonly name: string;
  readonly kind: KeyKind;
  readonly role: 'router' | 'hashKey' | 'murmurhash';
  readonly pass: Pass;
}

/** Short string keys 'user-0' ... : 6 to 11 ASCII characters. */
function stringKeys(count: number): string[] {
  return Array.from({ length: count }, (_, i) => 'user-' + i);
}

/** Serial ids 1 ... count (1 to 7 digits). */
function integerKeys(count: number): number[] {
  return Array.from({ length: count }, (_, i) => i + 1);
}

/** Snowflake-like 19-digit ids: a fixed epoch part plus a sequence in the low 22 bits. */
function bigintKeys(count: number): bigint[] {
  return Array.from({ length: count }, (_, i) => 1_300_000_000_000_000_000n + (BigInt(i) << 22n));
}

/** The string-key variants: the router, hashKey alone, the murmurhash package. */
function stringVariants(router: ShardRouter, strings: readonly string[]): Variant[] {
  return [
    {
      name: 'router.shardFor(key)',
      kind: 'string',
      role: 'router',
      pass: (from, to) => {
        let acc = 0;
        for (let i = from; i < to; i++) {
          const id = router.shardFor(strings[i]!);
          acc = (acc + id.charCodeAt(id.length - 1)) | 0;
        }
        return acc;
      },
    },
    {
      name: `hashKey(key) % ${BUCKETS}`,
      kind: 'string',
      role: 'hashKey',
      pass: (from, to) => {
        let acc = 0;
        for (let i = from; i < to; i++) acc ^= hashKey(strings[i]!) % BUCKETS;
        return acc;
      },
    },
    {
      name: `murmurhash.v3(key) % ${BUCKETS}`,
      kind: 'string',
      role: 'murmurhash',
      pass: (from, to) => {
        let acc = 0;
        for (let i = from; i < to; i++) acc ^= murmurhash.v3(strings[i]!) % BUCKETS;
        return acc;
      },
    },
  ];
}

/** The integer-key variants: the router and the murmurhash package on String(key). */
function integerVariants(router: ShardRouter, integers: readonly number[]): Variant[] {
  return [
    {
      name: 'router.shardFor(key)',
      kind: 'integer',
      role: 'router',
      pass: (from, to) => {
        let acc = 0;
        for (let i = from; i < to; i++) {
          const id = router.shardFor(integers[i]!);
          acc = (acc + id.charCodeAt(id.length - 1)) | 0;
        }
        return acc;
      },
    },
    {
      name: `murmurhash.v3(String(key)) % ${BUCKETS}`,
      kind: 'integer',
      role: 'murmurhash',
      pass: (from, to) => {
        let acc = 0;
        for (let i = from; i < to; i++) acc ^= murmurhash.v3(String(integers[i]!)) % BUCKETS;
        return acc;
      },
    },
  ];
}

/** The bigint-key variants: the router and the murmurhash package on String(key). */
function bigintVariants(router: ShardRouter, bigints: readonly bigint[]): Variant[] {
  return [
    {
      name: 'router.shardFor(key)',
      kind: 'bigint',
      role: 'router',
      pass: (from, to) => {
        let acc = 0;
        for (let i = from; i < to; i++) {
          const id = router.shardFor(bigints[i]!);
          acc = (acc + id.charCodeAt(id.length - 1)) | 0;
        }
        return acc;
      },
    },
    {
      name: `murmurhash.v3(String(key)) % ${BUCKETS}`,
      kind: 'bigint',
      role: 'murmurhash',
      pass: (from, to) => {
        let acc = 0;
        for (let i = from; i < to; i++) acc ^= murmurhash.v3(String(bigints[i]!)) % BUCKETS;
        return acc;
      },
    },
  ];
}

function variants(router: ShardRouter, strings: readonly string[], integers: readonly number[], bigints: readonly bigint[]): Variant[] {
  return [...stringVariants(router, strings), ...integerVariants(router, integers), ...bigintVariants(router, bigints)];
}

interface IdentityCheck {
  readonly checked: number;
  readonly mismatches: number;
  readonly routedMismatches: number;
  readonly firstMismatch: string | undefined;
}

/** Every key: hashKey must equal murmurhash.v3(String(key)) bit for bit, and the router must route by it. */
function checkIdentity(router: ShardRouter, keys: readonly ShardKey[]): IdentityCheck {
  let mismatches = 0;
  let routedMismatches = 0;
  let firstMismatch: string | undefined;
  const map = router.bucketMap;
  for (const key of keys) {
    const expected = murmurhash.v3(String(key));
    const actual = hashKey(key);
    if (actual !== expected) {
      mismatches++;
      firstMismatch ??= `${typeof key} ${String(key)}: hashKey ${actual} != murmurhash.v3 ${expected}`;
    }
    if (router.shardFor(key) !== map.ownerOf(expected % map.bucketCount)) {
      routedMismatches++;
      firstMismatch ??= `${typeof key} ${String(key)}: shardFor ${router.shardFor(key)} != owner ${map.ownerOf(expected % map.bucketCount)}`;
    }
  }
  return { checked: keys.length, mismatches, routedMismatches, firstMismatch };
}

export interface HashDetails {
  readonly keysPerKind: number;
  readonly samples: Readonly<Record<KeyKind, readonly string[]>>;
  readonly rounds: number;
  readonly secondsPerRound: number;
  /** keysPerSecond: per CPU-second of this process; keysPerWallSecond: per wall-clock second. */
  readonly variants: readonly {
    readonly name: string;
    readonly kind: KeyKind;
    readonly keysPerSecond: Series;
    readonly keysPerWallSecond: Series;
    readonly vsMurmurhash: number;
  }[];
  readonly identity: IdentityCheck;
  readonly sink: number;
}

/** Folds every pass's result, so that no loop can be dead-code eliminated; reported in the details. */
interface Sink {
  value: number;
}

/**
 * Slices of the key array (wrapping around) until the loop has had `minSeconds` of CPU (or 4x
 * that of wall time passed); returns keys per CPU-second and per wall-clock second. The loop
 * is single-threaded and does no I/O, so this process's CPU time is the time it actually ran:
 * time spent descheduled by other processes on a shared machine is not counted.
 */
function time(variant: Variant, keyCount: number, minSeconds: number, sink: Sink): Rate {
  let keys = 0;
  let from = 0;
  const cpuStart = process.cpuUsage();
  const start = nowNs();
  let cpuSeconds = 0;
  let seconds = 0;
  do {
    const to = Math.min(from + SLICE, keyCount);
    sink.value = (sink.value + variant.pass(from, to)) | 0;
    keys += to - from;
    from = to === keyCount ? 0 : to;
    const cpu = process.cpuUsage(cpuStart);
    cpuSeconds = (cpu.user + cpu.system) / 1e6;
    seconds = secondsSince(start);
  } while (cpuSeconds < minSeconds && seconds < 4 * minSeconds);
  return { perCpuSecond: keys / cpuSeconds, perSecond: keys / seconds };
}

interface HashPlan {
  readonly keyCount: number;
  readonly rounds: number;
  readonly secondsPerRound: number;
  readonly warmupSeconds: number;
}

/** Per variant, its rates of each round: keys per CPU-second and per wall-clock second. */
interface RoundRates {
  readonly perRound: number[][];
  readonly wallPerRound: number[][];
}

/** The warm-up, then interleaved rounds of every variant. */
function measureVariants(ctx: SectionContext, plan: HashPlan, all: readonly Variant[], sink: Sink): RoundRates {
  const { keyCount, rounds, secondsPerRound, warmupSeconds } = plan;
  ctx.log(
    `${keyCount.toLocaleString('en-US')} keys per kind, ${all.length} variants; warm-up ${warmupSeconds}s each, then ${rounds} interleaved rounds`,
  );
  for (let slice = 0; slice < 3; slice++) {
    for (const index of roundOrder(all.length, slice)) time(all[index]!, keyCount, warmupSeconds / 3, sink);
  }
  const perRound = all.map(() => [] as number[]);
  const wallPerRound = all.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    for (const index of roundOrder(all.length, r)) {
      const rate = time(all[index]!, keyCount, secondsPerRound, sink);
      perRound[index]!.push(rate.perCpuSecond);
      wallPerRound[index]!.push(rate.perSecond);
    }
    const line = KEY_KINDS.map((kind) => {
      const [mine, base] = [perRound[indexOf(all, kind, 'router')]![r]!, perRound[indexOf(all, kind, 'murmurhash')]![r]!];
      return `${kind} ${(mine / 1e6).toFixed(1)} vs ${(base / 1e6).toFixed(2)}`;
    });
    ctx.log(`round ${r + 1}: shardFor vs murmurhash, M keys per CPU-second: ${line.join(', ')}`);
  }
  return { perRound, wallPerRound };
}

function indexOf(all: readonly Variant[], kind: KeyKind, role: Variant['role']): number {
  return all.findIndex((v) => v.kind === kind && v.role === role);
}

function hashFigure(
  all: readonly Variant[],
  detailVariants: HashDetails['variants'],
  rounds: number,
  kind: KeyKind,
  label: string,
): Figure {
  const routerVariant = detailVariants[indexOf(all, kind, 'router')]!;
  const base = detailVariants[indexOf(all, kind, 'murmurhash')]!;
  const value = routerVariant.keysPerSecond.median;
  return {
    label,
    value,
    unit: 'keys/s',
    baseline: { label: base.name, value: base.keysPerSecond.median },
    ratio: routerVariant.vsMurmurhash,
    note:
      `keys per CPU-second, median of ${rounds} interleaved rounds on one core (best ${formatValue(routerVariant.keysPerSecond.max, 'keys/s')}); ` +
      `wall clock: median ${formatValue(routerVariant.keysPerWallSecond.median, 'keys/s')}`,
    ...(kind === 'string' ? { target: atLeast('value', value, SHORT_STRING_TARGET, 'keys/s') } : {}),
  };
}

function identityGuard(identity: IdentityCheck): GuardCheck[] {
  const total = identity.checked.toLocaleString('en-US');
  return [
    check(
      'hashKey(key) === murmurhash.v3(String(key))',
      identity.mismatches === 0,
      `${(identity.checked - identity.mismatches).toLocaleString('en-US')}/${total} keys of all three kinds bit-identical`,
    ),
    check(
      'shardFor(key) === owner of murmurhash.v3(String(key)) % buckets',
      identity.routedMismatches === 0,
      `${(identity.checked - identity.routedMismatches).toLocaleString('en-US')}/${total} keys` +
        (identity.firstMismatch === undefined ? '' : `; first mismatch ${identity.firstMismatch}`),
    ),
  ];
}

export const hashSection: Section<HashDetails> = {
  name: 'hash',
  title: 'key -> shard decision on one core (short strings, integers, bigints) vs the murmurhash package',
  async run(ctx) {
    const plan: HashPlan = {
      keyCount: size(ctx, 1_000_000, 200_000),
      rounds: size(ctx, 7, 3),
      secondsPerRound: size(ctx, 0.25, 0.08),
      warmupSeconds: size(ctx, 0.6, 0.15),
    };
    const { keyCount, rounds, secondsPerRound } = plan;
    // No I/O here: any router works, and one shard is enough to own every bucket.
    const router = await ctx.router(Math.min(4, ctx.shards.length));
    const strings = stringKeys(keyCount);
    const integers = integerKeys(keyCount);
    const bigints = bigintKeys(keyCount);
    const all = variants(router, strings, integers, bigints);
    const sink: Sink = { value: 0 };
    const { perRound, wallPerRound } = measureVariants(ctx, plan, all, sink);

    const identity = checkIdentity(router, [...strings, ...integers, ...bigints]);
    const detailVariants = all.map((variant, i) => ({
      name: variant.name,
      kind: variant.kind,
      keysPerSecond: summarize(perRound[i]!),
      keysPerWallSecond: summarize(wallPerRound[i]!),
      vsMurmurhash: summarize(pairedRatios(perRound[i]!, perRound[indexOf(all, variant.kind, 'murmurhash')]!)).median,
    }));
    return {
      setup:
        `router.shardFor(key) on one core, ${keyCount.toLocaleString('en-US')} keys of each kind (strings ${strings[0]}..${strings[keyCount - 1]}, ` +
        `integers ${integers[0]}..${integers[keyCount - 1]}, 19-digit bigints), against the murmurhash package as-is ` +
        `(murmurhash.v3(String(key)) % ${BUCKETS}), ${rounds} interleaved rounds of ${secondsPerRound} CPU-seconds per variant; ` +
        'rates are keys per CPU-second of this process (single-threaded loop, no I/O), so time other processes took from it is not counted, ' +
        'while garbage collection on helper threads is (it counts against the variants that allocate)',
      figures: [
        hashFigure(all, detailVariants, rounds, 'string', "router.shardFor, short strings ('user-N')"),
        hashFigure(all, detailVariants, rounds, 'integer', 'router.shardFor, integers (serial ids)'),
        hashFigure(all, detailVariants, rounds, 'bigint', 'router.shardFor, bigints (19 digits)'),
      ],
      guard: identityGuard(identity),
      details: {
        keysPerKind: keyCount,
        samples: {
          string: [strings[0]!, strings[keyCount - 1]!],
          integer: [String(integers[0]), String(integers[keyCount - 1])],
          bigint: [String(bigints[0]), String(bigints[keyCount - 1])],
        },
        rounds,
        secondsPerRound,
        variants: detailVariants,
        identity,
        sink: sink.value,
      },
    };
  },
  format(outcome) {
    const d = outcome.details;
    const m = (v: number) => (v / 1e6).toFixed(2);
    return (
      formatTable(
        ['kind', 'variant', 'M keys/CPU-s', 'min', 'max', 'wall M keys/s', 'vs murmurhash'],
        d.variants.map((v) => [
          v.kind,
          v.name,
          m(v.keysPerSecond.median),
          m(v.keysPerSecond.min),
          m(v.keysPerSecond.max),
          m(v.keysPerWallSecond.median),
          `${v.vsMurmurhash.toFixed(2)}x`,
        ]),
        [0, 1],
      ) + `\n(target: short strings >= ${formatValue(SHORT_STRING_TARGET, 'keys/s')}; sink ${d.sink})`
    );
  },
};
