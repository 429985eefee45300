import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, describe, expect, it } from 'vitest';
import { Observer } from '../../src/observe/observer.js';
import { loadTracing } from '../../src/observe/tracing.js';

/**
 * Tracing through the global provider (no `tracerProvider` in the config): while no SDK is
 * registered the router has no tracing at all (no attributes built, no no-op span per
 * statement); once one registers, even after connect, statements get spans.
 */

afterAll(() => trace.disable());

describe('tracing through the global tracer provider', () => {
  it('is off until an SDK registers globally, then on, without reconnecting', async () => {
    const observer = new Observer(undefined, await loadTracing(undefined));
    observer.pool('s0', 'postgres://app:secret@db0.internal:6432/app');
    expect(observer.tracing).toBeUndefined();

    const exporter = new InMemorySpanExporter();
    expect(trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))).toBe(true);
    const tracing = observer.tracing;
    expect(tracing).toBeDefined();
    const span = tracing!.statement('s0', 'SELECT $1::int', { bucket: 7, mapVersion: 3 });
    tracing!.succeeded(span, 's0', 'SELECT');
    const [finished] = exporter.getFinishedSpans();
    expect(finished!.name).toBe('SELECT app');
    expect(finished!.attributes).toMatchObject({
      'server.address': 'db0.internal',
      'server.port': 6432,
      'pg_shard_router.bucket': 7,
      'pg_shard_router.map_version': 3,
    });
    expect(JSON.stringify(finished!.attributes)).not.toContain('secret');
  });

  it("a transaction's statement gets no span while tracing is off, and its work still runs", async () => {
    trace.disable();
    const observer = new Observer(undefined, await loadTracing(undefined));
    const probe = observer.operation('transaction');
    const result = await probe.run(() =>
      probe.statement('s0', 'SELECT 1', { bucket: 1, mapVersion: 1 }, async () => ({ command: 'SELECT' })),
    );
    expect(result).toEqual({ command: 'SELECT' });
    expect(observer.tracing).toBeUndefined();
  });
});
