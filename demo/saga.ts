import type { ShardRouter } from '../src/index.js';

/**
 * The demo's saga (docs/sagas.md): a place-order saga across shards (an order row and a charge on
 * the buyer's shard, a credit on the seller's), whose last step fails once by design: the
 * completed steps are compensated in reverse, and the saga log shows every step's state.
 */
export async function placeOrderSaga(router: ShardRouter, buyer: number, seller: number, log: (line?: string) => void): Promise<void> {
  type Order = { buyer: number; seller: number; amount: number };
  const placeOrder = router.defineSaga<Order, { shipped: boolean }>('demo-place-order', [
    {
      name: 'create-order',
      run: async (step, order) => {
        const { rows } = await step.execute<{ id: string }>(
          order.buyer,
          'INSERT INTO shard_router_demo.orders (user_id, amount) VALUES ($1, $2) RETURNING id::text',
          [order.buyer, order.amount],
        );
        return { orderId: rows[0]!.id };
      },
      compensate: async (step, order, result) => {
        const { orderId } = result as { orderId: string };
        await step.execute(order.buyer, 'DELETE FROM shard_router_demo.orders WHERE user_id = $1 AND id = $2', [order.buyer, orderId]);
      },
    },
    {
      name: 'charge-buyer',
      run: async (step, order) => {
        await step.execute(order.buyer, 'UPDATE shard_router_demo.accounts SET balance = balance - $2 WHERE user_id = $1', [
          order.buyer,
          order.amount,
        ]);
      },
      compensate: async (step, order) => {
        await step.execute(order.buyer, 'UPDATE shard_router_demo.accounts SET balance = balance + $2 WHERE user_id = $1', [
          order.buyer,
          order.amount,
        ]);
      },
    },
    {
      name: 'credit-seller',
      run: async (step, order) => {
        await step.execute(order.seller, 'UPDATE shard_router_demo.accounts SET balance = balance + $2 WHERE user_id = $1', [
          order.seller,
          order.amount,
        ]);
      },
      compensate: async (step, order) => {
        await step.execute(order.seller, 'UPDATE shard_router_demo.accounts SET balance = balance - $2 WHERE user_id = $1', [
          order.seller,
          order.amount,
        ]);
      },
    },
    {
      name: 'ship',
      run: async () => {
        throw new Error('injected failure: the carrier is down');
      },
    },
  ]);
  log('\nsaga (router.defineSaga): place an order across shards, the last step fails by design');
  try {
    await placeOrder.run(buyer, { buyer, seller, amount: 10 });
    throw new Error('the demo saga should have been compensated');
  } catch (error) {
    const { code, sagaId, cause } = error as { code?: string; sagaId?: string; cause?: Error };
    if (code !== 'SAGA_COMPENSATED' || !sagaId) throw error;
    log(`  run rejected ${code}: ${cause?.message}`);
    const record = await router.sagas.get(sagaId);
    log(`  saga log on ${router.shardFor(buyer)} (the buyer's shard): ${record?.state}`);
    for (const step of record?.steps ?? []) {
      log(`    ${step.name.padEnd(14)} ${step.state.padEnd(12)} runs ${step.runs}, compensations ${step.compensations}`);
    }
  }
  const { rows } = await router.execute<{ n: number }>(
    buyer,
    'SELECT count(*)::int AS n FROM shard_router_demo.orders WHERE user_id = $1 AND amount = 10',
    [buyer],
  );
  log(`  compensated: no order of 10.00 left (${rows[0]!.n} found), balances as before`);
}
