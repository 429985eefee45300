import { beforeAll, describe, expect, it } from 'vitest';
import { loadParser } from '../../src/broadcast/plan/sql-parser.js';
import type { RegisteredTable } from '../../src/catalog/registries.js';
import { decodeId, ID_BITS_RUN_OUT_AT, idFromCounter, IDS_PER_MS_PER_SHARD, MAX_ID_SLOTS } from '../../src/ids/layout.js';
import type { Analysis } from '../../src/query/analysis.js';
import { analyze } from '../../src/query/analyze.js';
import { insertPart } from '../../src/query/insert-split.js';
import { canonicalKey } from '../../src/query/key-values.js';
import { routeOf } from '../../src/query/route.js';
import type { RouteMap } from '../../src/query/route.js';

/**
 * router.query's analysis and routes without a database: which shards a statement goes to for
 * given params, how an INSERT is split, and what is refused (UNSUPPORTED naming the construct).
 * Shards are a fake map: a key's shard is 's' + its first character.
 */

const TABLES: Record<string, RegisteredTable> = {
  users: { table: 'public.users', kind: 'sharded', shardKey: 'id' },
  orders: { table: 'public.orders', kind: 'sharded', shardKey: 'user_id' },
  tags: { table: 'public.tags', kind: 'sharded', shardKey: 'tag' },
  countries: { table: 'public.countries', kind: 'reference', shardKey: undefined },
};
const TYPES: Record<string, 'integer' | 'text'> = { 'public.users': 'integer', 'public.orders': 'integer', 'public.tags': 'text' };
const MAP: RouteMap = { shardFor: (key) => `s${key[0]}`, members: ['s1', 's2', 's3'] };

function analysis(sql: string, unregisteredShard?: string): Analysis {
  return analyze(sql, {
    lookup: (schema, name) => (schema === undefined || schema === 'public' ? TABLES[name] : undefined),
    keyType: (table) => TYPES[table],
    unregisteredShard,
  });
}

function route(sql: string, params: unknown[] = [], requireKey = false) {
  return routeOf(analysis(sql), params, MAP, { requireKey, turn: 0 });
}

beforeAll(() => loadParser());

