import { beforeAll, describe, expect, it } from 'vitest';
import { formatPlan } from '../../src/broadcast/plan/plan.js';
import type { BroadcastPlan, CoordinatorPlan, SelectPlan } from '../../src/broadcast/plan/plan.js';
import { planBroadcast } from '../../src/broadcast/plan/planner.js';
import { deparse, loadParser } from '../../src/broadcast/plan/sql-parser.js';
import { ShardRouterError } from '../../src/index.js';

const catalog = { isAggregate: (name: string) => ['string_agg', 'array_agg', 'stddev', 'percentile_cont', 'my_agg'].includes(name) };
const plan = (sql: string): BroadcastPlan => planBroadcast(sql, catalog);
const select = (sql: string): SelectPlan => {
  const result = plan(sql);
  if (result.kind !== 'select') throw new Error(`expected a select plan, got ${result.kind}`);
  return result;
};

beforeAll(async () => {
  await loadParser();
});

describe('aggregate plans', () => {
  it('regression: a function named like an Object.prototype member (constructor, toString) is an ordinary function', () => {
    for (const name of ['constructor', 'tostring', 'hasownproperty']) {
      const p = select(`SELECT ${name}(x) FROM t ORDER BY 1`);
      expect(p.aggregate).toBeUndefined();
    }
  });

  it('push partial aggregates down and keep HAVING, ORDER BY and LIMIT for the merge', () => {
    const p = select('SELECT g, count(*) AS n, avg(x) FROM t WHERE y > 0 GROUP BY g HAVING sum(x) > 10 ORDER BY n DESC LIMIT 3 OFFSET 1');
    expect(p.shardSql).toBe(
      'SELECT g, count(*) AS n, sum(x) AS avg, count(x) AS __psr_h1, sum(x) AS __psr_h2 FROM t WHERE y > 0 GROUP BY g',
    );
    expect(p.aggregate?.visibleRoles.map((role) => role.kind)).toEqual(['key', 'count', 'avg']);
    expect(p.aggregate?.hiddenRoles.map((role) => role.kind)).toEqual(['avg_count', 'sum']);
    expect(p.having).toEqual({
      kind: 'compare',
      op: '>',
      left: { kind: 'column', column: { kind: 'hidden', index: 1 } },
      right: { kind: 'literal', text: '10', type: 'number' },
    });
    expect(p.sort).toEqual([
      { column: { kind: 'visible', position: 1 }, descending: true, nullsFirst: true, collation: undefined, text: 'n DESC' },
    ]);
    expect(p.limit).toEqual({ kind: 'constant', value: 3 });
    expect(p.offset).toEqual({ kind: 'constant', value: 1 });
  });

  it('add a GROUP BY expression missing from the select list as a helper key column', () => {
    const p = select('SELECT count(*) FROM t GROUP BY x % 3');
    expect(p.shardSql).toBe('SELECT count(*), x % 3 AS __psr_h1 FROM t GROUP BY x % 3');
    expect(p.aggregate?.hiddenRoles).toEqual([{ kind: 'key' }]);
    expect(p.aggregate?.ungrouped).toBe(false);
  });

  it('resolve GROUP BY by position, alias and expression to the visible key', () => {
    for (const sql of ['SELECT lower(g) AS lg, count(*) FROM t GROUP BY 1', 'SELECT lower(g) AS lg, count(*) FROM t GROUP BY lower(g)']) {
      const p = select(sql);
      expect(p.hidden, sql).toEqual([]);
      expect(
        p.aggregate?.visibleRoles.map((role) => role.kind),
        sql,
      ).toEqual(['key', 'count']);
      expect(p.ifColumnMissing, sql).toBeUndefined();
    }
  });

  it('read GROUP BY name as a table column first and as an alias only if the shards lack the column', () => {
    // PostgreSQL's rule: SELECT k % 3 AS k ... GROUP BY k groups by the column k when t has one.
    const p = select('SELECT lower(g) AS lg, count(*) FROM t GROUP BY lg');
    expect(p.shardSql).toBe('SELECT lower(g) AS lg, count(*), lg AS __psr_h1 FROM t GROUP BY lg');
    expect(p.aggregate?.visibleRoles.map((role) => role.kind)).toEqual(['value', 'count']);
    expect(p.ifColumnMissing?.shardSql).toBe('SELECT lower(g) AS lg, count(*) FROM t GROUP BY lg');
    expect(p.ifColumnMissing?.aggregate?.visibleRoles.map((role) => role.kind)).toEqual(['key', 'count']);
  });

  it('ungrouped aggregates form one group', () => {
    const p = select('SELECT sum(x), min(d), max(d), bool_and(f), every(f), bool_or(f) FROM t');
    expect(p.aggregate?.ungrouped).toBe(true);
    expect(p.aggregate?.visibleRoles.map((role) => role.kind)).toEqual(['sum', 'min', 'max', 'bool_and', 'bool_and', 'bool_or']);
  });

  it('keep FILTER on the rewritten avg parts', () => {
    const p = select('SELECT avg(x) FILTER (WHERE x > 0) FROM t');
    expect(p.shardSql).toBe('SELECT sum(x) FILTER (WHERE x > 0) AS avg, count(x) FILTER (WHERE x > 0) AS __psr_h1 FROM t');
  });

  it('keep $n dropped with LIMIT/HAVING bound, with a no-op condition', () => {
    const p = select('SELECT g, count(*) FROM t WHERE x > $1 GROUP BY g HAVING count(*) > $2 LIMIT $3');
    expect(p.shardSql).toBe(
      'SELECT g, count(*) FROM t WHERE x > $1 AND (CAST($2 AS text) IS NULL OR true) AND (CAST($3 AS text) IS NULL OR true) GROUP BY g',
    );
    expect(p.limit).toEqual({ kind: 'param', index: 2 });
  });
});

