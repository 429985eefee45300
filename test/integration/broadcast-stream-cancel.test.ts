import { context, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ShardRouterError } from '../../src/index.js';
import type { RouterMetrics, ShardRouter } from '../../src/index.js';
import { connectFreshRouter, eventually, rejectionOf, shardUrls, uniqueName, withServer } from '../support/cluster.js';

/**
 * broadcastStream's `signal` and `timeoutMillis` on the real shards: a stream stopped mid-way
 * is cancelled on the servers (pg_stat_activity shows the statements gone, the connections come
 * back) and the iterator rejects typed; the router stays usable. And a stream is one observed
 * broadcast: a metrics statement by outcome, one parent span, one CLIENT span per shard cursor.
 */

const T = uniqueName('bsc');
const applicationName = uniqueName('bsc_app');
const PER_SHARD = 100;
const SHARDS = 4;
/** The row whose pg_sleep(600) blocks its shard's cursor (shard 0's 51st row: past the first batches). */
const SLEEPING_ID = 201;
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
let router: ShardRouter;

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  router = await connectFreshRouter({ applicationName, tracerProvider: provider, recovery: { intervalMillis: 0, atConnect: false } });
  // Shard i holds ids i+1, i+1+4, ... (400 rows in all).
  await Promise.all(
    router.shardIds.map(async (shardId, i) => {
      await router.executeOn(shardId, `CREATE TABLE ${T} (id int PRIMARY KEY)`);
      await router.executeOn(shardId, `INSERT INTO ${T} SELECT g FROM generate_series($1::int, $2::int, $3::int) g`, [
        i + 1,
        SHARDS * PER_SHARD,
        SHARDS,
      ]);
    }),
  );
}, 60_000);

beforeEach(() => exporter.reset());

afterAll(async () => {
  if (router) {
    for (const shardId of router.shardIds) await router.executeOn(shardId, `DROP TABLE IF EXISTS ${T}`).catch(() => undefined);
    await router.close();
  }
  context.disable();
});

/** A stream whose shard 0 sleeps 600 s at SLEEPING_ID; `tag` (a literal in the shard query) finds it in pg_stat_activity. */
function sleeper(): { sql: string; tag: string } {
  const tag = uniqueName('sleeper');
  return { sql: `SELECT id, '${tag}' AS tag, pg_sleep(CASE WHEN id = ${SLEEPING_ID} THEN 600 ELSE 0 END)::text AS slept FROM ${T}`, tag };
}

