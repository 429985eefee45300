import { afterAll, beforeAll, expect, it } from 'vitest';
import { ShardRouter } from '../../src/index.js';
import type { OutboxEvent } from '../../src/index.js';
import { orderViolations } from '../support/outbox-order.js';
import { createScratchDatabases, eventually, shardUrls, withServer } from '../support/cluster.js';

/**
 * A shard loses every connection (all its backends terminated with pg_terminate_backend: the
 * publishers' open transactions, the consumer's claims, settlements and LISTEN connection) three
 * times while events are published and consumed. The shard servers are shared with the other
 * test files, so the test works in databases of its own and terminates only their backends,
 * which is what a restart does to the router. Afterwards: every event the router acknowledged
 * is on record and was handled (nothing committed lost), every event on record was handled
 * (publishes that failed at the cut and committed anyway included), each key's events in order
 * (a redelivery may repeat the run it interrupted, O4), and the consumer went on after each cut.
 */

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
let router: ShardRouter;
const KEYS = 16;
const CUTS = 3;
const CATALOG = 'outbox_cut';

beforeAll(async () => {
  scratch = await createScratchDatabases();
  router = await ShardRouter.connect({
    shards: scratch.urls.slice(0, 2).map((url, index) => ({ id: `s${index}`, connectionString: url })),
    bucketCount: 64,
    catalogSchema: CATALOG,
    recovery: { intervalMillis: 0, atConnect: false },
  });
}, 120_000);

afterAll(async () => {
  await router?.close();
  await scratch?.drop();
});

/** Terminates every backend of the scratch database on shard s0's server (other databases untouched). */
async function cutShard(): Promise<number> {
  const database = new URL(scratch.urls[0]!).pathname.slice(1);
  const { rowCount } = await withServer(shardUrls()[0]!, (client) =>
    client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [database]),
  );
  return rowCount ?? 0;
}

async function eventsOnRecord(): Promise<Map<string, { key: string; seq: number }>> {
  const onRecord = new Map<string, { key: string; seq: number }>();
  for (const shardId of router.shardIds) {
    const { rows } = await router.executeOn<{ id: string; key: string; seq: number }>(
      shardId,
      `SELECT id::text AS id, key, seq::int AS seq FROM ${CATALOG}.outbox_events WHERE topic = 'cut'`,
    );
    for (const row of rows) onRecord.set(row.id, { key: row.key, seq: row.seq });
  }
  return onRecord;
}

it('a shard whose backends are all terminated while publishing and consuming: nothing committed lost, order kept, consumers resume', async () => {
  const keys = Array.from({ length: KEYS }, (_, i) => `cut-${i}`);
  expect(new Set(keys.map((key) => router.shardFor(key)))).toEqual(new Set(['s0', 's1']));
  const calls: OutboxEvent[] = [];
  const consumer = router.consume({
    group: 'survivors',
    topics: ['cut'],
    concurrency: 8,
    batchSize: 5,
    leaseMillis: 1_500,
    pollIntervalMillis: 100,
    onError: () => undefined,
    handler: async (event) => {
      calls.push(event);
      await new Promise((resolve) => setTimeout(resolve, 1));
    },
  });
  await consumer.ready;
  const acknowledged = new Set<string>();
  let failedPublishes = 0;
  let publishing = true;
  const publisher = (async () => {
    for (let round = 0; publishing; round++) {
      await Promise.all(
        keys.map(async (key) => {
          try {
            const event = await router.transaction([key], (tx) => tx.publish(key, 'cut', { round }));
            acknowledged.add(event.id);
          } catch {
            failedPublishes++; // Cut mid-transaction: committed or not, the check below reads what is on record.
          }
        }),
      );
    }
  })();
  const handledOnS0 = () => calls.filter((call) => router.shardFor(call.key) === 's0').length;
  let terminated = 0;
  for (let cut = 0; cut < CUTS; cut++) {
    await new Promise((resolve) => setTimeout(resolve, 600));
    terminated += await cutShard();
  }
  const handledAtLastCut = handledOnS0();
  await new Promise((resolve) => setTimeout(resolve, 600));
  publishing = false;
  await publisher;

  const onRecord = await eventsOnRecord();
  await eventually(
    'every event on record handled',
    async () => {
      const handled = new Set(calls.map((call) => call.id));
      return [...onRecord.keys()].every((id) => handled.has(id));
    },
    300,
    50,
  );
  await consumer.stop();

  console.info(
    `outage: ${terminated} backends terminated, ${acknowledged.size} publishes acknowledged, ${failedPublishes} failed, ${onRecord.size} on record, ${calls.length} handler calls`,
  );
  expect(terminated).toBeGreaterThan(CUTS); // The cuts did hit the router's connections.
  for (const id of acknowledged) expect(onRecord.has(id), `acknowledged event ${id} lost`).toBe(true);
  expect(new Set(calls.map((call) => call.id))).toEqual(new Set(onRecord.keys()));
  for (const key of keys) {
    const own = calls.filter((c) => c.key === key);
    expect(orderViolations(own)).toEqual([]);
    const highest = Math.max(0, ...own.map((call) => call.seq));
    const seqs = [...onRecord.values()].filter((event) => event.key === key).map((event) => event.seq);
    // Sequence numbers on record have no gaps (O2), and the last was handled.
    expect(seqs.sort((a, b) => a - b)).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect(highest).toBe(seqs.length);
  }
  // Events of s0 were handled after the last cut: the consumer resumed there.
  expect(handledOnS0()).toBeGreaterThan(handledAtLastCut);
  const { groups } = await router.outbox.status();
  expect(groups.filter((row) => row.group === 'survivors').every((row) => row.pending === 0 && row.parked === 0)).toBe(true);
}, 120_000);
