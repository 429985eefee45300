import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ShardRouter, ShardRouterError } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, rejectionOf, uniqueName } from '../support/cluster.js';
import { keyOn, keysOn } from '../support/keys.js';

/**
 * tx.publish is deferred: its statement rides with the shard's next statement or its commit
 * step (docs/outbox.md, "Deferred publish"). Against real shards: a publish the server refuses
 * there fails the whole transaction (business rows included, 1PC and 2PC, on the decision shard
 * and on a voter), and a later statement on the same shard sees the earlier publishes.
 */

let router: ShardRouter;
let catalog: string;
/** A payload with this property is refused by the trigger the tests install. */
const REFUSED = 'refuse_me';

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE TABLE "${catalog}".business (key text PRIMARY KEY)`);
    await router.executeOn(
      shardId,
      `CREATE FUNCTION "${catalog}".refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.payload ? '${REFUSED}' THEN RAISE EXCEPTION 'event refused by the test trigger'; END IF; RETURN NEW; END $$`,
    );
    await router.executeOn(
      shardId,
      `CREATE TRIGGER refuse_event BEFORE INSERT ON "${catalog}".outbox_events FOR EACH ROW EXECUTE FUNCTION "${catalog}".refuse_event()`,
    );
  }
});

afterAll(async () => {
  await router?.close();
  await dropSchemas(catalog);
});

/** Business rows and events of `keys` on record, over every shard. */
async function onRecord(keys: readonly string[]): Promise<{ rows: number; events: number }> {
  let rows = 0;
  let events = 0;
  for (const shardId of router.shardIds) {
    const business = await router.executeOn<{ n: number }>(
      shardId,
      `SELECT count(*)::int AS n FROM "${catalog}".business WHERE key = ANY($1)`,
      [keys],
    );
    const published = await router.executeOn<{ n: number }>(
      shardId,
      `SELECT count(*)::int AS n FROM "${catalog}".outbox_events WHERE key = ANY($1)`,
      [keys],
    );
    rows += business.rows[0]!.n;
    events += published.rows[0]!.n;
  }
  return { rows, events };
}

/** Inserts a business row per key, publishes a good event on each and a refused one on `refusedOn`, in one transaction. */
function transfer(keys: readonly string[], refusedOn: string) {
  return router.transaction(keys, async (tx) => {
    for (const key of keys) await tx.execute(key, `INSERT INTO "${catalog}".business VALUES ($1)`, [key]);
    for (const key of keys) await tx.publish(key, 'deferred', { key });
    await tx.publish(refusedOn, 'deferred', { [REFUSED]: true });
  });
}

describe('deferred publish against real shards', () => {
  it('a publish refused at COMMIT (1PC) rolls back the business rows and every event: TRANSACTION_ABORTED, nothing on record', async () => {
    const first = keyOn(router, 's0', 'one');
    const keys = [first, keyOn(router, 's0', 'one', new Set([first]))];
    const error = await rejectionOf(transfer(keys, keys[0]!));
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('TRANSACTION_ABORTED');
    expect(String((error as ShardRouterError).message)).toContain('event refused by the test trigger');
    expect(await onRecord(keys)).toEqual({ rows: 0, events: 0 });
    // The connection went back clean: the same work without the refused event commits.
    await router.transaction(keys, async (tx) => {
      for (const key of keys) await tx.execute(key, `INSERT INTO "${catalog}".business VALUES ($1)`, [key]);
      await tx.publish(keys[0]!, 'deferred', { ok: true });
    });
    expect(await onRecord(keys)).toEqual({ rows: keys.length, events: 1 });
  });

  it('a publish refused with PREPARE (on a voter) or with the decision (on D) rolls back every shard (2PC)', async () => {
    for (const [name, refusedAt] of [
      ['voter', 1],
      ['decider', 0],
    ] as const) {
      const keys = keysOn(router, ['s0', 's1'], `two-${name}`);
      const error = await rejectionOf(transfer(keys, keys[refusedAt]!));
      expect((error as ShardRouterError).code, name).toBe('TRANSACTION_ABORTED');
      expect((error as ShardRouterError).shardId, name).toBe(router.shardFor(keys[refusedAt]!));
      expect(await onRecord(keys), name).toEqual({ rows: 0, events: 0 });
      // No prepared transaction holds the rows' locks: the same inserts commit at once.
      await router.transaction(
        keys,
        async (tx) => {
          for (const key of keys) await tx.execute(key, `INSERT INTO "${catalog}".business VALUES ($1)`, [key]);
          for (const key of keys) await tx.publish(key, 'deferred', { key });
        },
        { lockTimeoutMillis: 1_000 },
      );
      expect(await onRecord(keys), name).toEqual({ rows: 2, events: 2 });
    }
  });

  it("a refused publish fails the shard's next statement, which carries it; later statements see earlier publishes", async () => {
    const [a] = keysOn(router, ['s1'], 'next');
    const error = await rejectionOf(
      router.transaction([a!], async (tx) => {
        await tx.publish(a!, 'deferred', { [REFUSED]: true });
        await tx.execute(a!, `INSERT INTO "${catalog}".business VALUES ($1)`, [a]);
      }),
    );
    expect((error as ShardRouterError).code).toBe('QUERY_FAILED');
    expect(await onRecord([a!])).toEqual({ rows: 0, events: 0 });
    const seen = await router.transaction([a!], async (tx) => {
      const first = await tx.publish(a!, 'deferred', { n: 1 });
      const second = await tx.publish(a!, 'deferred', { n: 2 });
      const { rows } = await tx.execute<{ id: string; seq: number }>(
        a!,
        `SELECT id::text AS id, seq::int AS seq FROM "${catalog}".outbox_events WHERE key = $1 ORDER BY seq`,
        [a],
      );
      return { ids: [first.id, second.id], rows };
    });
    expect(seen.rows).toEqual([
      { id: seen.ids[0], seq: 1 },
      { id: seen.ids[1], seq: 2 },
    ]);
  });

  it('the publish statement is prepared once per connection; after a DEALLOCATE ALL on it, one publish fails and the next prepares it again', async () => {
    const single = await connectFreshRouter({
      catalogSchema: catalog,
      pool: { max: 1 },
      recovery: { intervalMillis: 0, atConnect: false },
    });
    try {
      const [a] = keysOn(single, ['s1'], 'prepared');
      const prepared = `SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'pg_shard_router_publish_%'`;
      await single.transaction([a!], (tx) => tx.publish(a!, 'deferred', { n: 1 }));
      const seen = await single.transaction([a!], async (tx) => {
        await tx.publish(a!, 'deferred', { n: 2 });
        return (await tx.execute<{ n: number }>(a!, prepared)).rows[0]!.n;
      });
      expect(seen).toBe(1);
      await single.executeOn('s1', 'DEALLOCATE ALL');
      const error = await rejectionOf(single.transaction([a!], (tx) => tx.publish(a!, 'deferred', { n: 3 })));
      expect((error as ShardRouterError).code).toBe('TRANSACTION_ABORTED');
      await single.transaction([a!], (tx) => tx.publish(a!, 'deferred', { n: 4 }));
      const { rows } = await single.executeOn<{ n: number; seq: number }>(
        's1',
        `SELECT (payload->>'n')::int AS n, seq::int AS seq FROM "${catalog}".outbox_events WHERE key = $1 ORDER BY seq`,
        [a],
      );
      expect(rows).toEqual([
        { n: 1, seq: 1 },
        { n: 2, seq: 2 },
        { n: 4, seq: 3 },
      ]);
    } finally {
      await single.close();
    }
  });
});