describe('routes', () => {
  it('pins by =, IN, = ANY, in either order, through casts, ANDed with anything', () => {
    expect(route('SELECT * FROM users WHERE id = $1', [17])).toMatchObject({ kind: 'shard', shardId: 's1' });
    expect(route('SELECT * FROM users WHERE $1::bigint = id AND name <> $2', ['0027', 'x'])).toMatchObject({
      kind: 'shard',
      shardId: 's2',
    });
    expect(route('SELECT * FROM users u WHERE u.id IN (11, 12) AND u.id > 0')).toMatchObject({ kind: 'shard', shardId: 's1' });
    expect(route('SELECT * FROM users WHERE id = ANY($1)', [[11, 25, 37]])).toMatchObject({
      kind: 'broadcast',
      shardIds: ['s1', 's2', 's3'],
    });
    expect(route("DELETE FROM tags WHERE tag = ANY(ARRAY['1a', '1b'])")).toMatchObject({ kind: 'shard', shardId: 's1' });
    expect(route('UPDATE orders SET total = 0 WHERE user_id IN ($1, $2)', [21, 31])).toMatchObject({
      kind: 'write',
      shardIds: ['s2', 's3'],
    });
  });

  it('the cached analysis is a function of the params', () => {
    const cached = analysis('SELECT * FROM orders WHERE user_id = $1');
    expect(routeOf(cached, [1], MAP, { requireKey: false, turn: 0 })).toMatchObject({ shardId: 's1' });
    expect(routeOf(cached, [3], MAP, { requireKey: false, turn: 0 })).toMatchObject({ shardId: 's3' });
    expect(cached).toMatchObject({ kind: 'keyed', point: { index: 0, keyType: 'integer' } });
  });

  it('OR does not pin; an unpinned read is a broadcast and a write every shard, or KEY_REQUIRED', () => {
    expect(route('SELECT * FROM users WHERE id = 1 OR id = 2')).toMatchObject({ kind: 'broadcast' });
    expect(route('UPDATE users SET name = $1', ['x'])).toMatchObject({ kind: 'write', shardIds: 'all' });
    expect(() => route('DELETE FROM users', [], true)).toThrow(expect.objectContaining({ code: 'KEY_REQUIRED' }));
  });

  it('co-located joins follow the pinned key through key equalities; other joins go to the broadcast planner', () => {
    const join = 'SELECT * FROM users u JOIN orders o ON o.user_id = u.id JOIN countries c ON c.code = u.country WHERE u.id = $1';
    expect(route(join, [23])).toMatchObject({ kind: 'shard', shardId: 's2' });
    expect(route('SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE o.user_id = 3')).toMatchObject({ shardId: 's3' });
    expect(route('SELECT * FROM users u JOIN orders o ON o.user_id = u.id')).toMatchObject({ kind: 'broadcast', shardIds: MAP.members });
    expect(route('SELECT * FROM users u JOIN orders o ON o.total = u.id WHERE u.id = 1')).toMatchObject({
      kind: 'broadcast',
      shardIds: MAP.members,
    });
    expect(() => route('SELECT * FROM users u JOIN orders o ON o.user_id = u.id', [], true)).toThrow(
      expect.objectContaining({ code: 'KEY_REQUIRED' }),
    );
    // Pinned keys on two shards: a read of those two only; a write joining them is refused.
    expect(route('SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id IN (1, 2)')).toMatchObject({
      kind: 'broadcast',
      shardIds: ['s1', 's2'],
      keys: ['1', '2'],
    });
    expect(() => route('DELETE FROM orders o USING users u WHERE o.user_id = u.id AND u.id IN (1, 2)')).toThrow(/write joining/);
    expect(() => route('DELETE FROM orders o USING users u WHERE o.user_id = u.id')).toThrow(/without a pinned shard key/);
    expect(route('SELECT * FROM users u, orders o WHERE u.id = 1 AND o.user_id = 12')).toMatchObject({ kind: 'shard', shardId: 's1' });
    // A LEFT JOIN's ON condition filters nothing: it does not pin.
    expect(route('SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id AND o.user_id = 1')).toMatchObject({
      kind: 'broadcast',
      shardIds: MAP.members,
    });
    // Nor does an inner join's ON on the nullable side of an outer join: u keeps all its rows.
    expect(
      route('SELECT * FROM users u LEFT JOIN (orders o JOIN tags t ON t.tag = o.note AND o.user_id = 1) ON o.user_id = u.id'),
    ).toMatchObject({ kind: 'broadcast', shardIds: MAP.members });
  });

  it('subqueries and CTEs: one shard when every sharded table in them is pinned there (or follows a pinned key), else broadcast', () => {
    const one = { kind: 'shard', shardId: 's1' };
    const everywhere = { kind: 'broadcast', shardIds: MAP.members };
    expect(route('SELECT * FROM users WHERE id = 1 AND EXISTS (SELECT 1 FROM orders o WHERE o.user_id = 12)')).toMatchObject(one);
    // Correlated: o follows u's pinned key.
    expect(route('SELECT *, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) FROM users u WHERE u.id = $1', [1])).toMatchObject(one);
    expect(route('SELECT * FROM users u WHERE u.id = 1 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id)')).toMatchObject(one);
    expect(route('WITH mine AS (SELECT * FROM orders WHERE user_id = 1) SELECT * FROM mine')).toMatchObject(one);
    expect(route('SELECT * FROM (SELECT * FROM users WHERE id = $1) s JOIN countries c ON c.code = s.country', [13])).toMatchObject(one);
    expect(route('SELECT id FROM users WHERE id = 1 UNION ALL SELECT user_id FROM orders WHERE user_id = 14')).toMatchObject(one);
    expect(
      route(
        'WITH RECURSIVE r AS (SELECT id FROM users WHERE id = 1 UNION SELECT o.user_id FROM orders o, r WHERE o.user_id = 1) SELECT * FROM r',
      ),
    ).toMatchObject(one);
    // A subquery reading a sharded table without a pin is never sent to one shard.
    expect(route('SELECT * FROM users WHERE id = 1 AND id IN (SELECT user_id FROM orders)')).toMatchObject(everywhere);
    expect(route('SELECT (SELECT count(*) FROM orders) FROM users WHERE id = 1')).toMatchObject(everywhere);
    expect(route('WITH x AS (SELECT * FROM orders) SELECT * FROM users WHERE id = 1')).toMatchObject(everywhere);
    expect(route('SELECT * FROM users WHERE id = 1 UNION SELECT user_id FROM orders')).toMatchObject(everywhere);
    // A pin inside a subquery does not pin the outer table; a pin of an outer table inside a subquery pins nothing.
    expect(route('SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = 1 AND o.user_id = u.id)')).toMatchObject(
      everywhere,
    );
    expect(route('SELECT * FROM users u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE u.id = 1 AND o.user_id = 1)')).toMatchObject(
      everywhere,
    );
    // A CTE name shadows a table; a later CTE's table of that name is the real one only after it.
    expect(route('WITH users AS (SELECT 1 AS id) SELECT * FROM users')).toMatchObject({ kind: 'shard' });
    expect(route('WITH a AS (SELECT * FROM orders), orders AS (SELECT 1) SELECT * FROM a')).toMatchObject(everywhere);
    // Pinned on two shards: read on those only.
    expect(route('SELECT * FROM users u WHERE u.id = 1 AND EXISTS (SELECT 1 FROM orders o WHERE o.user_id = 21)')).toMatchObject({
      kind: 'broadcast',
      shardIds: ['s1', 's2'],
    });
    expect(() => route('SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)', [], true)).toThrow(
      expect.objectContaining({ code: 'KEY_REQUIRED' }),
    );
  });

  it('reference tables: reads on one shard, writes on every shard; unregistered tables refused or sent to the configured shard', () => {
    expect(route('SELECT * FROM countries')).toMatchObject({ kind: 'shard' });
    expect(route("UPDATE countries SET name = 'x'")).toMatchObject({ kind: 'write', shardIds: 'all' });
    expect(() => route('SELECT * FROM nowhere')).toThrow(/nowhere, which is not in the table registry.*registerShardedTable/);
    expect(routeOf(analysis('SELECT * FROM nowhere', 's9'), [], MAP, { requireKey: false, turn: 0 })).toMatchObject({ shardId: 's9' });
  });

  it("an INSERT goes by each row's key, split when the rows span shards", () => {
    expect(route('INSERT INTO users (id, name) VALUES ($1, $2), (12, $3)', [11, 'a', 'b'])).toMatchObject({ kind: 'shard', shardId: 's1' });
    expect(route('INSERT INTO users (name, id) VALUES ($1, $2), ($3, 22), ($4, 13)', ['a', 11, 'b', 'c'])).toMatchObject({
      kind: 'insert',
      parts: [
        { shardId: 's1', rows: [0, 2] },
        { shardId: 's2', rows: [1] },
      ],
    });
  });
});

