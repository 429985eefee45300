import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/index.js';
import type { ShardRouter } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, rejectionOf, uniqueName } from '../support/cluster.js';

const T = uniqueName('bu');
/** The target of SELECT ... INTO: it must never come to exist. */
const INTO_TABLE = uniqueName('bu_into');
const ROWS = 40;

let router: ShardRouter;
let catalog: string;

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE TABLE ${T} (id bigint PRIMARY KEY, g text, k int4)`);
  }
  for (let id = 1; id <= ROWS; id++) {
    await router.execute(id, `INSERT INTO ${T} (id, g, k) VALUES ($1, $2, $3)`, [id, `g${id % 4}`, id % 7]);
  }
});

afterAll(async () => {
  if (router) {
    for (const shardId of router.shardIds) {
      await router.executeOn(shardId, `DROP TABLE IF EXISTS ${T}`).catch(() => undefined);
      await router.executeOn(shardId, `DROP TABLE IF EXISTS ${INTO_TABLE}`).catch(() => undefined);
    }
    await router.close();
  }
  if (catalog) await dropSchemas(catalog);
});

/** A supported broadcast still works: the router survived whatever came before. */
async function expectUsable(): Promise<void> {
  const result = await router.broadcast<{ c: string }>(`SELECT count(*) AS c FROM ${T}`);
  expect(result.rows).toEqual([{ c: String(ROWS) }]);
}

/**
 * [construct name the message must contain, SQL]. What the merge steps cannot answer goes to the
 * coordinator step (test/integration/broadcast-coordinator.test.ts); these remain refused.
 */
const UNSUPPORTED: [string, string][] = [
  ['recursive CTE', `WITH RECURSIVE r(n) AS (SELECT min(id) FROM ${T} UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r`],
  ['random()', `SELECT id FROM ${T} WHERE random() < 0.5`],
  ['coordinator step', `DELETE FROM ${T} WHERE k = (SELECT max(k) FROM ${T})`],
  ['FOR UPDATE', `SELECT id FROM ${T} a WHERE EXISTS (SELECT 1 FROM ${T} b WHERE b.id = a.id) FOR UPDATE`],
  ['INTO', `SELECT id INTO ${INTO_TABLE} FROM ${T}`],
  ['multiple statements', 'SELECT 1; SELECT 2'],
];

describe('broadcast: constructs that cannot be merged exactly', () => {
  it.each(UNSUPPORTED.map(([name, sql]) => [name, sql.replaceAll(T, 't'), sql] as const))(
    'rejects %s with UNSUPPORTED naming it (%s), and stays usable',
    async (name, _, sql) => {
      const error = await rejectionOf(router.broadcast(sql));
      expect(error).toBeInstanceOf(ShardRouterError);
      expect((error as ShardRouterError).code).toBe('UNSUPPORTED');
      expect((error as ShardRouterError).message.toLowerCase()).toContain(name.toLowerCase());
      await expectUsable();
    },
  );

  it('sends nothing for an unsupported statement: SELECT ... INTO created no table on any shard', async () => {
    await expect(router.broadcast(`SELECT id INTO ${INTO_TABLE} FROM ${T}`)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ found: string | null }>(shardId, 'SELECT to_regclass($1)::text AS found', [INTO_TABLE]);
      expect(rows).toEqual([{ found: null }]);
    }
  });

  it.each([`SELEC * FROM ${T}`, `SELECT * FROM`, 'SELECT (1', "SELECT 'unterminated", `SELECT id FROM ${T} WHERE`])(
    'rejects SQL that does not parse with INVALID_SQL, and stays usable: %s',
    async (sql) => {
      const error = await rejectionOf(router.broadcast(sql));
      expect(error).toBeInstanceOf(ShardRouterError);
      expect((error as ShardRouterError).code).toBe('INVALID_SQL');
      await expectUsable();
    },
  );
});

describe('explain', () => {
  it('describes the shard query and the merge steps of a grouped query', async () => {
    const text = router.explain(`SELECT g, count(*) AS c FROM ${T} GROUP BY g HAVING count(*) > 1 ORDER BY c DESC, g LIMIT 3`);
    expect(typeof text).toBe('string');
    expect(text).toContain(T);
    expect(text).toMatch(/count/i);
    expect(text).toMatch(/GROUP/);
    // The merge steps: something about the sort and the limit the router applies itself.
    expect(text).toMatch(/sort|order/i);
    expect(text).toMatch(/limit/i);
    // The shard query (the line naming the table) carries neither ORDER BY nor LIMIT: a shard's partial groups cannot be cut.
    const shardLines = text.split('\n').filter((line) => line.includes(T) && /select/i.test(line));
    expect(shardLines.length).toBeGreaterThan(0);
    for (const line of shardLines) expect(line).not.toMatch(/\bLIMIT\b/i);
  });
});
