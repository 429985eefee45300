import promClient from 'prom-client';
import type { Registry, RegistryContentType } from 'prom-client';
import { ShardRouterError } from '../errors.js';
import type { HistogramSnapshot, RouterMetrics } from '../observe/metrics-store.js';
import { OUTBOX_GAUGE_NAMES, outboxCollectors } from './prometheus-outbox.js';
import type { OutboxStatusSource } from './prometheus-outbox.js';
import { SAGA_GAUGE_NAME, sagaCollector } from './prometheus-sagas.js';
import type { SagaCountsSource } from './prometheus-sagas.js';

/**
 * prom-client exposition of `router.metrics()`. Every metric is read from the router's own
 * snapshot when the registry is scraped, so registering costs the hot path nothing: no
 * prom-client call runs per statement. The router's histograms already hold bucket counts,
 * which prom-client's Histogram cannot be given, so each metric is a small collector object
 * that the registry renders like its own (name, help, type, get()).
 */

/** What registerMetrics reads: a ShardRouter (or anything with the same metrics()). */
export interface MetricsSource {
  metrics(): RouterMetrics;
  /** `router.outbox`, read when `outbox: true`. */
  readonly outbox?: OutboxStatusSource;
  /** `router.sagas`, read when `sagas: true`. */
  readonly sagas?: SagaCountsSource;
}

export interface RegisterMetricsOptions {
  /** Default: prom-client's global registry. */
  readonly registry?: Registry<RegistryContentType>;
  /** Prepended to every name (default `pg_shard_router_`). */
  readonly prefix?: string;
  /**
   * Also the outbox's gauges per shard and consumer group: pending events, lag, parked events.
   * They are read with `router.outbox.status()` at every scrape (a query per shard), hence
   * opt-in. Default false.
   */
  readonly outbox?: boolean;
  /**
   * Also the sagas running, compensating and parked per shard, read with
   * `router.sagas.counts()` at every scrape (a query per shard), hence opt-in. Default false.
   */
  readonly sagas?: boolean;
}

/** What registerMetrics registered, and how to take it back out (e.g. before closing the router). */
export interface RegisteredMetrics {
  readonly names: readonly string[];
  unregister(): void;
}

type MetricType = 'counter' | 'gauge' | 'histogram';
type Labels = Readonly<Record<string, string | number>>;
interface Sample {
  readonly labels: Labels;
  readonly value: number;
  readonly metricName?: string;
}

/** One metric family: its name (without prefix), help, type and how to read it from a snapshot. */
interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  read(snapshot: RouterMetrics): Sample[];
}

const PREFIX = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/**
 * Registers the router's metrics with a prom-client registry (Prometheus naming: base units,
 * `_total` counters, shard id as the `shard` label, no key or bucket labels). One router per
 * registry and prefix. docs/operations.md lists them.
 *
 * @example
 * import { Registry } from 'prom-client';
 * import { registerMetrics } from 'pg-shard-router/prometheus';
 * const registry = new Registry();
 * registerMetrics(router, { registry });
 * app.get('/metrics', async (_req, res) => res.type(registry.contentType).send(await registry.metrics()));
 * @throws ShardRouterError INVALID_ARGUMENT (a prefix Prometheus does not accept; a name already registered)
 */
