/**
 * A fixed-bucket histogram in plain numbers: what the hot path records into (a few array
 * writes, no allocation) and what `router.metrics()` and the Prometheus integration read.
 */

/** Statement latency bounds, in seconds (Prometheus' `le`): 0.5 ms to 10 s. */
export const DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Pool acquire wait bounds, in seconds: an idle connection is handed over at once (the first bucket). */
export const WAIT_BUCKETS: readonly number[] = [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];

/** A histogram's state: cumulative counts per upper bound (the +Inf bucket is `count`), sum and count. */
export interface HistogramSnapshot {
  /** Upper bounds in seconds, ascending. */
  readonly bounds: readonly number[];
  /** Observations <= each bound (cumulative, like Prometheus' `_bucket{le}`). */
  readonly cumulative: readonly number[];
  readonly count: number;
  /** Sum of the observed values, in seconds. */
  readonly sum: number;
}

export class Histogram {
  readonly #bounds: readonly number[];
  /** Non-cumulative counts; index bounds.length holds what exceeds the last bound. */
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.#counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(seconds: number): void {
    const bounds = this.#bounds;
    let index = 0;
    while (index < bounds.length && seconds > bounds[index]!) index++;
    this.#counts[index]!++;
    this.#sum += seconds;
    this.#count++;
  }

  get count(): number {
    return this.#count;
  }

  snapshot(): HistogramSnapshot {
    const cumulative: number[] = [];
    let running = 0;
    for (let index = 0; index < this.#bounds.length; index++) {
      running += this.#counts[index]!;
      cumulative.push(running);
    }
    return { bounds: this.#bounds, cumulative, count: this.#count, sum: this.#sum };
  }
}
