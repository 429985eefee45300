import murmurhash from 'murmurhash';
import { describe, expect, it } from 'vitest';
import { ShardRouterError, bucketOf, hashKey } from '../../src/index.js';
import type { ShardKey } from '../../src/index.js';
import { seededRandom } from '../support/random.js';

const random = seededRandom(20261121);
const int = (n: number) => Math.floor(random() * n);

// Code points from every UTF-8 length class, plus lone surrogates (TextEncoder makes them U+FFFD).
const ALPHABETS: (() => string)[] = [
  () => String.fromCharCode(0x20 + int(0x5f)), // ASCII
  () => String.fromCharCode(0x80 + int(0x780)), // 2-byte UTF-8 (Latin-1, Greek, Cyrillic...)
  () => String.fromCharCode(0x800 + int(0xd000 - 0x800)), // 3-byte UTF-8 (CJK...)
  () => String.fromCodePoint(0x1f300 + int(0x300)), // emoji: 4 bytes, a surrogate pair
  () => String.fromCodePoint(0x10000 + int(0xfffff)), // any supplementary-plane code point
  () => String.fromCharCode(0xd800 + int(0x800)), // a lone surrogate
];

function randomString(maxLength: number, alphabets: number): string {
  const length = 1 + int(maxLength);
  let text = '';
  for (let i = 0; i < length; i++) text += ALPHABETS[int(alphabets)]!();
  return text;
}

function expectSameAsOracle(keys: ShardKey[]): void {
  const mismatches = keys.filter((key) => hashKey(key) !== murmurhash.v3(String(key)));
  expect(mismatches.slice(0, 5)).toEqual([]);
}

describe('hashKey', () => {
  it('equals murmurhash.v3(String(key)) for 40k ASCII strings of every tail length', () => {
    expectSameAsOracle(Array.from({ length: 40_000 }, () => randomString(40, 1)));
  });

  it('equals the oracle for 40k multi-byte strings: 2/3/4-byte UTF-8, emoji, surrogate pairs, lone surrogates', () => {
    const keys = Array.from({ length: 40_000 }, () => randomString(24, ALPHABETS.length));
    keys.push('😀', 'a😀', 'ab😀', 'abc😀', '\ud83d', 'x\ude00y', 'Ωmega', '日本語キー', 'ascii-then-ü');
    expectSameAsOracle(keys);
  });

  it('equals the oracle with NUL and one non-ASCII code unit at every position of keys of length 1 to 12', () => {
    // The ASCII path ORs every code unit of the blocks and the tail into one test at the end; the first
    // non-ASCII code unit anywhere (block or tail) must send the key to the UTF-8 path.
    const keys: string[] = [];
    for (let length = 1; length <= 12; length++) {
      for (let at = 0; at < length; at++) {
        for (const odd of ['\u0000', '\u007f', '\u0080', '\u00ff', '\u0100', '\u20ac', '\ud83d']) {
          keys.push(`${'k'.repeat(at)}${odd}${'x'.repeat(length - at - 1)}`);
        }
      }
    }
    expectSameAsOracle(keys);
  });

  it('equals the oracle for 20k numbers and 20k bigints, negative and huge', () => {
    const numbers = Array.from({ length: 20_000 }, (_, i) => (i % 2 === 0 ? int(1e9) : -int(Number.MAX_SAFE_INTEGER)));
    numbers.push(0, -1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER);
    const bigints = Array.from({ length: 20_000 }, () => BigInt(int(1e9)) * BigInt(int(1e9)) * BigInt(int(1e9)) - 10n ** 20n);
    expectSameAsOracle([...numbers, ...bigints]);
  });

  it('treats 42, 42n and "42" as one key, and -0 as "0"', () => {
    expect(hashKey(42)).toBe(hashKey('42'));
    expect(hashKey(42n)).toBe(hashKey('42'));
    expect(hashKey(-0)).toBe(hashKey('0'));
    expect(hashKey(-7n)).toBe(hashKey('-7'));
  });

  it('is a known value for a fixed key (stable across versions and machines)', () => {
    expect(hashKey('hello')).toBe(613153351);
    expect(hashKey('hello')).toBe(murmurhash.v3('hello'));
  });

  const invalidKeys: [string, unknown][] = [
    ['null', null],
    ['undefined', undefined],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
    ['a fraction', 1.5],
    ['an unsafe integer', 2 ** 53],
    ['an object', { id: 1 }],
    ['an array', [1]],
    ['a boolean', true],
    ['the empty string', ''],
    ['a symbol', Symbol('k')],
    ['a function', () => 1],
  ];
  it.each(invalidKeys)('rejects %s with INVALID_KEY', (_, key) => {
    let thrown: unknown;
    try {
      hashKey(key as ShardKey);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ShardRouterError);
    expect((thrown as ShardRouterError).code).toBe('INVALID_KEY');
  });
});

describe('bucketOf', () => {
  it('is hashKey % bucketCount', () => {
    for (const key of ['a', 'user-1', 7, 99n]) expect(bucketOf(key, 1024)).toBe(hashKey(key) % 1024);
  });

  // The issue asked for every bucket within ±10% of the mean. At 1M keys / 1024 buckets that is
  // ±3.1σ, which a perfectly uniform hash misses in ~1.8 buckets on average; the specified hash
  // (murmur3 of the decimal text) misses in exactly one: bucket 63 holds 873 ids, -10.6%. So this
  // asserts what uniformity does guarantee, and pins the near-miss so a hash change shows up.
  it('spreads 1M sequential ids over 1024 buckets like a uniform hash', () => {
    const counts = new Uint32Array(1024);
    for (let id = 1; id <= 1_000_000; id++) counts[bucketOf(id, 1024)]!++;
    const mean = 1_000_000 / 1024;
    const chiSquare = counts.reduce((sum, count) => sum + (count - mean) ** 2 / mean, 0);
    // 99.9th percentile of chi-square with 1023 degrees of freedom is about 1168.
    expect(chiSquare).toBeLessThan(1168);
    const outside10 = [...counts.keys()].filter((bucket) => Math.abs(counts[bucket]! - mean) > mean * 0.1);
    expect(outside10).toEqual([63]);
    expect(counts[63]).toBe(873);
    for (const count of counts) expect(Math.abs(count - mean)).toBeLessThanOrEqual(mean * 0.11);
  });

  it.each([0, -1, 1.5, Number.NaN])('rejects bucketCount %s with INVALID_ARGUMENT', (bucketCount) => {
    expect(() => bucketOf('k', bucketCount)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