export function registerMetrics(router: MetricsSource, options: RegisterMetricsOptions = {}): RegisteredMetrics {
  const registry = options.registry ?? promClient.register;
  const prefix = options.prefix ?? 'pg_shard_router_';
  if (typeof prefix !== 'string' || (prefix !== '' && !PREFIX.test(prefix)))
    throw new ShardRouterError('INVALID_ARGUMENT', 'prefix must match [a-zA-Z_:][a-zA-Z0-9_:]* (or be empty)');
  if (typeof router?.metrics !== 'function') throw new ShardRouterError('INVALID_ARGUMENT', 'router must have a metrics() method');
  if (options.outbox === true && typeof router.outbox?.status !== 'function')
    throw new ShardRouterError('INVALID_ARGUMENT', 'outbox: true needs a router (its outbox.status())');
  if (options.sagas === true && typeof router.sagas?.counts !== 'function')
    throw new ShardRouterError('INVALID_ARGUMENT', 'sagas: true needs a router (its sagas.counts())');
  const snapshot = sharedSnapshot(router);
  const families = [...FAMILIES, ...extraFamilies(snapshot())];
  const outbox = options.outbox === true ? outboxCollectors(prefix, router.outbox!) : [];
  const sagas = options.sagas === true ? [sagaCollector(prefix, router.sagas!)] : [];
  const names = [
    ...families.map((family) => prefix + family.name),
    ...(outbox.length > 0 ? OUTBOX_GAUGE_NAMES.map((n) => prefix + n) : []),
    ...(sagas.length > 0 ? [prefix + SAGA_GAUGE_NAME] : []),
  ];
  const taken = names.find((name) => registry.getSingleMetric(name) !== undefined);
  if (taken)
    throw new ShardRouterError('INVALID_ARGUMENT', `a metric named ${taken} is already registered (another router? use another prefix)`);
  for (const family of families) registry.registerMetric(collector(prefix + family.name, family, snapshot) as never);
  for (const gauge of [...outbox, ...sagas]) registry.registerMetric(gauge as never);
  return {
    names,
    unregister: () => {
      for (const name of names) registry.removeSingleMetric(name);
    },
  };
}

/** One snapshot per scrape: the registry asks every collector in the same tick. */
function sharedSnapshot(router: MetricsSource): () => RouterMetrics {
  let cached: RouterMetrics | undefined;
  return () => {
    if (!cached) {
      cached = router.metrics();
      setImmediate(() => {
        cached = undefined;
      });
    }
    return cached;
  };
}

/**
 * The object prom-client's registry renders: what its own metric classes offer to it. `get`
 * reads `name` from the object because the registry renames counters for OpenMetrics (it
 * drops `_total` and appends it to each sample), as it does its own Counter's.
 */
function collector(name: string, family: Family, snapshot: () => RouterMetrics) {
  const metric = {
    name,
    help: family.help,
    type: family.type,
    aggregator: 'sum' as const,
    get: async () => ({
      name: metric.name,
      help: family.help,
      type: family.type,
      aggregator: 'sum' as const,
      values: family.read(snapshot()).map((sample) => (sample.metricName ? { ...sample, metricName: name + sample.metricName } : sample)),
    }),
    reset() {},
  };
  return metric;
}

function counter(name: string, help: string, read: (m: RouterMetrics) => Sample[]): Family {
  return { name, help, type: 'counter', read };
}

function gauge(name: string, help: string, read: (m: RouterMetrics) => Sample[]): Family {
  return { name, help, type: 'gauge', read };
}

function histogram(name: string, help: string, read: (m: RouterMetrics) => { labels: Labels; histogram: HistogramSnapshot }[]): Family {
  return { name, help, type: 'histogram', read: (m) => read(m).flatMap(({ labels, histogram: h }) => histogramSamples(labels, h)) };
}

/** `_bucket` per bound and +Inf, `_sum`, `_count`: the text format of a histogram. */
function histogramSamples(labels: Labels, h: HistogramSnapshot): Sample[] {
  const buckets = h.bounds.map((le, index) => ({ labels: { ...labels, le }, value: h.cumulative[index]!, metricName: '_bucket' }));
  return [
    ...buckets,
    { labels: { ...labels, le: '+Inf' }, value: h.count, metricName: '_bucket' },
    { labels, value: h.sum, metricName: '_sum' },
    { labels, value: h.count, metricName: '_count' },
  ];
}

function perShard(read: (pool: RouterMetrics['pools'][string]) => number): (m: RouterMetrics) => Sample[] {
  return (m) => Object.entries(m.pools).map(([shard, pool]) => ({ labels: { shard }, value: read(pool) }));
}

const one = (value: number): Sample[] => [{ labels: {}, value }];

/**
 * The metrics, in the order docs/operations.md lists them. A new feature (the outbox, sagas)
 * adds its numbers to RouterMetrics and its family here, or contributes `extra` gauges, which
 * are rendered without changes here.
 */
