import { describe, expect, it } from 'vitest';
import { narrowedTo, requireCoverage } from '../../src/broadcast/routing.js';
import type { BroadcastRouting } from '../../src/broadcast/routing.js';

/** A map of 8 buckets over three members: s0 owns 0-2, s1 owns 3-5, s2 owns 6-7. */
const routing: BroadcastRouting = {
  mapVersion: 7,
  shardIds: ['s0', 's1', 's2'],
  owners: ['s0', 's0', 's0', 's1', 's1', 's1', 's2', 's2'],
};

describe('narrowedTo', () => {
  it('keeps every member when the read needs every bucket', () => {
    expect(narrowedTo(routing, undefined)).toBe(routing);
  });

  it("reads only the owners of the pinned keys' buckets, in member order", () => {
    expect(narrowedTo(routing, [7, 1])).toEqual({ ...routing, shardIds: ['s0', 's2'], buckets: [7, 1] });
    expect(narrowedTo(routing, [4, 5]).shardIds).toEqual(['s1']);
  });

  it('sends a read that pins no key (an empty IN list) to one member', () => {
    expect(narrowedTo(routing, []).shardIds).toEqual(['s0']);
  });

  it('routes by the map it is given: after a move, the new owner is read', () => {
    const moved = { ...routing, mapVersion: 8, owners: routing.owners.map((owner, bucket) => (bucket === 1 ? 's2' : owner)) };
    expect(narrowedTo(moved, [1]).shardIds).toEqual(['s2']);
    expect(narrowedTo(moved, [1]).mapVersion).toBe(8);
  });
});

describe('requireCoverage', () => {
  it('passes when the shards read own every bucket needed', () => {
    expect(() => requireCoverage(routing)).not.toThrow();
    expect(() => requireCoverage(narrowedTo(routing, [0, 6]))).not.toThrow();
  });

  it('fails (retryable STALE_BUCKET_MAP) when a needed bucket belongs to a shard not read', () => {
    const missing = { ...routing, shardIds: ['s0', 's1'] };
    expect(() => requireCoverage(missing)).toThrow(expect.objectContaining({ code: 'STALE_BUCKET_MAP', retryable: true }));
    // A narrowed read that needs only s0's buckets is covered by s0 alone; one that needs bucket 6 is not.
    expect(() => requireCoverage({ ...routing, shardIds: ['s0'], buckets: [0, 2] })).not.toThrow();
    expect(() => requireCoverage({ ...routing, shardIds: ['s0'], buckets: [0, 6] })).toThrow(
      expect.objectContaining({ code: 'STALE_BUCKET_MAP' }),
    );
    // A bucket outside the map is never covered.
    expect(() => requireCoverage({ ...routing, buckets: [99] })).toThrow(expect.objectContaining({ code: 'STALE_BUCKET_MAP' }));
  });
});
