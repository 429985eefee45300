import type { ShardRouter } from '../../src/index.js';
import { atLeast, check, size } from '../section.js';
import type { Section, SectionContext } from '../section.js';
import { formatTable, nowNs, pairedRatios, percentile, secondsSince, summarize } from '../stats.js';
import type { Series } from '../stats.js';
import { closedLoop, interleavedRounds } from '../workload.js';

/**
 * The transactional outbox (docs/outbox.md):
 * - publish overhead: a transfer (debit + credit) that also publishes one event vs the same
 *   transfer without it, 1PC (both accounts on one shard) and 2PC (two shards), interleaved;
 * - relay throughput: events delivered per second to a no-op handler, one group, 4 shards,
 *   against a bare `DELETE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 100)` loop
 *   over one table, interleaved rounds;
 * - latency from commit (the transaction resolved) to the handler, p50/p99.
 */

const PUBLISH_VARIANTS = ['onePhase', 'onePhasePublish', 'twoPhase', 'twoPhasePublish'] as const;
type PublishVariant = (typeof PUBLISH_VARIANTS)[number];
const RELAY_VARIANTS = ['outbox', 'bareQueue'] as const;
type RelayVariant = (typeof RELAY_VARIANTS)[number];
export const PUBLISH_RATIO_TARGET = 0.85;
export const RELAY_RATIO_TARGET = 0.5;

export interface OutboxDetails {
  readonly transfersPerSecond: Readonly<Record<PublishVariant, Series>>;
  readonly publishRatio: { readonly onePhase: number; readonly twoPhase: number };
  readonly eventsPerSecond: Readonly<Record<RelayVariant, Series>>;
  readonly relayRatio: number;
  readonly latencyMillis: { readonly p50: number; readonly p99: number; readonly events: number };
}

/**
 * Per pair index: two keys on one shard, and two keys on different shards. Every account is in
 * one pair only, so transfers never form a lock cycle across shards (that would be a lock
 * timeout, not the commit protocol, being measured).
 */
function transferPairs(router: ShardRouter, count: number): { one: [string, string][]; two: [string, string][] } {
  const byShard = new Map<string, string[]>(router.shardIds.map((id) => [id, []]));
  for (let n = 0; [...byShard.values()].some((list) => list.length < count * 4); n++)
    byShard.get(router.shardFor(`acct-${n}`))!.push(`acct-${n}`);
  const lists = [...byShard.values()];
  const one: [string, string][] = [];
  const two: [string, string][] = [];
  for (let i = 0; i < count; i++) {
    const a = lists[i % lists.length]!;
    const b = lists[(i + 1) % lists.length]!;
    const slot = 4 * Math.floor(i / lists.length);
    one.push([a[slot]!, a[slot + 1]!]);
    two.push([a[slot + 2]!, b[slot + 3]!]);
  }
  return { one, two };
}

async function measurePublish(ctx: SectionContext, router: ShardRouter): Promise<{ tps: Record<PublishVariant, number[]>; wrong: number }> {
  const concurrency = 16;
  const perRound = size(ctx, 3_000, 400);
  const pairs = transferPairs(router, 256);
  const keys = [...new Set([...pairs.one, ...pairs.two].flat())];
  for (const shardId of router.shardIds)
    await router.executeOn(shardId, `CREATE TABLE ${ctx.schema}.accounts (id text PRIMARY KEY, balance bigint NOT NULL)`);
  for (const key of keys) await router.execute(key, `INSERT INTO ${ctx.schema}.accounts VALUES ($1, 1000000)`, [key]);
  const debit = `UPDATE ${ctx.schema}.accounts SET balance = balance - 1 WHERE id = $1`;
  const credit = `UPDATE ${ctx.schema}.accounts SET balance = balance + 1 WHERE id = $1`;
  let wrong = 0;
  const transfer = (list: [string, string][], publish: boolean) => async (index: number) => {
    const [from, to] = list[index % list.length]!;
    await router.transaction([from, to], async (tx) => {
      const a = await tx.execute(from, debit, [from]);
      const b = await tx.execute(to, credit, [to]);
      if (a.rowCount !== 1 || b.rowCount !== 1) wrong++;
      if (publish) await tx.publish(from, 'bench.transfer', { from, to, amount: 1 });
    });
    return true;
  };
  const ops: Record<PublishVariant, (index: number) => Promise<boolean>> = {
    onePhase: transfer(pairs.one, false),
    onePhasePublish: transfer(pairs.one, true),
    twoPhase: transfer(pairs.two, false),
    twoPhasePublish: transfer(pairs.two, true),
  };
  const results = await interleavedRounds(PUBLISH_VARIANTS, { rounds: size(ctx, 7, 3), warmupRounds: 1 }, async (variant) => {
    const result = await closedLoop(perRound, concurrency, ops[variant]);
    return result.opsPerSecond;
  });
  return { tps: results, wrong };
}

