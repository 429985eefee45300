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
