import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ShardRouter, ShardRouterError } from '../../src/index.js';
import type { OutboxEvent } from '../../src/index.js';
import { connectFreshRouter, dropSchemas, eventually, rejectionOf, uniqueName } from '../support/cluster.js';
import { keyOn, keysOn } from '../support/keys.js';

/** Publishing and consuming against real shards: atomicity, order, groups, parking, retention, bad input. */

let router: ShardRouter;
let catalog: string;
let serial = 0;

function topic(): string {
  return `t.${serial++}`;
}

function group(): string {
  return `g${serial++}`;
}

async function eventCount(): Promise<number> {
  let total = 0;
  for (const shardId of router.shardIds) {
    const { rows } = await router.executeOn<{ n: number }>(shardId, `SELECT count(*)::int AS n FROM "${catalog}".outbox_events`);
    total += rows[0]!.n;
  }
  return total;
}

/** The per-key sequence number an event got when its row was written (tx.publish resolves before that). */
async function seqOf(event: { id: string; shardId: string }, schema = catalog, on: ShardRouter = router): Promise<number> {
  const { rows } = await on.executeOn<{ seq: number }>(
    event.shardId,
    `SELECT seq::int AS seq FROM "${schema}".outbox_events WHERE id = $1`,
    [event.id],
  );
  expect(rows).toHaveLength(1);
  return rows[0]!.seq;
}

/** Collects what a group's handler receives. */
function recorder() {
  const seen: OutboxEvent[] = [];
  return { seen, handler: async (event: OutboxEvent) => void seen.push(event) };
}

beforeAll(async () => {
  catalog = uniqueName('cat');
  router = await connectFreshRouter({ catalogSchema: catalog, recovery: { intervalMillis: 0, atConnect: false } });
});

afterAll(async () => {
  await router?.close();
  await dropSchemas(catalog);
});