/**
 * One outbox round: a fresh group consumes every event; resolves to events per second. The
 * consumer runs in its default mode: progress recorded once per key's run (docs/outbox.md O4).
 */
async function outboxRound(router: ShardRouter, topic: string, events: number, round: number): Promise<number> {
  let handled = 0;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });
  const consumer = router.consume({
    group: `relay-${round}-${Date.now()}`,
    topics: [topic],
    concurrency: 256,
    batchSize: 100,
    pollIntervalMillis: 50,
    handler: () => {
      if (++handled === events) resolveDone();
    },
  });
  // From the group on record (its creation is a 2PC over every shard, once per group, not relay
  // work; the bare queue's table is created before its rounds too): the first claim is then
  // already on its way, which the clock misses by one turn of the event loop.
  await consumer.ready;
  const start = nowNs();
  await done;
  const seconds = secondsSince(start);
  await consumer.stop();
  return events / seconds;
}

/** One baseline round: fill one table, then 4 loops take and delete 100 rows at a time with SKIP LOCKED. */
async function bareRound(ctx: SectionContext, router: ShardRouter, events: number): Promise<number> {
  const shardId = router.shardIds[0]!;
  const table = `${ctx.schema}.bare_queue`;
  await router.executeOn(shardId, `INSERT INTO ${table} (payload) SELECT jsonb_build_object('n', n) FROM generate_series(1, $1) n`, [
    events,
  ]);
  let taken = 0;
  const start = nowNs();
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (;;) {
        const { rowCount } = await router.executeOn(
          shardId,
          `DELETE FROM ${table} WHERE id IN (SELECT id FROM ${table} ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id, payload`,
        );
        if (!rowCount) return;
        taken += rowCount;
      }
    }),
  );
  const seconds = secondsSince(start);
  if (taken !== events) throw new Error(`bare queue took ${taken} of ${events}`);
  return events / seconds;
}

async function measureRelay(ctx: SectionContext, router: ShardRouter): Promise<Record<RelayVariant, number[]>> {
  const events = size(ctx, 20_000, 3_000);
  const topic = 'bench.relay';
  await router.executeOn(router.shardIds[0]!, `CREATE TABLE ${ctx.schema}.bare_queue (id bigserial PRIMARY KEY, payload jsonb NOT NULL)`);
  ctx.log(`publishing ${events} events over ${events / 4} keys...`);
  await closedLoop(events / 4, 16, async (index) => {
    const key = `relay-${index}`;
    await router.transaction([key], async (tx) => {
      for (let n = 0; n < 4; n++) await tx.publish(key, topic, { n });
    });
    return true;
  });
  let round = 0;
  return interleavedRounds(RELAY_VARIANTS, { rounds: size(ctx, 5, 3), warmupRounds: 1 }, (variant) =>
    variant === 'outbox' ? outboxRound(router, topic, events, round++) : bareRound(ctx, router, events),
  );
}

async function measureLatency(ctx: SectionContext, router: ShardRouter): Promise<number[]> {
  const count = size(ctx, 1_000, 200);
  const committedAt = new Map<string, number>();
  const latencies: number[] = [];
  const early = new Map<string, number>();
  const consumer = router.consume({
    group: 'latency',
    topics: ['bench.latency'],
    concurrency: 16,
    pollIntervalMillis: 1_000,
    from: 'latest',
    handler: (event) => {
      const at = performance.now();
      const committed = committedAt.get(event.id);
      if (committed === undefined) early.set(event.id, at);
      else latencies.push(at - committed);
    },
  });
  await consumer.ready;
  await closedLoop(count, 4, async (index) => {
    const key = `lat-${index}`;
    const { id } = await router.transaction([key], (tx) => tx.publish(key, 'bench.latency', { index }));
    const at = performance.now();
    committedAt.set(id, at);
    // Handled before the router returned: the commit was earlier still, so count it as 0.
    if (early.has(id)) latencies.push(Math.max(0, early.get(id)! - at));
    return true;
  });
  while (latencies.length < count) await new Promise((resolve) => setTimeout(resolve, 20));
  await consumer.stop();
  return latencies;
}

