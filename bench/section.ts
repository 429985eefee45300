import type { ShardRouter, TracerProviderLike } from '../src/index.js';

/**
 * A benchmark section: one named measurement with its baseline, its correctness guard and its
 * targets. `npm run bench` runs the registered sections in order (`--only` picks some), prints
 * each one's `format`, then one summary table built from every section's `figures` and `targets`,
 * and writes the reports as JSON, from which `npm run bench:readme` renders the README.
 */
export interface Section<D = unknown> {
  readonly name: string;
  /** One line for the summary and the README. */
  readonly title: string;
  /** Set while the section is not built yet: it is listed with this reason and never run. */
  readonly notBuilt?: string;
  run(ctx: SectionContext): Promise<SectionOutcome<D>>;
  /** The section's detailed block for the console (tables, per-variant numbers). */
  format(outcome: SectionOutcome<D>): string;
}

/** What a section is given. Routers and the data schema live only as long as the section. */
export interface SectionContext {
  /** `--quick`: the same measurements at smaller sizes. */
  readonly quick: boolean;
  /** Every shard the run has (4 local ones unless PG_SHARD_URLS says otherwise). */
  readonly shards: readonly ShardSpec[];
  /** This section's own schema, created on every shard before `run` and dropped after it. */
  readonly schema: string;
  /**
   * A router over the first `count` shards (its own cluster and catalog per count), closed when
   * the section ends. Background recovery is off, so it adds no noise and any prepared
   * transaction left behind is the benchmark's to find.
   */
  router(count: number, options?: { readonly poolMax?: number; readonly tracerProvider?: TracerProviderLike }): Promise<ShardRouter>;
  /** The catalog schema of `router(count)`'s cluster, for a child process that connects its own router to it. */
  catalogSchema(count: number): string;
  /** One statement on shard `index` over an admin connection (setup and guard queries, not timed). */
  admin<R extends Record<string, unknown> = Record<string, unknown>>(index: number, sql: string, params?: readonly unknown[]): Promise<R[]>;
  /** A progress line (indented under the section's header). */
  log(line: string): void;
}

export interface ShardSpec {
  readonly id: string;
  readonly connectionString: string;
}

export const UNITS = ['keys/s', 'queries/s', 'transfers/s', 'rows/s', 'ms', 'µs', 'MB', 'MB/s', 'x'] as const;
export type Unit = (typeof UNITS)[number];

/** One measured figure, with the baseline it was measured against in the same interleaved rounds. */
export interface Figure {
  readonly label: string;
  readonly value: number;
  readonly unit: Unit;
  readonly baseline?: { readonly label: string; readonly value: number };
  /**
   * value / baseline: the median of the per-round ratios where rounds were paired (each pair saw
   * the same machine noise), so not always exactly value / baseline.value.
   */
  readonly ratio?: number;
  readonly note?: string;
  readonly target?: TargetCheck;
}

/** A target from the issue, on a figure's value or on its ratio. Informational: a missed target never fails the run. */
export interface TargetCheck {
  readonly on: 'value' | 'ratio';
  readonly comparison: '>=' | '<=';
  readonly threshold: number;
  readonly actual: number;
  readonly unit: Unit;
  /** How the threshold was derived, when it is not a constant ("1.2 x slowest shard + 2 ms"). */
  readonly thresholdText?: string;
  readonly met: boolean;
}

/** One correctness check: a fast wrong answer must not look like a win. */
export interface GuardCheck {
  readonly label: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface SectionOutcome<D = unknown> {
  /** What exactly was measured: shards, concurrency, pool sizes, rounds, statements. */
  readonly setup: string;
  readonly figures: readonly Figure[];
  readonly guard: readonly GuardCheck[];
  /** Section-specific numbers (per-round series and the like), kept in the JSON. */
  readonly details: D;
}

/** A section's entry in the results, discriminated by `status`. */
export type SectionReport =
  | ({ readonly status: 'ok' | 'guard-failed'; readonly name: string; readonly title: string; readonly seconds: number } & SectionOutcome)
  | { readonly status: 'crashed'; readonly name: string; readonly title: string; readonly seconds: number; readonly error: string }
  | { readonly status: 'not-built'; readonly name: string; readonly title: string; readonly reason: string };

/** Target: the figure's value (`on: 'value'`, in its unit) or its ratio (`on: 'ratio'`) is at least `threshold`. */
export function atLeast(on: TargetCheck['on'], actual: number, threshold: number, unit: Unit, thresholdText?: string): TargetCheck {
  return {
    on,
    comparison: '>=',
    threshold,
    actual,
    unit,
    ...(thresholdText === undefined ? {} : { thresholdText }),
    met: actual >= threshold,
  };
}

/** Target: at most `threshold`. */
export function atMost(on: TargetCheck['on'], actual: number, threshold: number, unit: Unit, thresholdText?: string): TargetCheck {
  return {
    on,
    comparison: '<=',
    threshold,
    actual,
    unit,
    ...(thresholdText === undefined ? {} : { thresholdText }),
    met: actual <= threshold,
  };
}

export function check(label: string, ok: boolean, detail: string): GuardCheck {
  return { label, ok, detail };
}

/** Full-run or quick-run value. */
export function size<T>(ctx: Pick<SectionContext, 'quick'>, full: T, quick: T): T {
  return ctx.quick ? quick : full;
}

/**
 * Thrown by a section's `run` when something it measures does not exist yet (an API another
 * change is still building): the run lists the section as not built instead of crashed.
 */
export class NotBuiltError extends Error {
  override readonly name = 'NotBuiltError';
}

/** A section that ran to the end (whatever its guard said). */
export type MeasuredReport = Extract<SectionReport, { readonly status: 'ok' | 'guard-failed' }>;

export function isMeasured(report: SectionReport): report is MeasuredReport {
  return report.status === 'ok' || report.status === 'guard-failed';
}