describe('plain plans', () => {
  it('send LIMIT limit+offset to the shards and skip the offset in the router', () => {
    const p = select('SELECT id FROM t ORDER BY x DESC NULLS LAST, 1 LIMIT 10 OFFSET 5');
    expect(p.shardSql).toBe('SELECT id, x AS __psr_h1 FROM t ORDER BY x DESC NULLS LAST, 1 LIMIT 15');
    expect(p.aggregate).toBeUndefined();
    expect(p.sort.map((key) => [key.column, key.descending, key.nullsFirst])).toEqual([
      [{ kind: 'hidden', index: 0 }, true, false],
      [{ kind: 'visible', position: 0 }, false, false],
    ]);
  });

  it('add parameter limits in SQL', () => {
    expect(select('SELECT id FROM t ORDER BY id LIMIT $1 OFFSET $2').shardSql).toBe(
      'SELECT id FROM t ORDER BY id LIMIT CAST($1 AS int8) + CAST($2 AS int8)',
    );
  });

  it('sort by an aliased expression behind a * by the expression itself', () => {
    const p = select('SELECT *, x * 2 AS dbl FROM t ORDER BY dbl');
    expect(p.shardSql).toBe('SELECT *, x * 2 AS dbl, x * 2 AS __psr_h1 FROM t ORDER BY dbl');
  });

  it('quote an explicit collation', () => {
    expect(select('SELECT g FROM t ORDER BY g COLLATE "en-x-icu"').sort[0]!.collation).toBe('"en-x-icu"');
  });

  it('send statements without FROM to one shard and the rest to 2PC', () => {
    expect(plan('SELECT 1').kind).toBe('single');
    expect(plan('UPDATE t SET x = 1')).toEqual({ kind: 'write', sql: 'UPDATE t SET x = 1', statement: 'UpdateStmt' });
    expect(plan('CREATE TABLE t (id int)').kind).toBe('write');
    expect(plan('INSERT INTO t2 SELECT x FROM t WHERE x > 0').kind).toBe('write'); // per row: each shard its own rows
    expect(plan('SELECT now(), x FROM t WHERE ts < now()').kind).toBe('select'); // now() is fine
  });
});

