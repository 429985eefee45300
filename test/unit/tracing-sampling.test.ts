import { SamplingDecision } from '@opentelemetry/api';
import type { Attributes } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Sampler } from '@opentelemetry/sdk-trace-base';
import { describe, expect, it } from 'vitest';
import { shardTarget } from '../../src/observe/shard-target.js';
import { loadTracing } from '../../src/observe/tracing.js';

/**
 * Statement spans with the real OpenTelemetry SDK and a sampler: the sampler sees the
 * attributes the database conventions call sampling-relevant; our own are set only on a
 * recording span, so a sampled-out statement pays for nothing but the SDK's startSpan.
 */

/** A sampler that records what it was shown and records every `every`-th span (0: none). */
function recordingSampler(every: number): Sampler & { seen: Attributes[] } {
  let calls = 0;
  const seen: Attributes[] = [];
  return {
    seen,
    shouldSample(_context, _traceId, _name, _kind, attributes) {
      seen.push({ ...attributes });
      calls++;
      return { decision: every > 0 && calls % every === 0 ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD };
    },
    toString: () => 'recordingSampler',
  };
}

async function tracingWith(sampler: Sampler) {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ sampler, spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracing = (await loadTracing(provider))!;
  tracing.addShard(shardTarget('s1', 'postgres://app:pw@db-1.internal:6432/orders'));
  return { tracing, exporter };
}

describe('statement spans and sampling', () => {
  it('the sampler sees the sampling-relevant convention attributes, never our namespaced ones or a value', async () => {
    const sampler = recordingSampler(0);
    const { tracing, exporter } = await tracingWith(sampler);
    const span = tracing.keyed('s1', 'SELECT * FROM t WHERE id = $1', 17, 3);
    expect(span.isRecording()).toBe(false);
    tracing.succeeded(span, 's1', 'SELECT');
    expect(sampler.seen).toEqual([
      {
        'db.system.name': 'postgresql',
        'db.namespace': 'orders',
        'server.address': 'db-1.internal',
        'server.port': 6432,
        'db.query.text': 'SELECT * FROM t WHERE id = $1',
        'db.operation.name': undefined,
      },
    ]);
    expect(exporter.getFinishedSpans()).toHaveLength(0);
  });

  it('a recording span gets our attributes after the start, and its name and operation from the command tag', async () => {
    const { tracing, exporter } = await tracingWith(recordingSampler(2));
    for (let bucket = 0; bucket < 4; bucket++)
      tracing.succeeded(tracing.keyed('s1', 'UPDATE t SET n = $2 WHERE id = $1', bucket, 9), 's1', 'UPDATE');
    const spans = exporter.getFinishedSpans();
    expect(spans.map((span) => span.attributes['pg_shard_router.bucket'])).toEqual([1, 3]);
    expect(spans[0]!.name).toBe('UPDATE orders');
    expect(spans[0]!.attributes).toEqual({
      'db.system.name': 'postgresql',
      'db.namespace': 'orders',
      'server.address': 'db-1.internal',
      'server.port': 6432,
      'db.query.text': 'UPDATE t SET n = $2 WHERE id = $1',
      'db.operation.name': 'UPDATE',
      'pg_shard_router.shard': 's1',
      'pg_shard_router.bucket': 1,
      'pg_shard_router.map_version': 9,
    });
  });

  it("a 2PC step's span carries its operation at the start, and its step and gid when recording", async () => {
    const sampler = recordingSampler(1);
    const { tracing, exporter } = await tracingWith(sampler);
    const detail = { operation: 'PREPARE TRANSACTION', step: 'prepare', gid: 'psr_1_abc' };
    tracing.succeeded(tracing.statement('s1', undefined, detail), 's1', detail.operation);
    expect(sampler.seen[0]!['db.operation.name']).toBe('PREPARE TRANSACTION');
    expect(exporter.getFinishedSpans()[0]!.attributes).toMatchObject({
      'db.operation.name': 'PREPARE TRANSACTION',
      'pg_shard_router.txn_step': 'prepare',
      'pg_shard_router.gid': 'psr_1_abc',
      'pg_shard_router.shard': 's1',
    });
    expect(exporter.getFinishedSpans()[0]!.attributes).not.toHaveProperty('pg_shard_router.bucket');
  });
});
