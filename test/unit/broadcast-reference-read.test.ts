import { beforeAll, describe, expect, it } from 'vitest';
import { planBroadcast } from '../../src/broadcast/plan/planner.js';
import { loadParser } from '../../src/broadcast/plan/sql-parser.js';

/**
 * Regression: a broadcast reading only reference tables must run on one shard. The planner's
 * table walk started at the SELECT's bare body, never reached FROM, and planned a read of every
 * shard, so `SELECT * FROM countries` returned one copy of each row per shard.
 */

const catalog = {
  isAggregate: () => false,
  isReferenceTable: (_schema: string | undefined, name: string) => name === 'countries',
};

beforeAll(() => loadParser());

describe('broadcast of reference tables', () => {
  it('a read of reference tables only is planned on one shard', () => {
    expect(planBroadcast('SELECT * FROM countries ORDER BY code', catalog).kind).toBe('single');
    expect(planBroadcast('SELECT count(*) FROM countries c JOIN countries d ON c.code = d.code', catalog).kind).toBe('single');
  });

  it('a read that also touches another table is not', () => {
    expect(planBroadcast('SELECT * FROM orders', catalog).kind).toBe('select');
  });
});
