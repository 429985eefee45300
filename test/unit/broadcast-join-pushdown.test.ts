import { beforeAll, describe, expect, it } from 'vitest';
import type { PlannerCatalog } from '../../src/broadcast/plan/plan.js';
import { planBroadcast } from '../../src/broadcast/plan/planner.js';
import { loadParser } from '../../src/broadcast/plan/sql-parser.js';

/** Which joins the planner pushes down whole to the shards (join-pushdown.ts), and each table's moves guard. */

const KEYS: Record<string, string> = { users: 'user_id', orders: 'user_id', events: 'id' };
const catalog: PlannerCatalog = {
  isAggregate: () => false,
  isReferenceTable: (_schema, name) => name === 'countries' || name === 'plans',
  shardKey: (_schema, name) => KEYS[name],
  movesGuard: (_schema, name, version, qualifier) =>
    KEYS[name] === undefined ? undefined : `guard(${qualifier === undefined ? '' : `${qualifier}.`}${KEYS[name]}, $${version})`,
};
const kind = (sql: string) => planBroadcast(sql, catalog).kind;

beforeAll(async () => {
  await loadParser();
});

describe('join push-down', () => {
  it.each([
    'SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id',
    'SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.user_id AND o.id > 3',
    'SELECT * FROM users u FULL JOIN orders o USING (user_id)',
    'SELECT * FROM users u, orders o WHERE u.user_id = o.user_id AND o.id > 1',
    'SELECT * FROM users u JOIN events e ON e.id = u.user_id JOIN countries c ON c.code = u.country',
    'SELECT * FROM users u LEFT JOIN countries c ON c.code = u.country',
    'SELECT * FROM countries c RIGHT JOIN users u ON c.code = u.country',
    'SELECT * FROM (countries c JOIN plans p ON p.code = c.code) JOIN users u ON u.country = c.code',
  ])('pushes down %s', (sql) => {
    expect(kind(sql)).toBe('select');
  });

  it.each([
    ['reference table preserved by LEFT JOIN', 'SELECT * FROM countries c LEFT JOIN users u ON u.country = c.code'],
    ['reference table preserved by RIGHT JOIN', 'SELECT * FROM users u RIGHT JOIN countries c ON u.country = c.code'],
    ['FULL JOIN with a reference table', 'SELECT * FROM users u FULL JOIN countries c ON u.country = c.code'],
    ['keys not equated', 'SELECT * FROM users u JOIN orders o ON o.id = u.user_id'],
    ['an OR around the key equality', 'SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id OR o.id = 1'],
    ['commas without a key equality', 'SELECT * FROM users u, orders o WHERE u.name = o.note'],
    ['one of three tables not tied', 'SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id, events e'],
    ['an unregistered table', 'SELECT * FROM users u JOIN notes n ON n.user_id = u.user_id'],
    ['a subquery in ON', 'SELECT * FROM users u JOIN orders o ON o.user_id = u.user_id AND o.id IN (SELECT id FROM events)'],
    ['NATURAL join', 'SELECT * FROM users u NATURAL JOIN orders o'],
  ])('takes the coordinator step for %s', (_, sql) => {
    expect(kind(sql)).toBe('coordinator');
  });

  it('guards every sharded table of the join on its own qualified key, with one map-version parameter', () => {
    const plan = planBroadcast('SELECT count(*) FROM users u JOIN orders o ON o.user_id = u.user_id WHERE o.id > $1', catalog);
    if (plan.kind !== 'select') throw new Error(plan.kind);
    expect(plan.shardSql).toContain('guard(u.user_id, $2)');
    expect(plan.shardSql).toContain('guard(o.user_id, $2)');
    expect(plan.mapVersionParam).toBe(2);
    expect(plan.pushedJoin?.keys.map((key) => `${key.table}.${key.column}`)).toEqual(['users.user_id', 'orders.user_id']);
    expect(plan.pushedJoin?.fallback?.kind).toBe('coordinator');
  });

  it('a join of reference tables only reads one shard', () => {
    expect(kind('SELECT * FROM countries c LEFT JOIN plans p ON p.code = c.code')).toBe('single');
  });
});