/** Backends on any server whose statement carries `tag`: all of them, or only those in pg_sleep. */
async function backends(tag: string, sleeping = false): Promise<number> {
  const counts = await Promise.all(
    shardUrls().map((url) =>
      withServer(url, async (client) => {
        const { rows } = await client.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() AND ($2::bool IS FALSE OR wait_event = 'PgSleep')`,
          [tag, sleeping],
        );
        return rows[0]!.n;
      }),
    ),
  );
  return counts.reduce((a, b) => a + b, 0);
}

/** Nothing of `tag` left on any server, nothing borrowed from the pools. */
async function expectStoppedOnServers(tag: string): Promise<void> {
  await eventually(`no backend runs ${tag}`, async () => (await backends(tag)) === 0);
  await eventually('every pool has borrowed 0', async () => Object.values(router.poolStats()).every((stats) => stats.borrowed === 0));
}

/** Reads the whole stream in the background; resolves to the rows read, or rejects with the stream's error. */
async function drain(stream: AsyncIterable<unknown>): Promise<number> {
  let rows = 0;
  for await (const _ of stream) rows++;
  return rows;
}

async function expectUsable(): Promise<void> {
  let rows = 0;
  for await (const row of router.broadcastStream<{ id: number }>(`SELECT id FROM ${T} ORDER BY id`, [], { batchSize: 7 })) {
    expect(row.id).toBe(++rows);
  }
  expect(rows).toBe(SHARDS * PER_SHARD);
}

function count(metrics: RouterMetrics, outcome: 'ok' | 'error'): number {
  return metrics.statements.find((s) => s.route === 'broadcast' && s.outcome === outcome)!.count;
}

describe('broadcastStream with a signal', () => {
  it('an abort while a shard sleeps cancels it on the server; the iterator rejects STATEMENT_CANCELLED (retryable)', async () => {
    const { sql, tag } = sleeper();
    const controller = new AbortController();
    const reading = drain(router.broadcastStream(sql, [], { batchSize: 10, signal: controller.signal }));
    reading.catch(() => undefined);
    await eventually(`${tag} sleeps on a server`, async () => (await backends(tag, true)) === 1, 500, 20);
    controller.abort(new Error('the client went away'));
    const error = await rejectionOf(reading);
    expect(error).toBeInstanceOf(ShardRouterError);
    expect((error as ShardRouterError).code).toBe('STATEMENT_CANCELLED');
    expect((error as ShardRouterError).retryable).toBe(true);
    expect(((error as Error).cause as Error).message).toBe('the client went away');
    await expectStoppedOnServers(tag);
    await expectUsable();
  }, 60_000);

  it('an abort while the consumer is between two rows rejects the next read and closes every cursor', async () => {
    const { sql, tag } = sleeper();
    const controller = new AbortController();
    const iterator = router.broadcastStream(sql, [], { batchSize: 10, signal: controller.signal })[Symbol.asyncIterator]();
    expect((await iterator.next()).done).toBe(false);
    controller.abort();
    expect(((await rejectionOf(iterator.next())) as ShardRouterError).code).toBe('STATEMENT_CANCELLED');
    await expectStoppedOnServers(tag);
  }, 60_000);

  it('a signal that already aborted sends nothing', async () => {
    const { sql, tag } = sleeper();
    const error = await rejectionOf(drain(router.broadcastStream(sql, [], { signal: AbortSignal.abort() })));
    expect((error as ShardRouterError).code).toBe('STATEMENT_CANCELLED');
    expect(await backends(tag)).toBe(0);
  });

  it('a query merged whole (no table: one shard) is cancelled on the server too', async () => {
    const tag = uniqueName('whole');
    const controller = new AbortController();
    const reading = drain(
      router.broadcastStream(`SELECT pg_sleep(600)::text AS slept, '${tag}' AS tag`, [], { signal: controller.signal }),
    );
    reading.catch(() => undefined);
    await eventually(`${tag} sleeps on a server`, async () => (await backends(tag, true)) === 1, 500, 20);
    controller.abort();
    expect(((await rejectionOf(reading)) as ShardRouterError).code).toBe('STATEMENT_CANCELLED');
    await expectStoppedOnServers(tag);
  }, 60_000);
});

describe('broadcastStream with timeoutMillis', () => {
  it('cancels the sleeping shard on the server and rejects with BROADCAST_TIMEOUT (retryable)', async () => {
    const { sql, tag } = sleeper();
    const error = await rejectionOf(drain(router.broadcastStream(sql, [], { batchSize: 10, timeoutMillis: 3_000 })));
    expect((error as ShardRouterError).code).toBe('BROADCAST_TIMEOUT');
    expect((error as ShardRouterError).retryable).toBe(true);
    await expectStoppedOnServers(tag);
    await expectUsable();
  }, 60_000);
});

describe('broadcastStream is observed like broadcast', () => {
  const spans = (): ReadableSpan[] => exporter.getFinishedSpans();

  it('one parent span, one CLIENT span per shard cursor under it, and a broadcast statement in the metrics', async () => {
    const before = router.metrics();
    const sql = `SELECT id FROM ${T} WHERE id > $1 ORDER BY id`;
    expect(await drain(router.broadcastStream(sql, [10], { batchSize: 16 }))).toBe(SHARDS * PER_SHARD - 10);
    const after = router.metrics();
    expect(count(after, 'ok') - count(before, 'ok')).toBe(1);
    const parent = spans().find((span) => span.name === 'BROADCAST')!;
    expect(parent.kind).toBe(SpanKind.INTERNAL);
    expect(parent.attributes['db.query.text']).toBe(sql);
    const children = spans().filter((span) => span !== parent);
    expect(children.map((span) => span.attributes['pg_shard_router.shard']).sort()).toEqual([...router.shardIds].sort());
    for (const child of children) {
      expect(child.kind).toBe(SpanKind.CLIENT);
      expect(child.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
      expect(child.attributes['db.operation.name']).toBe('SELECT');
      expect(String(child.attributes['db.query.text'])).toContain('$1');
    }
  });

  it('an aborted stream counts as a broadcast error with its code, its spans failed', async () => {
    const before = router.metrics();
    const { sql, tag } = sleeper();
    const controller = new AbortController();
    const iterator = router.broadcastStream(sql, [], { batchSize: 10, signal: controller.signal })[Symbol.asyncIterator]();
    await iterator.next();
    controller.abort();
    await rejectionOf(iterator.next());
    await expectStoppedOnServers(tag);
    const after = router.metrics();
    expect(count(after, 'error') - count(before, 'error')).toBe(1);
    const code = (metrics: RouterMetrics) =>
      metrics.errors.find((e) => e.route === 'broadcast' && e.code === 'STATEMENT_CANCELLED')?.count ?? 0;
    expect(code(after) - code(before)).toBe(1);
    const parent = spans().find((span) => span.name === 'BROADCAST')!;
    expect(parent.status.code).toBe(SpanStatusCode.ERROR);
    expect(parent.attributes['error.type']).toBe('STATEMENT_CANCELLED');
    // The cursors still open at the abort fail with it; shards already read to the end ended well.
    const failed = spans().filter((span) => span !== parent && span.status.code === SpanStatusCode.ERROR);
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const span of failed) expect(span.attributes['error.type']).toBe('STATEMENT_CANCELLED');
  }, 60_000);
});
