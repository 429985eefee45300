import { describe, expect, it } from 'vitest';
import { BucketMap } from '../../src/index.js';

describe('BucketMap', () => {
  it('spreads buckets evenly in contiguous ranges at creation', () => {
    const map = BucketMap.even(['s0', 's1', 's2'], 1024);
    expect(map.version).toBe(1);
    expect(map.bucketCount).toBe(1024);
    const sizes = [...map.bucketsPerShard().values()];
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(1024);
    // Contiguous: the owner changes exactly twice along the buckets.
    let changes = 0;
    for (let b = 1; b < 1024; b++) if (map.ownerOf(b) !== map.ownerOf(b - 1)) changes++;
    expect(changes).toBe(2);
    expect(map.shardIds()).toEqual(['s0', 's1', 's2']);
  });

  it('round-trips through its stored form', () => {
    const map = BucketMap.even(['a', 'b'], 8);
    const copy = BucketMap.fromOwners(3, map.owners);
    expect(copy.owners).toEqual(['a', 'a', 'a', 'a', 'b', 'b', 'b', 'b']);
    expect(copy.version).toBe(3);
  });

  it('rejects out-of-range buckets and malformed maps with INVALID_ARGUMENT', () => {
    const map = BucketMap.even(['a'], 4);
    expect(() => map.ownerOf(4)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => map.ownerOf(-1)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => BucketMap.even([], 4)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => BucketMap.even(['a'], 0)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => BucketMap.fromOwners(0, ['a'])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => BucketMap.fromOwners(1, [])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
