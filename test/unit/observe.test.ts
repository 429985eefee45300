import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { QueryError, ShardRouterError } from '../../src/errors.js';
import { registerMetrics } from '../../src/integrations/prometheus.js';
import { Histogram } from '../../src/observe/histogram.js';
import { loggableError } from '../../src/observe/logger.js';
import { Observer } from '../../src/observe/observer.js';
import { shardTarget } from '../../src/observe/shard-target.js';
import { errorType } from '../../src/observe/tracing.js';

/** The observe layer's pieces without a database: histogram, targets, error shapes, probes. */

/** A driver error as pg builds one (code + severity), whose message quotes the value sent. */
function pgError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code, severity: 'ERROR' });
}

describe('Histogram', () => {
  it('counts into cumulative buckets, with sum and count', () => {
    const histogram = new Histogram([0.01, 0.1, 1]);
    for (const seconds of [0, 0.01, 0.05, 0.5, 7]) histogram.observe(seconds);
    const { sum, ...rest } = histogram.snapshot();
    expect(rest).toEqual({ bounds: [0.01, 0.1, 1], cumulative: [2, 3, 4], count: 5 });
    expect(sum).toBeCloseTo(7.56, 10);
  });
});

describe('shardTarget', () => {
  it('reads host, port and database from a URL, never user or password', () => {
    const target = shardTarget('s0', 'postgres://app:secret@db0.internal:6432/orders?sslmode=require');
    expect(target).toEqual({ shardId: 's0', address: 'db0.internal', port: 6432, namespace: 'orders' });
    expect(JSON.stringify(target)).not.toContain('secret');
  });

  it('defaults the port, takes ?host= (a socket directory) over the URL host, and leaves an absent database unset', () => {
    expect(shardTarget('s1', 'postgresql://db1/app')).toMatchObject({ address: 'db1', port: 5432, namespace: 'app' });
    expect(shardTarget('s2', 'postgres://u@localhost/app?host=/var/run/postgresql')).toMatchObject({ address: '/var/run/postgresql' });
    expect(shardTarget('s3', 'postgres://u@[::1]:5433')).toMatchObject({ address: '::1', port: 5433, namespace: undefined });
  });
});

describe('errors in logs and spans', () => {
  it('a server error is logged and typed by its SQLSTATE, without its message (it can quote a parameter)', () => {
    const error = new QueryError('s0', pgError('22P02', 'invalid input syntax for type integer: "hunter2"'));
    expect(loggableError(error)).toEqual({ name: 'QueryError', code: 'QUERY_FAILED', sqlState: '22P02' });
    expect(errorType(error)).toBe('22P02');
    const wrapped = new ShardRouterError('TRANSACTION_ABORTED', 'aborted', { cause: error });
    expect(JSON.stringify(loggableError(wrapped))).not.toContain('hunter2');
  });

  it('a router or connection error keeps its message and is typed by its code or class', () => {
    const timeout = new ShardRouterError('POOL_TIMEOUT', 'shard s1: no connection became free within 5000 ms');
    expect(loggableError(timeout)).toEqual({ name: 'ShardRouterError', code: 'POOL_TIMEOUT', message: timeout.message });
    expect(errorType(timeout)).toBe('POOL_TIMEOUT');
    expect(errorType(new TypeError('x'))).toBe('TypeError');
    expect(errorType('a string')).toBe('_OTHER');
  });
});

describe('Observer without tracing', () => {
  it('routes a transaction by the protocol the coordinator reported, and counts what failed by code', async () => {
    const observer = new Observer(undefined, undefined);
    const twoPhase = observer.operation('transaction');
    twoPhase.protocol('2pc');
    await twoPhase.run(async () => 'done');
    const failing = observer.operation('transaction');
    failing.protocol('1pc');
    await expect(failing.run(() => Promise.reject(new ShardRouterError('LOCK_TIMEOUT', 'lock')))).rejects.toThrow('lock');
    const metrics = observer.metrics.snapshot({ mapVersion: 3, pools: {} });
    const countOf = (route: string, outcome: string) => metrics.statements.find((s) => s.route === route && s.outcome === outcome)!.count;
    expect(countOf('transaction_2pc', 'ok')).toBe(1);
    expect(countOf('transaction_1pc', 'error')).toBe(1);
    expect(metrics.errors).toEqual([{ route: 'transaction_1pc', code: 'LOCK_TIMEOUT', count: 1 }]);
  });

  it('renders gauges other parts add (the extension point for the outbox and sagas) without changes to the integration', async () => {
    const observer = new Observer(undefined, undefined);
    observer.metrics.addGauge('outbox_lag_seconds', () => ({
      name: 'outbox_lag_seconds',
      help: 'Age of the oldest undelivered event',
      values: [{ labels: { shard: 's0' }, value: 1.5 }],
    }));
    const registry = new Registry();
    registerMetrics({ metrics: () => observer.metrics.snapshot({ mapVersion: 1, pools: {} }) }, { registry });
    const text = await registry.metrics();
    expect(text).toContain('# TYPE pg_shard_router_outbox_lag_seconds gauge');
    expect(text).toContain('pg_shard_router_outbox_lag_seconds{shard="s0"} 1.5');
  });
});

describe('registerMetrics formats', () => {
  it('renders counters right in the OpenMetrics format too (the registry renames counters there)', async () => {
    const observer = new Observer(undefined, undefined);
    observer.single(true, 0.002);
    // prom-client's types omit the constructor's content-type argument.
    const OpenMetricsRegistry = Registry as unknown as new (contentType: string) => Registry<typeof Registry.OPENMETRICS_CONTENT_TYPE>;
    const registry = new OpenMetricsRegistry(Registry.OPENMETRICS_CONTENT_TYPE);
    registerMetrics({ metrics: () => observer.metrics.snapshot({ mapVersion: 1, pools: {} }) }, { registry });
    const text = await registry.metrics();
    expect(text).toContain('# TYPE pg_shard_router_statements counter');
    expect(text).toContain('pg_shard_router_statements_total{route="single",outcome="ok"} 1');
    expect(text).not.toContain('_total_total');
    expect(text).toContain('pg_shard_router_statement_duration_seconds_bucket{route="single",outcome="ok",le="0.0025"} 1');
    expect(text.trimEnd().endsWith('# EOF')).toBe(true);
  });
});

describe('optional peers', () => {
  it('the root entry imports neither prom-client nor @opentelemetry/api statically (tracing loads it with import())', () => {
    const src = path.resolve(import.meta.dirname, '../../src');
    const seen = new Set<string>();
    const peers: string[] = [];
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(file, 'utf8');
      for (const match of text.matchAll(/^\s*(?:import|export)(?!\s+type\b)[^'";]*?from\s*['"]([^'"]+)['"]/gm)) {
        const spec = match[1]!;
        if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts'));
        else if (spec === 'prom-client' || spec.startsWith('@opentelemetry/')) peers.push(`${path.relative(src, file)} -> ${spec}`);
      }
    };
    visit(path.join(src, 'index.ts'));
    expect(seen.size).toBeGreaterThan(30);
    expect(peers).toEqual([]);
  });
});
