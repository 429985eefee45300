import { describe, expect, it } from 'vitest';
import { Broadcaster } from '../../src/broadcast/broadcaster.js';
import type { BroadcastRouterContext } from '../../src/broadcast/broadcaster.js';
import type { ShardPool } from '../../src/pool/shard-pool.js';

/** A shard that answers the capability probe (pg_database and pg_proc) with `answer`, recording what it was asked. */
function probedShard(shardId: string, answer: { datcollate: string; provider: string; locale: string; names: string[] }) {
  const queries: string[] = [];
  const fake = {
    shardId,
    query: async (sql: string) => {
      queries.push(sql);
      return { rows: [answer], rowCount: 1, fields: [], command: 'SELECT' };
    },
  };
  return { pool: fake as unknown as ShardPool, queries };
}

const unused = (): never => {
  throw new Error('not used by planning');
};

/** The router's port, none of it used while planning. */
const router: BroadcastRouterContext = {
  routing: unused,
  retryingStaleMap: unused,
  registeredTable: () => undefined,
  movesGuard: () => undefined,
  pool: unused,
  defaultTimeoutMillis: 1_000,
  runWrite: unused,
};

describe('Broadcaster.open', () => {
  it('loads the parser and probes every shard once: aggregates of any shard plan as aggregates', async () => {
    const s0 = probedShard('s0', { datcollate: 'C', provider: 'c', locale: '', names: ['count', 'sum'] });
    const s1 = probedShard('s1', { datcollate: 'en_US.UTF-8', provider: 'c', locale: '', names: ['count', 'my_agg'] });
    const broadcaster = await Broadcaster.open(router, [s0.pool, s1.pool]);
    expect(s0.queries).toHaveLength(1);
    expect(s1.queries).toHaveLength(1);
    expect(broadcaster.explain('SELECT count(*) FROM t')).toContain('sum of counts');
    // my_agg is an aggregate on s1 only, and one that cannot merge: it runs as a coordinator step.
    expect(broadcaster.explain('SELECT my_agg(x) FROM t')).toContain('Coordinator step');
    expect(broadcaster.explain('SELECT other_fn(x) FROM t')).toContain('Concatenate');
    expect(broadcaster.explain('SELECT lower(x) FROM t')).toContain('Concatenate');
  });

  it('fails when a shard cannot be probed', async () => {
    const broken = { shardId: 's0', query: async () => Promise.reject(new Error('connection refused')) } as unknown as ShardPool;
    await expect(Broadcaster.open(router, [broken])).rejects.toThrow('connection refused');
  });
});
