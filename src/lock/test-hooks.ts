/**
 * @internal Test-only hook into taking and releasing a lock; not part of the public API.
 *
 * `step` runs at each step and is awaited: a test kills the process there (SIGKILL) and checks
 * that the server released everything and the next holder gets a larger token.
 */
export const LOCK_STEPS = [
  /** The key's advisory lock and the bucket's gate are held; no token yet. */
  'locked',
  /** The token is committed; fn is next. */
  'token',
  /** fn settled; the release is next. */
  'releasing',
] as const;

export type LockStep = (typeof LOCK_STEPS)[number];

export const lockHooks: { step: ((step: LockStep, key: string) => void | Promise<void>) | undefined } = { step: undefined };
