import { describe, expect, it } from 'vitest';
import { decisionShardOf, newGid, parsePreparedName, preparedName } from '../../src/twopc/gid.js';

const CLUSTER = '0b9a2f56-3d1e-4c1a-9c55-7f2b8e0d4a11';

describe('gids', () => {
  it('are well-formed and distinct across several refills of the random pool (512 gids per refill)', () => {
    const gids = Array.from({ length: 2_000 }, () => newGid(CLUSTER, 's1'));
    expect(new Set(gids).size).toBe(gids.length);
    const randomParts = gids.map((gid) => gid.split('-').at(-1));
    expect(new Set(randomParts).size).toBe(gids.length);
    for (const gid of gids) {
      expect(gid).toMatch(new RegExp(`^psr:${CLUSTER}:s1:[0-9a-z]{1,13}-[0-9a-f]{16}$`));
      expect(decisionShardOf(gid, CLUSTER)).toBe('s1');
    }
  });

  it("map a participant's prepared name back to the gid and its decision shard", () => {
    const gid = newGid(CLUSTER, 's0');
    expect(parsePreparedName(preparedName(gid, 's3'), CLUSTER)).toMatchObject({ gid, decisionShardId: 's0', participantShardId: 's3' });
  });
});
