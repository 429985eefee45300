import { afterAll, beforeAll, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { OutboxEvent } from '../../src/index.js';
import { orderViolations } from '../support/outbox-order.js';
import { createScratchDatabases, eventually } from '../support/cluster.js';

/**
 * O8 against moves (docs/outbox.md): idle keys are collected (retention 0, `outbox.purge()` in a
 * loop, and the consumer's own passes) while their buckets move back and forth between shards
 * and the same keys keep publishing and being consumed. The collector runs over a router of its
 * own that learns of the moves only by being refused. Checked: every committed event handled
 * (nothing lost); per key, each epoch's (the run of seqs between two collections) events in
 * order (O4); a seq starts again at 1 only after every earlier event of the key was handled,
 * and otherwise follows the previous one (never reused while an event of the key is live); no
 * outbox row left where its bucket is not owned.
 */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
let router: ShardRouter;
let consumerRouter: ShardRouter;
let collectorRouter: ShardRouter;
const KEYS = 6;

beforeAll(async () => {
  scratch = await createScratchDatabases();
  const config = {
    shards: scratch.urls.map((url, index) => ({ id: `s${index}`, connectionString: url })),
    bucketCount: 64,
    recovery: { intervalMillis: 0, atConnect: false },
    outbox: { retentionMillis: 0 },
  };
  router = await ShardRouter.connect(config);
  consumerRouter = await ShardRouter.connect(config);
  collectorRouter = await ShardRouter.connect(config);
}, 120_000);

afterAll(async () => {
  await collectorRouter?.close();
  await consumerRouter?.close();
  await router?.close();
  await scratch?.drop();
});

it('idle keys collected while their buckets move: nothing lost, order kept, a seq restarts only after the key was idle', async () => {
  // Keys of two buckets only, so a few moves move them all.
  const candidates = Array.from({ length: 400 }, (_, i) => `idle-mv-${i}`);
  const twoBuckets = [...new Set(candidates.map((key) => router.bucketFor(key)))].slice(0, 2);
  const keys = candidates.filter((key) => twoBuckets.includes(router.bucketFor(key))).slice(0, KEYS);
  const calls: OutboxEvent[] = [];
  const handled = new Set<string>();
  const consumer = consumerRouter.consume({
    group: 'idle-movers',
    topics: ['idle.moved'],
    concurrency: 4,
    leaseMillis: 2_000,
    pollIntervalMillis: 10,
    onError: () => undefined,
    handler: (event) => {
      calls.push(event);
      handled.add(event.id);
    },
  });
  await consumer.ready;

  // Per key, what was published in order, and how many earlier events of the key were still
  // unhandled when it committed (tx.publish does not return the seq: the handler gets it).
  const published = new Map<string, { id: string; unhandledBefore: number }[]>(keys.map((key) => [key, []]));
  let publishing = true;
  const publisher = (async () => {
    for (let round = 0; publishing || round < 20; round++) {
      for (const key of keys) {
        const own = published.get(key)!;
        const event = await router.transaction([key], (tx) => tx.publish(key, 'idle.moved', { round }));
        own.push({ id: event.id, unhandledBefore: own.filter((earlier) => !handled.has(earlier.id)).length });
      }
      // Room for the consumer to finish the keys, so they go idle and get collected.
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
  })();

  let moving = false;
  let collectedWhileMoving = 0;
  let collected = 0;
  let collecting = true;
  const collector = (async () => {
    while (collecting) {
      const { idleKeys } = await collectorRouter.outbox.purge();
      collected += idleKeys;
      if (moving) collectedWhileMoving += idleKeys;
    }
  })();

  // Each key's bucket to the next shard and on, twice over, while all of the above runs.
  const rebalancer = router.rebalancer();
  const buckets = [...new Set(keys.map((key) => router.bucketFor(key)))];
  for (let pass = 0; pass < 2; pass++) {
    for (const bucket of buckets) {
      const owner = router.bucketMap.owners[bucket]!;
      const target = router.shardIds[(router.shardIds.indexOf(owner) + 1) % router.shardIds.length]!;
      moving = true;
      await rebalancer.moveBucket(bucket, target);
      moving = false;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  publishing = false;
  await publisher;
  const all = [...published.values()].flat();
  await eventually('every committed event handled', async () => all.every((event) => handled.has(event.id)), 500, 20);
  collecting = false;
  await collector;
  await consumer.stop();

  // Each event's seq, as handled; a key's seq restarts at 1 (a new epoch) only after it was
  // collected, i.e. when every earlier event of the key had been handled; otherwise it goes on by one.
  const seqOf = new Map(calls.map((call) => [call.id, call.seq]));
  const epochOf = new Map<string, number>();
  const restartsBeforeIdle: string[] = [];
  const gaps: string[] = [];
  for (const [key, own] of published) {
    let epoch = 0;
    own.forEach((event, index) => {
      const seq = seqOf.get(event.id)!;
      const previous = index > 0 ? seqOf.get(own[index - 1]!.id)! : 0;
      if (index > 0 && seq === 1) {
        epoch++;
        if (event.unhandledBefore > 0) restartsBeforeIdle.push(`${key}: seq 1 with ${event.unhandledBefore} earlier events unhandled`);
      } else if (seq !== previous + 1) gaps.push(`${key}: seq ${seq} after ${previous}`);
      epochOf.set(event.id, epoch);
    });
  }

  // The race was run: keys were collected, some while a move was under way, and some restarted.
  expect(collected).toBeGreaterThan(0);
  expect(collectedWhileMoving).toBeGreaterThan(0);
  expect([...epochOf.values()].some((epoch) => epoch > 0)).toBe(true);
  expect(new Set(calls.map((call) => call.id))).toEqual(new Set(all.map((event) => event.id)));
  expect(restartsBeforeIdle).toEqual([]);
  expect(gaps).toEqual([]);
  // Per key and epoch, O4's order; and an epoch is handled only after the one before it.
  expect(orderViolations(calls.map((call) => ({ key: `${call.key}#${epochOf.get(call.id)}`, seq: call.seq })))).toEqual([]);
  for (const key of keys) {
    const epochs = calls.filter((call) => call.key === key).map((call) => epochOf.get(call.id)!);
    expect(epochs).toEqual([...epochs].sort((a, b) => a - b));
  }
  const report = await router.rebalancer().verify();
  expect({ misplaced: report.misplaced, divergent: report.divergent, openMoves: report.openMoves }).toEqual({
    misplaced: [],
    divergent: [],
    openMoves: 0,
  });
}, 120_000);
