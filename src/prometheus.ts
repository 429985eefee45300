/**
 * The `pg-shard-router/prometheus` entry point: the router's metrics in a prom-client registry,
 * from the optional peer dependency prom-client. Kept off the root entry so that importing
 * `pg-shard-router` never loads it.
 *
 * @example
 * import { registerMetrics } from 'pg-shard-router/prometheus';
 * registerMetrics(router, { registry });
 */
export { registerMetrics } from './integrations/prometheus.js';
export type { MetricsSource, RegisterMetricsOptions, RegisteredMetrics } from './integrations/prometheus.js';