describe('the coordinator step', () => {
  const coordinator = (sql: string): CoordinatorPlan => {
    const p = plan(sql);
    if (p.kind !== 'coordinator') throw new Error(`expected a coordinator plan, got ${p.kind}`);
    return p;
  };

  it.each([
    'SELECT count(DISTINCT x) FROM t',
    "SELECT string_agg(g, ',') FROM t",
    'SELECT my_agg(x) FROM t',
    'SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t',
    'SELECT sum(x) OVER () FROM t',
    'SELECT count(*) * 2 FROM t',
    'SELECT g FROM t GROUP BY g ORDER BY sum(x) / count(*)',
    'SELECT * FROM t JOIN u ON t.id = u.id',
    'SELECT * FROM t, u',
    'SELECT * FROM (SELECT x FROM t) s',
    'SELECT * FROM t WHERE id IN (SELECT id FROM u)',
    'WITH c AS (SELECT x FROM t) SELECT * FROM c',
    'SELECT 1 FROM t UNION SELECT 2 FROM t',
    'SELECT g FROM t GROUP BY ROLLUP (g)',
    'SELECT DISTINCT ON (g) g FROM t',
    'SELECT x FROM t ORDER BY x USING <',
    'SELECT x FROM t ORDER BY x FETCH FIRST 2 ROWS WITH TIES',
    'SELECT (SELECT count(*) FROM t)',
  ])('plans %s as a coordinator step', (sql) => {
    expect(coordinator(sql).inputs.length).toBeGreaterThan(0);
  });

  it('keeps the merge steps where they are exact (they are faster)', () => {
    expect(plan('SELECT g, count(*), avg(x) FROM t GROUP BY g ORDER BY 2 DESC LIMIT 3').kind).toBe('select');
    expect(plan('SELECT x FROM t WHERE x > 1 ORDER BY x').kind).toBe('select');
  });

  it('swaps each sharded table for its temporary table in the outer query, keeping aliases, reference tables and CTE names', () => {
    const refCatalog = { ...catalog, isReferenceTable: (_schema: string | undefined, name: string) => name === 'ref' };
    const p = planBroadcast(
      'WITH c AS (SELECT g, x FROM t) SELECT c.g, r.label FROM c JOIN ref r ON r.g = c.g JOIN u ON u.id = c.x',
      refCatalog,
    );
    if (p.kind !== 'coordinator') throw new Error('expected a coordinator plan');
    expect(p.inputs.map((input) => [input.table, input.tempTable])).toEqual([
      ['u', '__psr_in1'],
      ['t', '__psr_in2'],
    ]);
    expect(p.outerSql).toBe(
      'WITH c AS (SELECT g, x FROM pg_temp.__psr_in2 AS t) SELECT c.g, r.label FROM c JOIN ref AS r ON r.g = c.g JOIN pg_temp.__psr_in1 AS u ON u.id = c.x',
    );
  });

  it("pushes a table's own WHERE conjuncts to the shards, not those of other tables, subqueries or the nullable side of an outer join", () => {
    const p = coordinator(
      'SELECT a.id FROM t a LEFT JOIN u b ON a.id = b.id WHERE a.k = $2 AND b.z > 1 AND a.x + b.x > 0 AND a.y IN (SELECT 1)',
    );
    expect(p.inputs[0]!.filters.map((filter) => deparse(filter.node))).toEqual(['a.k = $2']);
    expect(p.inputs[1]!.filters).toEqual([]);
    const alone = coordinator('SELECT count(DISTINCT x) FROM t WHERE k > 1 AND t.y = 2');
    expect(alone.inputs[0]!.filters.map((filter) => [deparse(filter.node), filter.unqualified])).toEqual([
      ['k > 1', ['k']],
      ['t.y = 2', []],
    ]);
  });

  it('reads every column for *, whole-row references and column aliases, else the names the query uses', () => {
    expect(coordinator('SELECT count(DISTINCT x) FROM t WHERE k > 1').inputs[0]!.names).toEqual(['x', 'k']);
    expect(coordinator('SELECT DISTINCT ON (x) * FROM t').inputs[0]!.names).toBeUndefined();
    expect(coordinator('SELECT DISTINCT ON (x) row_to_json(t) FROM t').inputs[0]!.names).toBeUndefined();
    expect(coordinator('SELECT DISTINCT ON (a) a FROM t AS z(a, b)').inputs[0]!.names).toBeUndefined();
  });

  it('plans partial aggregation for a grouped query over one table whose whole WHERE runs on the shards', () => {
    const p = coordinator('SELECT g, round(avg(x), 2), count(DISTINCT y) FROM t WHERE k > $1 GROUP BY g HAVING count(*) > 1');
    expect(p.partial?.spec.keys).toEqual(['g']);
    expect(p.partial?.spec.distinct).toEqual(['y']);
    expect(p.partial?.spec.aggregates.map((aggregate) => [aggregate.kind, aggregate.column])).toEqual([
      ['avg', 'x'],
      ['count', undefined],
    ]);
    // Not when a conjunct stays in the outer query, a column is neither grouped nor aggregated, or over a join.
    expect(coordinator('SELECT g, count(DISTINCT y) FROM t WHERE k IN (SELECT k FROM u) GROUP BY g').partial).toBeUndefined();
    expect(coordinator('SELECT id, name, count(DISTINCT y) FROM t GROUP BY id').partial).toBeUndefined();
    expect(coordinator('SELECT a.g, count(DISTINCT b.y) FROM t a JOIN u b ON a.id = b.id GROUP BY a.g').partial).toBeUndefined();
    expect(coordinator("SELECT g, string_agg(y, ',') FROM t GROUP BY g").partial).toBeUndefined();
  });

  it('explain shows what is pulled up and the outer query', () => {
    const text = formatPlan(plan('SELECT g, round(avg(x), 2), count(DISTINCT y) FROM t WHERE k > 0 GROUP BY g'));
    expect(text).toContain('Coordinator step');
    expect(text).toContain('Pulled up: t -> pg_temp.__psr_in1: the columns among g, x, y, k');
    expect(text).toContain('Shard filter: k > 0');
    expect(text).toContain('Outer query');
    expect(text).toContain('SELECT g, round(avg(x), 2), count(DISTINCT y) FROM pg_temp.__psr_in1 AS t WHERE k > 0 GROUP BY g');
  });
});

