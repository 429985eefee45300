import { ShardRouterError } from '../errors.js';
import type { LockOptions } from './types.js';

export const DEFAULT_WAIT_MILLIS = 10_000;
export const DEFAULT_LEASE_MILLIS = 30_000;
/** Below this the probes (every lease / 3) would be most of the lock's traffic. */
export const MIN_LEASE_MILLIS = 300;
/** PostgreSQL's timeouts are int milliseconds. */
const MAX_MILLIS = 2_147_483_647;

export type ResolvedLockOptions = Required<LockOptions>;

/**
 * withLock's options with defaults, or INVALID_ARGUMENT naming the bad field. Runs before any I/O.
 * @throws ShardRouterError INVALID_ARGUMENT
 */
export function resolveLockOptions(options: unknown): ResolvedLockOptions {
  if (options === undefined) return { waitMillis: DEFAULT_WAIT_MILLIS, leaseMillis: DEFAULT_LEASE_MILLIS };
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new ShardRouterError('INVALID_ARGUMENT', 'withLock options must be an object { waitMillis, leaseMillis }');
  const { waitMillis, leaseMillis, ...rest } = options as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new ShardRouterError('INVALID_ARGUMENT', `unknown withLock option(s): ${unknown.join(', ')}`);
  return {
    waitMillis: millis('waitMillis', waitMillis, 0, DEFAULT_WAIT_MILLIS),
    leaseMillis: millis('leaseMillis', leaseMillis, MIN_LEASE_MILLIS, DEFAULT_LEASE_MILLIS),
  };
}

function millis(name: string, value: unknown, min: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_MILLIS)
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `withLock option ${name} must be an integer from ${min} to ${MAX_MILLIS}, got ${String(value)}`,
    );
  return value;
}