describe('refusals', () => {
  it.each([
    ['UPDATE users SET id = 5 WHERE id = 1', /shard key.*router\.transaction/],
    ['INSERT INTO users (id) SELECT id FROM users', /INSERT \.\.\. SELECT/],
    ['INSERT INTO users (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = 2', /ON CONFLICT/],
    ['DELETE FROM users WHERE id IN (SELECT user_id FROM orders WHERE user_id = 1)', /subquery/],
    ['UPDATE users SET name = (SELECT note FROM orders LIMIT 1) WHERE id = 1', /subquery/],
    ['WITH x AS (SELECT 1) DELETE FROM users WHERE id = 1', /WITH/],
    ['WITH x AS (DELETE FROM users WHERE id = 1 RETURNING id) SELECT * FROM x', /data-modifying WITH/],
    ['SELECT * FROM users u JOIN orders o USING (id) WHERE u.id = 1', /USING/],
    ['TRUNCATE users', /broadcast or executeOn/],
  ])('%s', (sql, message) => {
    expect(() => route(sql, [])).toThrow(expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringMatching(message) }));
  });

  it('a missing or NULL key in an INSERT is INVALID_ARGUMENT', () => {
    expect(() => route('INSERT INTO users (name) VALUES ($1)', ['a'])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => route('INSERT INTO users (id) VALUES ($1)', [null])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('insert split', () => {
  it('rebuilds each part from the parse tree with its own rows and renumbered parameters', () => {
    const insert = analysis(
      'INSERT INTO users (id, name) VALUES ($1, $2), ($3, $4), ($5, $2) ON CONFLICT (id) DO UPDATE SET name = $6 RETURNING id',
    );
    const tree = (insert as Extract<Analysis, { kind: 'insert' }>).tree;
    const part = insertPart(tree, [1, 2], ['1', 'a', '2', 'b', '3', 'z']);
    expect(part.sql).toBe('INSERT INTO users (id, name) VALUES ($1, $2), ($3, $4) ON CONFLICT (id) DO UPDATE SET name = $5 RETURNING id');
    expect(part.params).toEqual(['2', 'b', '3', 'a', 'z']);
    expect(insertPart(tree, [0], ['1', "a'); DROP TABLE users; --", '2', 'b', '3', 'z']).sql).not.toContain('DROP');
  });
});

describe('key values', () => {
  it('are the text PostgreSQL stores for the column type', () => {
    expect(canonicalKey('  -0042 ', 'integer')).toBe('-42');
    expect(canonicalKey(42n, 'integer')).toBe('42');
    expect(canonicalKey('{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}', 'uuid')).toBe('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
    expect(canonicalKey(7, 'text')).toBe('7');
    expect(() => canonicalKey('4.5', 'integer')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('id layout', () => {
  it('splices the slot between the time and the sequence, and documents its limits', () => {
    const counter = (123_456n << 12n) | 4095n;
    const decoded = decodeId(idFromCounter(counter, 1023));
    expect(decoded).toMatchObject({ slot: 1023, sequence: 4095 });
    expect(decoded.issuedAt.getTime() - Date.UTC(2025, 0, 1)).toBe(123_456);
    expect([MAX_ID_SLOTS, IDS_PER_MS_PER_SHARD, ID_BITS_RUN_OUT_AT.toISOString()]).toEqual([1024, 4096, '2094-09-07T15:47:35.552Z']);
    expect(idFromCounter((2n ** 41n - 1n) << 12n, 1023) < 2n ** 63n).toBe(true);
  });
});
