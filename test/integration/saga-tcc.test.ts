import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { SagaError, SagaStepDefinition } from '../../src/index.js';
import { dropSchemas, shardConfigs, uniqueName } from '../support/cluster.js';
import { keyOn } from '../support/keys.js';

/**
 * TCC (try / confirm / cancel) on the saga engine (docs/sagas.md, "TCC"): a stock reservation
 * across two shards. Each participant's `run` tries (takes stock into a held reservation with
 * an expiry), the pivot confirms both reservations in one transaction, compensations cancel
 * held ones; a sweeper releases expired reservations. Under concurrency: never oversold, stock
 * conserved, nothing left held.
 */

const data = uniqueName('tcc');
const catalog = uniqueName('cat');
const STOCK = 10;
let router: ShardRouter;

beforeAll(async () => {
  router = await ShardRouter.connect({
    shards: shardConfigs(),
    catalogSchema: catalog,
    recovery: { intervalMillis: 0, atConnect: false },
    sagas: { resumeIntervalMillis: 0, compensationBackoffMillis: 10 },
    pool: { max: 30 },
  });
  for (const shardId of router.shardIds) {
    await router.executeOn(shardId, `CREATE SCHEMA ${data}`);
    await router.executeOn(shardId, `CREATE TABLE ${data}.stock (item text PRIMARY KEY, available int NOT NULL CHECK (available >= 0))`);
    await router.executeOn(
      shardId,
      `CREATE TABLE ${data}.reservations (item text NOT NULL, order_id text NOT NULL, qty int NOT NULL,
         state text NOT NULL CHECK (state IN ('held', 'confirmed')), expires_at timestamptz NOT NULL, PRIMARY KEY (item, order_id))`,
    );
  }
  await router.registerShardedTable(`${data}.stock`, 'item');
  await router.registerShardedTable(`${data}.reservations`, 'item');
});

afterAll(async () => {
  await router.close();
  await dropSchemas(data, catalog);
});

interface Line {
  readonly item: string;
  readonly qty: number;
}
interface Order {
  readonly orderId: string;
  readonly lines: readonly [Line, Line];
  readonly holdMillis: number;
}

/** Try: take stock into a held reservation (fails when there is not enough). */
function tryReserve(index: 0 | 1): SagaStepDefinition<Order> {
  return {
    name: `try-${index}`,
    run: async (step, order) => {
      const { item, qty } = order.lines[index];
      await step.transaction([item], async (tx) => {
        const taken = await tx.execute(item, `UPDATE ${data}.stock SET available = available - $2 WHERE item = $1 AND available >= $2`, [
          item,
          qty,
        ]);
        if (taken.rowCount === 0) throw new Error(`out of stock: ${item}`);
        await tx.execute(
          item,
          `INSERT INTO ${data}.reservations VALUES ($1, $2, $3, 'held', clock_timestamp() + make_interval(secs => $4::float8 / 1000))`,
          [item, order.orderId, qty, order.holdMillis],
        );
      });
      return { item, qty };
    },
    // Cancel: give back a reservation that is still held (one the sweeper released is gone).
    compensate: async (step, order) => {
      const { item } = order.lines[index];
      await step.execute(
        item,
        `WITH gone AS (DELETE FROM ${data}.reservations WHERE item = $1 AND order_id = $2 AND state = 'held' RETURNING qty)
         UPDATE ${data}.stock SET available = available + (SELECT coalesce(sum(qty), 0) FROM gone) WHERE item = $1`,
        [item, order.orderId],
      );
    },
  };
}

/** Confirm (the pivot): both reservations, in one transaction, only while both are held and unexpired. */
const confirm: SagaStepDefinition<Order> = {
  name: 'confirm',
  run: async (step, order) => {
    const items = order.lines.map((line) => line.item);
    await step.transaction(items, async (tx) => {
      for (const item of items) {
        const { rowCount } = await tx.execute(
          item,
          `UPDATE ${data}.reservations SET state = 'confirmed' WHERE item = $1 AND order_id = $2 AND state = 'held' AND expires_at > clock_timestamp()`,
          [item, order.orderId],
        );
        if (rowCount === 0) throw new Error(`reservation of ${item} expired`);
      }
    });
    return { confirmed: order.orderId };
  },
};

