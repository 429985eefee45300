import type { ShardRouter } from '../src/index.js';

/**
 * The demo's outbox step: orders placed with tx.publish('order.placed') in the same transaction
 * as the order row, a consumer group that projects them into per-country totals idempotently
 * (the event id goes into processed_events in the same transaction as the total's update), and a
 * check that the totals equal the orders.
 */
export async function projectOrders(router: ShardRouter, users: readonly (readonly [string, string])[]): Promise<void> {
  await router.broadcast(
    'CREATE TABLE shard_router_demo.placed_orders (id text PRIMARY KEY, user_id bigint NOT NULL, country text NOT NULL, amount bigint NOT NULL)',
  );
  await router.broadcast(
    'CREATE TABLE shard_router_demo.country_totals (country text PRIMARY KEY, orders bigint NOT NULL, amount bigint NOT NULL)',
  );
  await router.broadcast('CREATE TABLE shard_router_demo.processed_events (event_id uuid PRIMARY KEY, country text NOT NULL)');
  await router.registerShardedTable('shard_router_demo.placed_orders', 'id');
  await router.registerShardedTable('shard_router_demo.country_totals', 'country');
  await router.registerShardedTable('shard_router_demo.processed_events', 'country');

  const expected = new Map<string, { orders: number; amount: number }>();
  let placed = 0;
  for (const [index, [, country]] of users.entries()) {
    for (let n = 1; n <= 3; n++) {
      const id = `order-${index}-${n}`;
      const amount = 10 * n + index;
      await router.transaction([id], async (tx) => {
        await tx.execute(id, 'INSERT INTO shard_router_demo.placed_orders (id, user_id, country, amount) VALUES ($1, $2, $3, $4)', [
          id,
          1000 + index,
          country,
          amount,
        ]);
        await tx.publish(id, 'order.placed', { id, country, amount });
      });
      const total = expected.get(country) ?? { orders: 0, amount: 0 };
      expected.set(country, { orders: total.orders + 1, amount: total.amount + amount });
      placed++;
    }
  }
  // A transaction that rolls back publishes nothing.
  await router
    .transaction(['order-rolled-back'], async (tx) => {
      await tx.publish('order-rolled-back', 'order.placed', { id: 'order-rolled-back', country: 'XX', amount: 1 });
      throw new Error('changed our mind');
    })
    .catch(() => undefined);

  let handled = 0;
  const consumer = router.consume({
    group: 'country-totals',
    topics: ['order.placed'],
    concurrency: 4,
    handler: async (event) => {
      const { country, amount } = event.payload as { country: string; amount: number };
      await router.transaction([country], async (tx) => {
        const first = await tx.execute(
          country,
          'INSERT INTO shard_router_demo.processed_events (event_id, country) VALUES ($1, $2) ON CONFLICT DO NOTHING',
          [event.id, country],
        );
        if (first.rowCount === 1) {
          await tx.execute(
            country,
            `INSERT INTO shard_router_demo.country_totals (country, orders, amount) VALUES ($1, 1, $2)
             ON CONFLICT (country) DO UPDATE SET orders = country_totals.orders + 1, amount = country_totals.amount + $2`,
            [country, amount],
          );
        }
      });
      handled++;
    },
  });
  const deadline = Date.now() + 60_000;
  while (handled < placed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  await consumer.stop();

  const { rows } = await router.broadcast<{ country: string; orders: string; amount: string }>(
    'SELECT country, orders, amount FROM shard_router_demo.country_totals ORDER BY country',
  );
  log('\ntransactional outbox (tx.publish + router.consume):');
  log(`  ${placed} orders placed, each publishing order.placed in its own transaction (one more rolled back: no event)`);
  log(
    `  group country-totals projected ${handled} event(s): ${rows.map((row) => `${row.country} ${row.orders}/${row.amount}`).join(', ')}`,
  );
  const same =
    rows.length === expected.size &&
    rows.every(
      (row) => expected.get(row.country)?.orders === Number(row.orders) && expected.get(row.country)?.amount === Number(row.amount),
    );
  if (!same) throw new Error('the projected totals differ from the orders placed');
  const { groups } = await router.outbox.status();
  const pending = groups.filter((group) => group.group === 'country-totals').reduce((sum, group) => sum + group.pending, 0);
  log(`  totals per country equal the orders placed; ${pending} event(s) pending`);
}

const log = (line = '') => process.stdout.write(`${line}\n`);