export const outboxSection: Section<OutboxDetails> = {
  name: 'outbox',
  title: 'transactional outbox: publish overhead (1PC, 2PC), relay throughput vs a bare SKIP LOCKED queue, commit-to-handler latency',
  async run(ctx) {
    const router = await ctx.router(Math.min(4, ctx.shards.length), { poolMax: 20 });
    const publish = await measurePublish(ctx, router);
    const relay = await measureRelay(ctx, router);
    const latency = await measureLatency(ctx, router);
    const tps = Object.fromEntries(PUBLISH_VARIANTS.map((v) => [v, summarize(publish.tps[v])])) as Record<PublishVariant, Series>;
    const eps = Object.fromEntries(RELAY_VARIANTS.map((v) => [v, summarize(relay[v])])) as Record<RelayVariant, Series>;
    const publishRatio = {
      onePhase: summarize(pairedRatios(publish.tps.onePhasePublish, publish.tps.onePhase)).median,
      twoPhase: summarize(pairedRatios(publish.tps.twoPhasePublish, publish.tps.twoPhase)).median,
    };
    const relayRatio = summarize(pairedRatios(relay.outbox, relay.bareQueue)).median;
    const p50 = percentile(latency, 50);
    const p99 = percentile(latency, 99);
    return {
      setup: `${router.shardIds.length} shards, pool max 20; transfers: 16 in flight; relay: one group (timed from the group on record), concurrency 256, batchSize 100, 4 events per key, default acknowledgement (one write per key's run, O4); bare queue: 4 loops of 100-row DELETE ... SKIP LOCKED on one table`,
      figures: [
        {
          label: 'transfer + publish, 1PC',
          value: tps.onePhasePublish.median,
          unit: 'transfers/s',
          baseline: { label: 'transfer, 1PC', value: tps.onePhase.median },
          ratio: publishRatio.onePhase,
          target: atLeast('ratio', publishRatio.onePhase, PUBLISH_RATIO_TARGET, 'x'),
        },
        {
          label: 'transfer + publish, 2PC',
          value: tps.twoPhasePublish.median,
          unit: 'transfers/s',
          baseline: { label: 'transfer, 2PC', value: tps.twoPhase.median },
          ratio: publishRatio.twoPhase,
          target: atLeast('ratio', publishRatio.twoPhase, PUBLISH_RATIO_TARGET, 'x'),
        },
        {
          label: 'outbox relay to a no-op handler',
          value: eps.outbox.median,
          unit: 'rows/s',
          baseline: { label: 'bare SKIP LOCKED + DELETE queue', value: eps.bareQueue.median },
          ratio: relayRatio,
          target: atLeast('ratio', relayRatio, RELAY_RATIO_TARGET, 'x'),
        },
        { label: 'commit to handler, p50', value: p50, unit: 'ms' },
        { label: 'commit to handler, p99', value: p99, unit: 'ms' },
      ],
      guard: [
        check('every transfer updated both accounts', publish.wrong === 0, `${publish.wrong} transfers missed an account`),
        check('every latency event was handled', latency.length >= size(ctx, 1_000, 200), `${latency.length} handled`),
      ],
      details: {
        transfersPerSecond: tps,
        publishRatio,
        eventsPerSecond: eps,
        relayRatio,
        latencyMillis: { p50, p99, events: latency.length },
      },
    };
  },
  format(outcome) {
    const d = outcome.details;
    const q = (s: Series) => [Math.round(s.median).toString(), Math.round(s.min).toString(), Math.round(s.max).toString()];
    return (
      formatTable(
        ['variant', 'median /s', 'min', 'max'],
        [
          ['transfer, 1PC', ...q(d.transfersPerSecond.onePhase)],
          ['transfer + publish, 1PC', ...q(d.transfersPerSecond.onePhasePublish)],
          ['transfer, 2PC', ...q(d.transfersPerSecond.twoPhase)],
          ['transfer + publish, 2PC', ...q(d.transfersPerSecond.twoPhasePublish)],
          ['outbox relay events', ...q(d.eventsPerSecond.outbox)],
          ['bare queue rows', ...q(d.eventsPerSecond.bareQueue)],
        ],
      ) +
      `\npublish ratio 1PC ${d.publishRatio.onePhase.toFixed(3)}, 2PC ${d.publishRatio.twoPhase.toFixed(3)}; relay ratio ${d.relayRatio.toFixed(3)}` +
      `\ncommit to handler: p50 ${d.latencyMillis.p50.toFixed(1)} ms, p99 ${d.latencyMillis.p99.toFixed(1)} ms (${d.latencyMillis.events} events)`
    );
  },
};
