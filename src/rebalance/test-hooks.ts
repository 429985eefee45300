/**
 * @internal Test-only hook into the move state machine; not part of the public API.
 *
 * `step` runs at each step of a move and is awaited: a test kills the process there (SIGKILL)
 * and checks that resuming finishes or undoes the move with nothing lost.
 */
export const MOVE_STEPS = [
  /** The move row and capture triggers are committed on the source. */
  'started',
  /** The snapshot copy is written to the target (inside the target's open transaction). */
  'copied',
  /** Catch-up rounds are done; the cutover is next. */
  'caught-up',
  /** The move row is locked: writes to the moving buckets on the source wait from here. */
  'paused',
  /** The map switch is about to be prepared and committed. */
  'before-switch',
  /** The switch committed: the target owns the buckets. */
  'switched',
  /** Transactions older than the switch have ended on the source. */
  'drained',
  /** The moved rows are deleted from the source. */
  'cleaned',
] as const;

export type MoveStep = (typeof MOVE_STEPS)[number];

/** `copyBatch` runs (awaited) after each batch of the snapshot copy's COPY stream is read from the source: a test kills a backend there, mid-stream. */
export const rebalanceHooks: {
  step: ((step: MoveStep, moveId: string) => void | Promise<void>) | undefined;
  copyBatch?: ((moveId: string) => void | Promise<void>) | undefined;
} = { step: undefined };