describe('publishing', () => {
  it('writes an event in the transaction, on the key shard, and a rolled-back transaction publishes nothing', async () => {
    const [a, b] = keysOn(router, ['s0', 's1'], 'pub');
    const before = await eventCount();
    const t = topic();
    const published = await router.transaction([a!, b!], async (tx) => [
      await tx.publish(a!, t, { n: 1 }),
      await tx.publish(b!, t, { n: 2 }, { headers: { trace: 'x' } }),
    ]);
    expect(published.map((event) => event.shardId)).toEqual(['s0', 's1']);
    expect(await Promise.all(published.map((event) => seqOf(event)))).toEqual([1, 1]);
    expect(new Set(published.map((event) => event.id)).size).toBe(2);
    const failure = new Error('rolled back on purpose');
    const thrown = await rejectionOf(
      router.transaction([a!, b!], async (tx) => {
        await tx.publish(a!, t, { n: 3 });
        await tx.publish(b!, t, { n: 4 });
        throw failure;
      }),
    );
    expect(thrown).toBe(failure);
    const single = await rejectionOf(
      router.transaction([a!], async (tx) => {
        await tx.publish(a!, t, { n: 5 });
        throw failure;
      }),
    );
    expect(single).toBe(failure);
    expect(await eventCount()).toBe(before + 2);
    // The next event of `a` is seq 2: the rolled-back ones took no numbers.
    const next = await router.transaction([a!], (tx) => tx.publish(a!, t, { n: 6 }));
    expect(await seqOf(next)).toBe(2);
  });

  it('refuses a key outside the transaction, bad topics, payloads, headers and options, writing nothing', async () => {
    const [a, b] = keysOn(router, ['s0', 's1'], 'bad');
    const before = await eventCount();
    const cases: [string, (tx: Parameters<Parameters<ShardRouter['transaction']>[1]>[0]) => Promise<unknown>][] = [
      ['empty topic', (tx) => tx.publish(a!, '', {})],
      ['long topic', (tx) => tx.publish(a!, 'x'.repeat(201), {})],
      ['control character', (tx) => tx.publish(a!, 'a\nb', {})],
      ['topic not a string', (tx) => tx.publish(a!, 42 as unknown as string, {})],
      ['undefined payload', (tx) => tx.publish(a!, 't', undefined as never)],
      ['NaN', (tx) => tx.publish(a!, 't', { n: Number.NaN })],
      ['Date', (tx) => tx.publish(a!, 't', { at: new Date() } as never)],
      ['function', (tx) => tx.publish(a!, 't', { f: () => 1 } as never)],
      ['NUL in a string', (tx) => tx.publish(a!, 't', { s: 'a\u0000b' })],
      ['bigint', (tx) => tx.publish(a!, 't', { n: 1n } as never)],
      // biome-ignore lint/suspicious/noSparseArray: the hole is the case under test
      ['array with a hole', (tx) => tx.publish(a!, 't', [1, , 3] as never)],
      ['nested too deep', (tx) => tx.publish(a!, 't', JSON.parse(`${'['.repeat(102)}${']'.repeat(102)}`))],
      ['headers an array', (tx) => tx.publish(a!, 't', {}, { headers: [] as never })],
      ['headers not JSON', (tx) => tx.publish(a!, 't', {}, { headers: { h: undefined } as never })],
      ['unknown option', (tx) => tx.publish(a!, 't', {}, { header: {} } as never)],
    ];
    for (const [name, publish] of cases) {
      const error = await rejectionOf(router.transaction([a!], publish));
      expect(error, name).toBeInstanceOf(ShardRouterError);
      expect((error as ShardRouterError).code, name).toBe('INVALID_ARGUMENT');
    }
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(((await rejectionOf(router.transaction([a!], (tx) => tx.publish(a!, 't', cyclic as never)))) as ShardRouterError).code).toBe(
      'INVALID_ARGUMENT',
    );
    const outside = await rejectionOf(router.transaction([a!], (tx) => tx.publish(b!, 't', {})));
    expect((outside as ShardRouterError).code).toBe('KEY_NOT_IN_TRANSACTION');
    expect(await eventCount()).toBe(before);
  });

  it('refuses bad consume options and admin arguments', async () => {
    const handler = async () => undefined;
    const bad: unknown[] = [
      undefined,
      {},
      { group: '', topics: ['t'], handler },
      { group: 'g\u0007', topics: ['t'], handler },
      { group: 'g', topics: [], handler },
      { group: 'g', topics: 't', handler },
      { group: 'g', topics: [''], handler },
      { group: 'g', topics: ['t'] },
      { group: 'g', topics: ['t'], handler, batchSize: 0 },
      { group: 'g', topics: ['t'], handler, concurrency: 1.5 },
      { group: 'g', topics: ['t'], handler, maxAttempts: -1 },
      { group: 'g', topics: ['t'], handler, from: 'middle' },
      { group: 'g', topics: ['t'], handler, retryBackoffMillis: '10' },
      { group: 'g', topics: ['t'], handler, surprise: true },
    ];
    for (const options of bad) {
      const error = await rejectionOf(() => router.consume(options as never));
      expect((error as ShardRouterError).code, JSON.stringify(options)).toBe('INVALID_ARGUMENT');
    }
    expect(((await rejectionOf(router.outbox.parked({ group: '' }))) as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    expect(((await rejectionOf(router.outbox.retry('not-a-uuid', { group: 'g' }))) as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    const missing = await rejectionOf(router.outbox.skip('00000000-0000-4000-8000-000000000000', { group: 'g' }));
    expect((missing as ShardRouterError).code).toBe('INVALID_ARGUMENT');
  });
});

describe('consuming', () => {
  it('delivers every event to every group, each key in publish order, different keys in parallel', async () => {
    const t = topic();
    const keys = Array.from({ length: 12 }, (_, i) => `order-${serial}-${i}`);
    const perKey = 5;
    const ids = new Set<string>();
    for (let round = 1; round <= perKey; round++) {
      for (const key of keys) {
        const event = await router.transaction([key], (tx) => tx.publish(key, t, { key, round }));
        ids.add(event.id);
      }
    }
    const first = recorder();
    const second = recorder();
    const a = router.consume({ group: group(), topics: [t], handler: first.handler, concurrency: 4, batchSize: 3 });
    const b = router.consume({ group: group(), topics: [t], handler: second.handler });
    await eventually('both groups got everything', async () => first.seen.length >= ids.size && second.seen.length >= ids.size, 1_000);
    await Promise.all([a.stop(), b.stop()]);
    for (const { seen } of [first, second]) {
      expect(new Set(seen.map((event) => event.id))).toEqual(ids);
      for (const key of keys) {
        const rounds = seen.filter((event) => event.key === key).map((event) => (event.payload as { round: number }).round);
        expect(rounds).toEqual([1, 2, 3, 4, 5]);
      }
      expect(seen.every((event) => event.attempt === 1 && event.topic === t && event.shardId === router.shardFor(event.key))).toBe(true);
    }
    // publishedAt is the stored publish time, to the millisecond (what a Date holds).
    const sample = first.seen[first.seen.length - 1]!;
    const { rows } = await router.executeOn<{ ms: string }>(
      sample.shardId,
      `SELECT (extract(epoch FROM published_at) * 1000)::text AS ms FROM "${catalog}".outbox_events WHERE id = $1`,
      [sample.id],
    );
    expect(sample.publishedAt).toBeInstanceOf(Date);
    expect(sample.publishedAt.getTime()).toBe(Math.floor(Number(rows[0]!.ms)));
    expect(Math.abs(sample.publishedAt.getTime() - Date.now())).toBeLessThan(600_000);
    const status = await router.outbox.status();
    const mine = status.groups.filter((row) => row.group === a.group || row.group === b.group);
    expect(mine.length).toBe(2 * router.shardIds.length);
    expect(mine.every((row) => row.pending === 0 && row.parked === 0)).toBe(true);
  });

  it("a group created with from: 'latest' skips what was published before it", async () => {
    const t = topic();
    const key = `latest-${serial}`;
    await router.transaction([key], (tx) => tx.publish(key, t, { before: true }));
    const seen = recorder();
    const consumer = router.consume({ group: group(), topics: [t], handler: seen.handler, from: 'latest', pollIntervalMillis: 50 });
    await consumer.ready;
    const after = await router.transaction([key], (tx) => tx.publish(key, t, { before: false }));
    await eventually('the later event arrived', async () => seen.seen.length >= 1);
    await consumer.stop();
    expect(seen.seen.map((event) => event.id)).toEqual([after.id]);
  });

  /** Publishes one event under `name` and consumes it with `handler`; resolves once the handler holds it. */
  async function holdOneEvent(name: string, handler: (event: OutboxEvent) => Promise<void>) {
    const t = topic();
    const key = `${name}-${serial}`;
    await router.transaction([key], (tx) => tx.publish(key, t, { n: 1 }));
    let held: (event: OutboxEvent) => void = () => undefined;
    const handling = new Promise<OutboxEvent>((resolve) => {
      held = resolve;
    });
    const consumer = router.consume({
      group: group(),
      topics: [t],
      pollIntervalMillis: 50,
      handler: (event) => {
        held(event);
        return handler(event);
      },
    });
    return { consumer, event: await handling };
  }

  it("a handler's signal is aborted when stop() runs out of time; an event read from the stopped run sees it aborted too", async () => {
    // The handler waits for its signal only: stop() must abort it, or the handler never ends.
    const { consumer, event } = await holdOneEvent(
      'signal',
      (event) => new Promise<void>((_, reject) => event.signal.addEventListener('abort', () => reject(event.signal.reason))),
    );
    expect(event.signal.aborted).toBe(false);
    await consumer.stop(200);
    expect(event.signal.aborted).toBe(true);
    expect((event.signal.reason as Error).message).toBe('consumer stopped');
    // Spreading the event copies the signal (an accessor on the event itself).
    expect({ ...event }.signal).toBe(event.signal);
  });

  it("a handler's signal first read after its run was told to stop is already aborted", async () => {
    let finish: () => void = () => undefined;
    const { consumer, event } = await holdOneEvent(
      'late-signal',
      () =>
        new Promise<void>((resolve) => {
          finish = resolve;
        }),
    );
    await consumer.stop(200);
    expect(event.signal.aborted).toBe(true);
    expect((event.signal.reason as Error).message).toBe('consumer stopped');
    finish();
  });

  it('retries with backoff, parks after maxAttempts (the key waits), then retry and skip release it', async () => {
    const t = topic();
    const key = keyOn(router, 's2', `park${serial}`);
    const poison = await router.transaction([key], (tx) => tx.publish(key, t, { poison: true }));
    const behind = await router.transaction([key], (tx) => tx.publish(key, t, { poison: false }));
    let failUntil = Number.POSITIVE_INFINITY;
    const calls: { id: string; attempt: number }[] = [];
    const name = group();
    const consumer = router.consume({
      group: name,
      topics: [t],
      maxAttempts: 3,
      retryBackoffMillis: 10,
      pollIntervalMillis: 20,
      handler: async (event) => {
        calls.push({ id: event.id, attempt: event.attempt });
        if ((event.payload as { poison: boolean }).poison && calls.length < failUntil) throw new Error('cannot handle this one');
      },
    });
    await eventually('parked', async () => (await router.outbox.parked({ group: name })).length === 1, 1_000);
    const [parked] = await router.outbox.parked({ group: name });
    expect(parked).toMatchObject({ id: poison.id, key, seq: 1, attempts: 3, lastError: 'cannot handle this one', shardId: 's2' });
    expect(calls).toEqual([1, 2, 3].map((attempt) => ({ id: poison.id, attempt })));
    const status = (await router.outbox.status()).groups.find((row) => row.group === name && row.shardId === 's2');
    expect(status).toMatchObject({ pending: 2, parked: 1 });
    expect(status!.lagMillis).toBeGreaterThanOrEqual(0);
    // Retry: delivered again from attempt 1; it fails 3 more times and parks again.
    await router.outbox.retry(poison.id, { group: name });
    await eventually('parked again', async () => calls.length === 6 && (await router.outbox.parked({ group: name })).length === 1, 1_000);
    expect(calls.slice(3).map((call) => call.attempt)).toEqual([1, 2, 3]);
    // Skip: acknowledged without delivery, the next event of the key follows.
    await router.outbox.skip(poison.id, { group: name });
    await eventually('the next event went through', async () => calls.some((call) => call.id === behind.id));
    await consumer.stop();
    expect(calls.filter((call) => call.id === poison.id).length).toBe(6);
    expect(await router.outbox.parked({ group: name })).toEqual([]);
    const notParked = await rejectionOf(router.outbox.skip(poison.id, { group: name }));
    expect((notParked as ShardRouterError).code).toBe('INVALID_ARGUMENT');
    failUntil = 0;
  });

  it('retention deletes only events every group acknowledged', async () => {
    const schema = uniqueName('cat');
    const purging = await connectFreshRouter({
      catalogSchema: schema,
      recovery: { intervalMillis: 0, atConnect: false },
      outbox: { retentionMillis: 0 },
    });
    try {
      const t = topic();
      const keys = Array.from({ length: 6 }, (_, i) => `ret-${i}`);
      const fast = recorder();
      const slowSeen: string[] = [];
      const fastGroup = purging.consume({ group: 'fast', topics: [t], handler: fast.handler, pollIntervalMillis: 20 });
      // A second group that acknowledges only keys ret-0..ret-2.
      const slowGroup = purging.consume({
        group: 'slow',
        topics: [t],
        pollIntervalMillis: 20,
        maxAttempts: 1_000,
        retryBackoffMillis: 50,
        handler: async (event) => {
          if (Number(event.key.slice(4)) >= 3) throw new Error('not yet');
          slowSeen.push(event.key);
        },
      });
      await Promise.all([fastGroup.ready, slowGroup.ready]);
      for (const key of keys) await purging.transaction([key], (tx) => tx.publish(key, t, { key }));
      await eventually('fast has all, slow has half', async () => fast.seen.length === 6 && slowSeen.length === 3, 1_000);
      await Promise.all([fastGroup.stop(), slowGroup.stop()]);
      await purging.outbox.purge();
      const left = await purging.broadcast<{ key: string }>(`SELECT key FROM ${schema}.outbox_events ORDER BY key`);
      expect(left.rows.map((row) => row.key)).toEqual(['ret-3', 'ret-4', 'ret-5']);
      // The keys with no event left lose their sequence and offsets rows (by this purge or the
      // consumers' own, which also ran); the others keep them.
      const seqRows = await purging.broadcast<{ key: string }>(`SELECT key FROM ${schema}.outbox_keys ORDER BY key`);
      expect(seqRows.rows.map((row) => row.key)).toEqual(['ret-3', 'ret-4', 'ret-5']);
      const offsetRows = await purging.broadcast<{ key: string }>(`SELECT DISTINCT key FROM ${schema}.outbox_offsets ORDER BY key`);
      expect(offsetRows.rows.map((row) => row.key)).toEqual(['ret-3', 'ret-4', 'ret-5']);
      // A collected key starts again at seq 1, and every group gets its new event.
      const again = await purging.transaction(['ret-0'], (tx) => tx.publish('ret-0', t, { again: true }));
      expect(await seqOf(again, schema, purging)).toBe(1);
      const fastAgain = purging.consume({ group: 'fast', topics: [t], handler: fast.handler, pollIntervalMillis: 20 });
      await eventually('fast gets the new event', async () => fast.seen.some((event) => event.id === again.id), 1_000);
      await fastAgain.stop();
    } finally {
      await purging.close();
      await dropSchemas(schema);
    }
  });

  it('collecting idle keys while the same keys publish loses nothing and breaks no sequence', async () => {
    const schema = uniqueName('cat');
    const collecting = await connectFreshRouter({
      catalogSchema: schema,
      recovery: { intervalMillis: 0, atConnect: false },
      outbox: { retentionMillis: 0 },
    });
    try {
      const t = topic();
      const keys = ['gc-0', 'gc-1', 'gc-2', 'gc-3'];
      const seen = recorder();
      const consumer = collecting.consume({ group: 'gc', topics: [t], handler: seen.handler, pollIntervalMillis: 10 });
      await consumer.ready;
      const published: string[] = [];
      let publishing = true;
      const publisher = (async () => {
        for (let round = 0; round < 25; round++) {
          for (const key of keys) published.push((await collecting.transaction([key], (tx) => tx.publish(key, t, { round }))).id);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        publishing = false;
      })();
      let collected = 0;
      while (publishing) collected += (await collecting.outbox.purge()).idleKeys;
      await publisher;
      await eventually('every event handled', async () => published.every((id) => seen.seen.some((event) => event.id === id)), 500, 20);
      await consumer.stop();
      expect(collected).toBeGreaterThan(0); // The race was actually run: keys were collected between publishes.
      expect(new Set(seen.seen.map((event) => event.id))).toEqual(new Set(published));
    } finally {
      await collecting.close();
      await dropSchemas(schema);
    }
  });
});