const FAMILIES: readonly Family[] = [
  counter('statements_total', 'Statements, transactions and broadcasts by route and outcome', (m) =>
    m.statements.map((s) => ({ labels: { route: s.route, outcome: s.outcome }, value: s.count })),
  ),
  histogram('statement_duration_seconds', 'Duration by route and outcome (a transaction: callback and commit)', (m) =>
    m.statements.map((s) => ({ labels: { route: s.route, outcome: s.outcome }, histogram: s.durationSeconds })),
  ),
  counter('errors_total', 'Failed calls by route and error code', (m) =>
    m.errors.map((e) => ({ labels: { route: e.route, code: e.code }, value: e.count })),
  ),
  counter('stale_map_retries_total', 'Statements and transactions sent again after a shard refused a stale bucket map', (m) =>
    one(m.staleMapRetries),
  ),
  gauge('map_version', 'The bucket map version the router routes by', (m) => one(m.mapVersion)),
  gauge(
    'shard_up',
    '1 while the shard accepts connections, 0 after an attempt failed with none open',
    perShard((p) => (p.up ? 1 : 0)),
  ),
  gauge(
    'pool_connections',
    'Open connections (idle or borrowed)',
    perShard((p) => p.size),
  ),
  gauge(
    'pool_idle_connections',
    'Idle connections',
    perShard((p) => p.available),
  ),
  gauge(
    'pool_borrowed_connections',
    'Borrowed connections',
    perShard((p) => p.borrowed),
  ),
  gauge(
    'pool_pending_acquires',
    'Callers waiting for a connection',
    perShard((p) => p.pending),
  ),
  gauge(
    'pool_max_connections',
    'Pool size limit',
    perShard((p) => p.max),
  ),
  histogram('pool_acquire_wait_seconds', 'Time waited for a pooled connection', (m) =>
    Object.entries(m.pools).map(([shard, pool]) => ({ labels: { shard }, histogram: pool.acquireWaitSeconds })),
  ),
  counter('twopc_left_prepared_total', 'Two-phase commits decided but left prepared on a shard for recovery', (m) =>
    one(m.twoPhase.leftPrepared),
  ),
  gauge('twopc_prepared_transactions', "This cluster's prepared transactions on the shard after the last recovery pass", (m) =>
    Object.entries(m.twoPhase.preparedByShard).map(([shard, value]) => ({ labels: { shard }, value })),
  ),
  gauge('twopc_in_doubt_transactions', 'Prepared transactions the last recovery pass could not settle', (m) => one(m.twoPhase.inDoubt)),
  counter('twopc_recovered_total', 'Prepared transactions recovery finished, by outcome', (m) => [
    { labels: { outcome: 'commit' }, value: m.twoPhase.recoveredCommitted },
    { labels: { outcome: 'rollback' }, value: m.twoPhase.recoveredRolledBack },
  ]),
  counter('recovery_runs_total', 'Recovery passes, by outcome', (m) => [
    { labels: { outcome: 'ok' }, value: m.twoPhase.recoveryPasses },
    { labels: { outcome: 'error' }, value: m.twoPhase.recoveryFailures },
  ]),
  counter('bucket_moves_total', 'Bucket moves by outcome', (m) => [
    { labels: { outcome: 'ok' }, value: m.moves.completed },
    { labels: { outcome: 'error' }, value: m.moves.failed },
  ]),
  counter('buckets_moved_total', 'Buckets moved by completed moves', (m) => one(m.moves.bucketsMoved)),
  counter('move_copied_rows_total', 'Rows copied by completed moves', (m) => one(m.moves.rowsCopied)),
  counter('move_copied_bytes_total', 'Bytes copied by completed moves', (m) => one(m.moves.bytesCopied)),
];

/** The gauges other parts contributed (RouterMetrics.extra), as they were at registration. */
function extraFamilies(snapshot: RouterMetrics): Family[] {
  return snapshot.extra.map(({ name, help }) =>
    gauge(name, help, (m) => (m.extra.find((extra) => extra.name === name)?.values ?? []).map(({ labels, value }) => ({ labels, value }))),
  );
}