describe('refusals', () => {
  const cases: [string, string][] = [
    ['WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r, t', 'recursive CTE'],
    ['SELECT x FROM t WHERE random() < 0.5', 'random()'],
    ['SELECT x FROM t WHERE x IN (SELECT x FROM u WHERE random() < 0.5)', 'random()'],
    ['SELECT 1 FROM t a JOIN u b ON a.x = b.x AND random() < 0.5', 'random()'],
    ['SELECT x FROM t WHERE x IN (SELECT x FROM u) FOR UPDATE', 'FOR UPDATE'],
    ['UPDATE t SET x = (SELECT max(x) FROM t)', 'coordinator step'],
    ['DELETE FROM t USING u WHERE t.id = u.id', 'coordinator step'],
    ['WITH c AS (SELECT x FROM u) UPDATE t SET x = 1 FROM c WHERE c.x = t.x', 'coordinator step'],
    ['INSERT INTO t (x) SELECT max(x) + 1 FROM t', 'coordinator step'],
    ['SELECT x INTO u FROM t', 'INTO'],
    ['SELECT 1; SELECT 2', 'multiple statements'],
    ['INSERT INTO t VALUES (1)', 'INSERT'],
    ['BEGIN', 'transaction control'],
    ['VACUUM t', 'VacuumStmt'],
  ];
  it.each(cases)('%s is UNSUPPORTED naming %s', (sql, construct) => {
    let caught: unknown;
    try {
      plan(sql);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ShardRouterError);
    expect((caught as ShardRouterError).code).toBe('UNSUPPORTED');
    expect((caught as ShardRouterError).message.toLowerCase()).toContain(construct.toLowerCase());
  });

  it('SQL that does not parse is INVALID_SQL with the position', () => {
    expect(() => plan('SELECT FROM WHERE')).toThrow(
      expect.objectContaining({ code: 'INVALID_SQL', message: expect.stringContaining('at character') }),
    );
  });
});

describe('explain', () => {
  it('print the shard query and the merge steps', () => {
    const text = formatPlan(select('SELECT g, avg(x) FROM t GROUP BY g HAVING count(*) > 1 ORDER BY 2 LIMIT 5'));
    expect(text).toContain('Shard query: SELECT g, sum(x) AS avg, count(x) AS __psr_h1, count(*) AS __psr_h2 FROM t GROUP BY g');
    expect(text).toMatch(/1\. GROUP BY merge .*c1 group key, c2 avg = sum \/ h1/);
    expect(text).toContain('HAVING h2 > 1');
    expect(text).toContain('LIMIT 5');
  });
});
