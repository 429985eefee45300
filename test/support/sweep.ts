/**
 * How much of a long chaos sweep one run covers. `npm test` (and CI) runs the reduced sweep: every
 * fault point and every step is still hit at least once, with fewer repetitions, rounds or keys, so
 * the whole suite stays under ten minutes on a 2-core machine. `PSR_FULL_SWEEP=1 npm test` runs the
 * full sweep (before a release, after touching 2PC, moves, locks, sagas, the outbox or idempotency).
 */
export const FULL_SWEEP = process.env.PSR_FULL_SWEEP === '1';

/** `full` in a full sweep, otherwise `reduced` (which must still cover every step once). */
export function sweep<T>(full: T, reduced: T): T {
  return FULL_SWEEP ? full : reduced;
}

/**
 * The cases of one run: all of them in a full sweep; otherwise those `keep` picks, which must
 * cover every step kind the file guards (say in the file which, and why that covers it).
 */
export function sweptCases<T>(cases: readonly T[], keep: (item: T) => boolean): readonly T[] {
  return FULL_SWEEP ? cases : cases.filter(keep);
}

/** The last case of each group (e.g. one per fault point): the reduced sweep still hits every group. */
export function lastOfEach<T>(cases: readonly T[], groupOf: (item: T) => string): (item: T) => boolean {
  const last = new Map<string, T>();
  for (const item of cases) last.set(groupOf(item), item);
  const kept = new Set(last.values());
  return (item) => kept.has(item);
}
