import { DURATION_BUCKETS, Histogram, WAIT_BUCKETS } from './histogram.js';
import type { HistogramSnapshot } from './histogram.js';

export type { HistogramSnapshot } from './histogram.js';

/**
 * What a router counts, always (plain numbers, no dependency): the single source of
 * `router.metrics()` and of the Prometheus integration, which reads it at scrape time, so the
 * hot path never touches prom-client.
 */

/** How a statement was routed: one shard, every shard, or a transaction (one-phase or two-phase commit). */
export const ROUTES = ['single', 'broadcast', 'transaction_1pc', 'transaction_2pc'] as const;
export type Route = (typeof ROUTES)[number];

export const OUTCOMES = ['ok', 'error'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** One route and outcome: how many, and how long they took (seconds). */
export interface StatementMetrics {
  readonly route: Route;
  readonly outcome: Outcome;
  readonly count: number;
  readonly durationSeconds: HistogramSnapshot;
}

/** Failed calls by route and ShardRouterError code (`OTHER` for anything else). */
export interface ErrorMetrics {
  readonly route: Route;
  readonly code: string;
  readonly count: number;
}

/** One shard's pool counters (as router.poolStats() gives them). */
export interface PoolCounters {
  readonly size: number;
  readonly available: number;
  readonly borrowed: number;
  readonly pending: number;
  readonly min: number;
  readonly max: number;
}

export interface PoolMetrics extends PoolCounters {
  /** False after a connection attempt failed with no live connection left; true again once one opens. */
  readonly up: boolean;
  /** Time callers waited for a connection (0 when an idle one was at hand). */
  readonly acquireWaitSeconds: HistogramSnapshot;
}

export interface TwoPhaseMetrics {
  /** Transactions whose coordinator left them prepared somewhere after deciding, for recovery to finish. */
  readonly leftPrepared: number;
  /** This cluster's prepared transactions still on each shard after the last recovery pass. */
  readonly preparedByShard: Readonly<Record<string, number>>;
  /** Prepared transactions the last recovery pass could not settle. */
  readonly inDoubt: number;
  /** Prepared transactions recovery committed / rolled back, since the router started. */
  readonly recoveredCommitted: number;
  readonly recoveredRolledBack: number;
  readonly recoveryPasses: number;
  readonly recoveryFailures: number;
}

export interface MoveMetrics {
  readonly completed: number;
  readonly failed: number;
  readonly bucketsMoved: number;
  /** Rows and bytes copied by completed moves (a failed move's copy is rolled back, so it is not counted). */
  readonly rowsCopied: number;
  readonly bytesCopied: number;
}

/** A gauge another part of the router contributes (the extension point for the outbox and sagas). */
export interface ExtraGauge {
  /** Without the prefix, in base units, e.g. `outbox_lag_seconds`. */
  readonly name: string;
  readonly help: string;
  readonly values: readonly { readonly labels: Readonly<Record<string, string>>; readonly value: number }[];
}

/** `router.metrics()`: a plain snapshot, for feeding any metrics system. */
export interface RouterMetrics {
  readonly mapVersion: number;
  readonly statements: readonly StatementMetrics[];
  readonly errors: readonly ErrorMetrics[];
  /** Times a statement or transaction was sent again after a shard's fence refused a stale map. */
  readonly staleMapRetries: number;
  readonly pools: Readonly<Record<string, PoolMetrics>>;
  readonly twoPhase: TwoPhaseMetrics;
  readonly moves: MoveMetrics;
  readonly extra: readonly ExtraGauge[];
}

/** What the router reads live when a snapshot is taken. */
export interface LiveState {
  readonly mapVersion: number;
  readonly pools: Readonly<Record<string, PoolCounters>>;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export class MetricsStore {
  /** By route index, then outcome index: 0 ok, 1 error. */
  readonly #durations = ROUTES.map(() => [new Histogram(DURATION_BUCKETS), new Histogram(DURATION_BUCKETS)] as const);
  readonly #errors = new Map<string, number>();
  readonly #waits = new Map<string, Histogram>();
  readonly #down = new Set<string>();
  readonly #extra = new Map<string, () => ExtraGauge>();
  staleMapRetries = 0;
  readonly twoPhase: Mutable<Omit<TwoPhaseMetrics, 'preparedByShard'>> & { preparedByShard: Record<string, number> } = {
    leftPrepared: 0,
    preparedByShard: {},
    inDoubt: 0,
    recoveredCommitted: 0,
    recoveredRolledBack: 0,
    recoveryPasses: 0,
    recoveryFailures: 0,
  };
  readonly moves: Mutable<MoveMetrics> = { completed: 0, failed: 0, bucketsMoved: 0, rowsCopied: 0, bytesCopied: 0 };

  /** The hot path: one histogram write. `route` is an index into ROUTES. */
  statement(route: number, ok: boolean, seconds: number): void {
    this.#durations[route]![ok ? 0 : 1].observe(seconds);
  }

  error(route: number, code: string): void {
    const key = `${route}\0${code}`;
    this.#errors.set(key, (this.#errors.get(key) ?? 0) + 1);
  }

  /** The acquire-wait histogram of a shard (created on first use). */
  waits(shardId: string): Histogram {
    let histogram = this.#waits.get(shardId);
    if (!histogram) {
      histogram = new Histogram(WAIT_BUCKETS);
      this.#waits.set(shardId, histogram);
    }
    return histogram;
  }

  /** Records a shard going down or coming back; true when that changed its state. */
  setUp(shardId: string, up: boolean): boolean {
    if (up === !this.#down.has(shardId)) return false;
    if (up) this.#down.delete(shardId);
    else this.#down.add(shardId);
    return true;
  }

  /** Adds a gauge read at every snapshot (replaces one of the same name). */
  addGauge(name: string, read: () => ExtraGauge): void {
    this.#extra.set(name, read);
  }

  snapshot(live: LiveState): RouterMetrics {
    const statements: StatementMetrics[] = [];
    ROUTES.forEach((route, index) => {
      OUTCOMES.forEach((outcome, outcomeIndex) => {
        const histogram = this.#durations[index]![outcomeIndex]!;
        statements.push({ route, outcome, count: histogram.count, durationSeconds: histogram.snapshot() });
      });
    });
    const errors = [...this.#errors].map(([key, count]) => {
      const [route, code] = key.split('\0');
      return { route: ROUTES[Number(route)]!, code: code!, count };
    });
    const pools: Record<string, PoolMetrics> = {};
    for (const [shardId, counters] of Object.entries(live.pools)) {
      pools[shardId] = { ...counters, up: !this.#down.has(shardId), acquireWaitSeconds: this.waits(shardId).snapshot() };
    }
    return {
      mapVersion: live.mapVersion,
      statements,
      errors,
      staleMapRetries: this.staleMapRetries,
      pools,
      twoPhase: { ...this.twoPhase, preparedByShard: { ...this.twoPhase.preparedByShard } },
      moves: { ...this.moves },
      extra: [...this.#extra.values()].map((read) => read()),
    };
  }
}
