import { afterAll, beforeAll, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { OutboxEvent } from '../../src/index.js';
import { orderViolations } from '../support/outbox-order.js';
import { createScratchDatabases, eventually } from '../support/cluster.js';

/**
 * Bucket moves while events are published and consumed: the moving buckets' events, per-key
 * sequences and group offsets (leases included) travel with them. Afterwards every committed
 * event was handled, each key's events in order (a redelivery may repeat the run it interrupted, O4),
 * nothing is left pending, and verify finds no outbox row on a shard that does not own it.
 */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
let router: ShardRouter;
let consumerRouter: ShardRouter;
const KEYS = 24;

beforeAll(async () => {
  scratch = await createScratchDatabases();
  const config = {
    shards: scratch.urls.map((url, index) => ({ id: `s${index}`, connectionString: url })),
    bucketCount: 64,
    recovery: { intervalMillis: 0, atConnect: false },
  };
  router = await ShardRouter.connect(config);
  // The consumer runs over a router of its own, which learns of the moves by NOTIFY or a refused write.
  consumerRouter = await ShardRouter.connect(config);
}, 120_000);

afterAll(async () => {
  await consumerRouter?.close();
  await router?.close();
  await scratch?.drop();
});

it('moves carry undelivered events, sequences and offsets: nothing lost, per-key order kept', async () => {
  const keys = Array.from({ length: KEYS }, (_, i) => `mv-${i}`);
  const calls: OutboxEvent[] = [];
  const consumer = consumerRouter.consume({
    group: 'movers',
    topics: ['moved'],
    concurrency: 6,
    batchSize: 5,
    leaseMillis: 2_000,
    pollIntervalMillis: 50,
    onError: () => undefined,
    handler: async (event) => {
      calls.push(event);
      await new Promise((resolve) => setTimeout(resolve, 2));
    },
  });
  await consumer.ready;
  const committed = new Map<string, { key: string; seq: number }>();
  const published = new Map<string, number>();
  let publishing = true;
  const publisher = (async () => {
    for (let round = 0; publishing || round < 4; round++) {
      for (const key of keys) {
        const event = await router.transaction([key], (tx) => tx.publish(key, 'moved', { round }));
        // A key's publishes commit one after another, so its nth commit must be its seq n (O2).
        committed.set(event.id, { key, seq: (published.get(key) ?? 0) + 1 });
        published.set(key, (published.get(key) ?? 0) + 1);
      }
    }
  })();
  // Move the buckets of half the keys, each to the next shard, one after the other, while both run.
  const rebalancer = router.rebalancer();
  const buckets = [...new Set(keys.slice(0, KEYS / 2).map((key) => router.bucketFor(key)))];
  for (const bucket of buckets) {
    const owner = router.bucketMap.owners[bucket]!;
    const target = router.shardIds[(router.shardIds.indexOf(owner) + 1) % router.shardIds.length]!;
    await rebalancer.moveBucket(bucket, target);
  }
  publishing = false;
  await publisher;
  await eventually(
    'every committed event handled',
    async () => committed.size > 0 && [...committed.keys()].every((id) => calls.some((call) => call.id === id)),
    3_000,
    50,
  );
  await consumer.stop();

  expect(new Set(calls.map((call) => call.id))).toEqual(new Set(committed.keys()));
  for (const key of keys) {
    const own = calls.filter((c) => c.key === key);
    expect(orderViolations(own)).toEqual([]);
    const highest = Math.max(0, ...own.map((call) => call.seq));
    expect(highest).toBe(Math.max(...[...committed.values()].filter((event) => event.key === key).map((event) => event.seq)));
  }
  // Consumed on both sides of a move: before it from the old owner, after it from the new one.
  const keysReadOnTwoShards = keys.filter((key) => new Set(calls.filter((call) => call.key === key).map((call) => call.shardId)).size > 1);
  expect(keysReadOnTwoShards.length).toBeGreaterThan(0);
  const { groups } = await router.outbox.status();
  expect(groups.filter((row) => row.group === 'movers').every((row) => row.pending === 0 && row.parked === 0)).toBe(true);
  const report = await router.rebalancer().verify();
  expect({ misplaced: report.misplaced, divergent: report.divergent, openMoves: report.openMoves }).toEqual({
    misplaced: [],
    divergent: [],
    openMoves: 0,
  });
  expect(report.ok).toBe(true);
  // The outbox's three per-key tables are among the registered sharded tables verify checked.
  expect(report.tablesChecked).toBeGreaterThanOrEqual(3);
}, 240_000);