/** The sweeper: expired held reservations go back to stock, in one statement per item. */
async function releaseExpired(item: string): Promise<number> {
  const { rows } = await router.execute<{ released: number }>(
    item,
    `WITH gone AS (DELETE FROM ${data}.reservations WHERE item = $1 AND state = 'held' AND expires_at <= clock_timestamp() RETURNING qty)
     UPDATE ${data}.stock SET available = available + (SELECT coalesce(sum(qty), 0) FROM gone) WHERE item = $1
     RETURNING (SELECT coalesce(sum(qty), 0)::int FROM gone) AS released`,
    [item],
  );
  return rows[0]?.released ?? 0;
}

async function ledger(item: string): Promise<{ available: number; held: number; confirmed: number }> {
  const { rows } = await router.execute<{ available: number; held: number; confirmed: number }>(
    item,
    `SELECT available,
            (SELECT coalesce(sum(qty), 0)::int FROM ${data}.reservations WHERE item = $1 AND state = 'held') AS held,
            (SELECT coalesce(sum(qty), 0)::int FROM ${data}.reservations WHERE item = $1 AND state = 'confirmed') AS confirmed
       FROM ${data}.stock WHERE item = $1`,
    [item],
  );
  return rows[0]!;
}

async function twoItems(tag: string): Promise<[string, string]> {
  const items: [string, string] = [keyOn(router, 's0', `${tag}-a`), keyOn(router, 's1', `${tag}-b`)];
  for (const item of items) await router.execute(item, `INSERT INTO ${data}.stock VALUES ($1, $2)`, [item, STOCK]);
  return items;
}

describe('TCC stock reservation across two shards', () => {
  const reserve = () => router.defineSaga<Order, { confirmed: string }>(uniqueName('tcc'), [tryReserve(0), tryReserve(1), confirm]);

  it('30 concurrent orders for 10 + 10 items: never oversold, stock conserved, nothing left held', async () => {
    const [a, b] = await twoItems('conc');
    const saga = reserve();
    const orders = Array.from(
      { length: 30 },
      (_, i): Order => ({
        orderId: `o${i}`,
        lines: [
          { item: a, qty: 1 },
          { item: b, qty: 1 + (i % 2) },
        ],
        holdMillis: 60_000,
      }),
    );
    const outcomes = await Promise.allSettled(orders.map((order) => saga.run(a, order)));
    const confirmed = outcomes.flatMap((outcome, i) => (outcome.status === 'fulfilled' ? [orders[i]!] : []));
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') {
        expect((outcome.reason as SagaError).code).toBe('SAGA_COMPENSATED');
        expect(((outcome.reason as SagaError).cause as Error).message).toMatch(/^out of stock/);
      }
    }
    const [ledgerA, ledgerB] = [await ledger(a), await ledger(b)];
    for (const entry of [ledgerA, ledgerB]) {
      expect(entry.held).toBe(0);
      expect(entry.available + entry.confirmed).toBe(STOCK);
    }
    expect(ledgerA.confirmed).toBe(confirmed.length);
    expect(ledgerB.confirmed).toBe(confirmed.reduce((sum, order) => sum + order.lines[1].qty, 0));
    expect(ledgerB.confirmed).toBeLessThanOrEqual(STOCK);
    expect(confirmed.length).toBeGreaterThan(0);
    expect(outcomes.some((outcome) => outcome.status === 'rejected')).toBe(true);
  });

  it('an expired reservation is released by the sweeper; the confirm fails and the other is cancelled, once', async () => {
    const [a, b] = await twoItems('exp');
    const sweeps: number[] = [];
    const saga = router.defineSaga<Order, { confirmed: string }>(uniqueName('tcc'), [
      tryReserve(0),
      // The reservation of `a` expires (hold 0) and the sweeper runs before the second try.
      {
        ...tryReserve(1),
        run: async (step, order, previous) => {
          sweeps.push(await releaseExpired(a));
          return tryReserve(1).run(step, order, previous);
        },
      },
      confirm,
    ]);
    const order: Order = {
      orderId: 'late',
      lines: [
        { item: a, qty: 3 },
        { item: b, qty: 4 },
      ],
      holdMillis: 0,
    };
    const error = (await Promise.allSettled([saga.run(a, order)]))[0]!;
    expect(error.status).toBe('rejected');
    const reason = (error as PromiseRejectedResult).reason as SagaError;
    expect(reason.code).toBe('SAGA_COMPENSATED');
    expect((reason.cause as Error).message).toMatch(/expired/);
    expect(sweeps).toEqual([3]);
    expect(await ledger(a)).toEqual({ available: STOCK, held: 0, confirmed: 0 });
    expect(await ledger(b)).toEqual({ available: STOCK, held: 0, confirmed: 0 });
    expect(await releaseExpired(a)).toBe(0);
  });
});
