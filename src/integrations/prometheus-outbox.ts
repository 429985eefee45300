import type { OutboxStatus } from '../outbox/admin.js';

/**
 * The outbox's gauges for registerMetrics (`outbox: true`): read from `router.outbox.status()`
 * when the registry is scraped, one query per shard per scrape, so they are opt-in. A scrape
 * whose status query fails (a shard down) leaves these gauges out of that scrape rather than
 * failing the whole scrape; `shard_up` says why.
 */

/** What the gauges read: `router.outbox`. */
export interface OutboxStatusSource {
  status(): Promise<OutboxStatus>;
}

type Sample = { readonly labels: Readonly<Record<string, string>>; readonly value: number };

interface OutboxGauge {
  readonly name: string;
  readonly help: string;
  read(status: OutboxStatus): Sample[];
}

const GAUGES: readonly OutboxGauge[] = [
  {
    name: 'outbox_pending_events',
    help: 'Events of a consumer group not acknowledged yet, per shard',
    read: (status) => status.groups.map((g) => ({ labels: { shard: g.shardId, group: g.group }, value: g.pending })),
  },
  {
    name: 'outbox_lag_seconds',
    help: "Age of a consumer group's oldest unacknowledged event, per shard (0 when none)",
    read: (status) => status.groups.map((g) => ({ labels: { shard: g.shardId, group: g.group }, value: g.lagMillis / 1000 })),
  },
  {
    name: 'outbox_parked_events',
    help: 'Events a consumer group parked after its attempts ran out, per shard',
    read: (status) => status.groups.map((g) => ({ labels: { shard: g.shardId, group: g.group }, value: g.parked })),
  },
];

/** The gauges' names without the prefix, in the order docs/operations.md lists them. */
export const OUTBOX_GAUGE_NAMES: readonly string[] = GAUGES.map((gauge) => gauge.name);

/** prom-client collector objects (what its registry renders) for the outbox gauges. */
export function outboxCollectors(prefix: string, source: OutboxStatusSource) {
  const status = sharedRead(() => source.status());
  return GAUGES.map((gauge) => {
    const name = prefix + gauge.name;
    const get = async () => {
      const read = await status();
      return { name, help: gauge.help, type: 'gauge' as const, aggregator: 'sum' as const, values: read ? gauge.read(read) : [] };
    };
    return { name, help: gauge.help, type: 'gauge' as const, aggregator: 'sum' as const, get, reset() {} };
  });
}

/**
 * One read per scrape: the registry asks every collector in the same tick. A failed read (a
 * shard down) gives undefined: the gauges it feeds are left out of that scrape.
 */
export function sharedRead<T>(read: () => Promise<T>): () => Promise<T | undefined> {
  let pending: Promise<T | undefined> | undefined;
  return () => {
    if (!pending) {
      pending = read().catch(() => undefined);
      setImmediate(() => {
        pending = undefined;
      });
    }
    return pending;
  };
}
