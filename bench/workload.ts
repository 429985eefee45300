import { nowNs, roundOrder, secondsSince } from './stats.js';

/** One closed-loop run: `ops` operations kept `concurrency` in flight. */
export interface ClosedLoopResult {
  readonly ops: number;
  readonly opsPerSecond: number;
  /** This process's CPU time (user + system) per operation, µs: far less noisy than throughput. */
  readonly cpuMicrosPerOp: number;
  /** Operations whose answer was wrong (the guard). */
  readonly wrong: number;
  /** Per operation, in ms, when asked for. */
  readonly latenciesMillis: readonly number[];
}

/**
 * Runs `op(0) ... op(ops - 1)` with `concurrency` async workers pulling the next index from a
 * shared cursor, the way a server's request handlers share a pool. `op` resolves to whether its
 * answer was right; every answer is checked, which also keeps the results alive.
 */
export async function closedLoop(
  ops: number,
  concurrency: number,
  op: (index: number) => Promise<boolean>,
  options: { readonly latencies?: boolean } = {},
): Promise<ClosedLoopResult> {
  const latencies: number[] = options.latencies ? new Array<number>(ops) : [];
  let cursor = 0;
  let wrong = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const index = cursor++;
      if (index >= ops) return;
      if (options.latencies) {
        const start = nowNs();
        if (!(await op(index))) wrong++;
        latencies[index] = secondsSince(start) * 1e3;
      } else if (!(await op(index))) {
        wrong++;
      }
    }
  };
  const cpuStart = process.cpuUsage();
  const start = nowNs();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = secondsSince(start);
  const cpu = process.cpuUsage(cpuStart);
  return { ops, opsPerSecond: ops / seconds, cpuMicrosPerOp: (cpu.user + cpu.system) / ops, wrong, latenciesMillis: latencies };
}

/**
 * Warm-up rounds, then `rounds` measured rounds; each round runs every variant once, in an order
 * rotated every round (A,B,C / B,C,A / ...) so no variant always runs first or right after another,
 * and each round's results are paired: they saw roughly the same machine noise.
 */
export async function interleavedRounds<V extends string, R>(
  variants: readonly V[],
  options: { readonly rounds: number; readonly warmupRounds: number },
  runOne: (variant: V) => Promise<R>,
  onRound?: (round: number, results: Readonly<Record<V, R>>) => void,
): Promise<Record<V, R[]>> {
  for (let r = 0; r < options.warmupRounds; r++) {
    for (const index of roundOrder(variants.length, r)) await runOne(variants[index]!);
  }
  const all = Object.fromEntries(variants.map((v) => [v, [] as R[]])) as Record<V, R[]>;
  for (let r = 0; r < options.rounds; r++) {
    const thisRound = {} as Record<V, R>;
    for (const index of roundOrder(variants.length, r)) {
      const variant = variants[index]!;
      thisRound[variant] = await runOne(variant);
    }
    for (const variant of variants) all[variant].push(thisRound[variant]);
    onRound?.(r + 1, thisRound);
  }
  return all;
}

/** The sizes of a comparison in interleaved rounds: `concurrency` callers, `queriesPerRound` operations per variant and round. */
export interface RoundsPlan {
  readonly concurrency: number;
  readonly rounds: number;
  readonly warmupRounds: number;
  readonly queriesPerRound: number;
}
