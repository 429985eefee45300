import type { SagaStateCount } from '../saga/counts.js';
import { sharedRead } from './prometheus-outbox.js';

/**
 * The saga gauge for registerMetrics (`sagas: true`): sagas running, compensating and parked
 * per shard, read with `router.sagas.counts()` when the registry is scraped, one query per
 * shard per scrape, so it is opt-in. A scrape whose read fails (a shard down) leaves the gauge
 * out of that scrape rather than failing the whole scrape.
 */

/** What the gauge reads: `router.sagas`. */
export interface SagaCountsSource {
  counts(): Promise<readonly SagaStateCount[]>;
}

/** The gauge's name without the prefix. */
export const SAGA_GAUGE_NAME = 'sagas';
const HELP = 'Sagas running, compensating or parked, per shard (completed, compensated and resolved ones are history: not counted)';

/** The prom-client collector object (what its registry renders) of the saga gauge. */
export function sagaCollector(prefix: string, source: SagaCountsSource) {
  const counts = sharedRead(() => source.counts());
  const name = prefix + SAGA_GAUGE_NAME;
  const get = async () => {
    const read = await counts();
    const values = (read ?? []).map((count) => ({ labels: { shard: count.shardId, state: count.state }, value: count.count }));
    return { name, help: HELP, type: 'gauge' as const, aggregator: 'sum' as const, values };
  };
  return { name, help: HELP, type: 'gauge' as const, aggregator: 'sum' as const, get, reset() {} };
}
