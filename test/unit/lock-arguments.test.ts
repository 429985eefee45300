import { describe, expect, it } from 'vitest';
import { ShardRouterError, hashKey } from '../../src/index.js';
import { MAX_LOCK_KEY_LENGTH, lockIdentity } from '../../src/lock/lock-key.js';
import { DEFAULT_LEASE_MILLIS, DEFAULT_WAIT_MILLIS, resolveLockOptions } from '../../src/lock/options.js';
import { GATE_CLASS_ID, LOCK_CLASS_ID } from '../../src/rebalance/lock-space.js';

/** withLock's argument checks and lock ids (pure: no server). */

const bucketOf = (key: string) => hashKey(key) % 1024;

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    return error instanceof ShardRouterError ? error.code : `not typed: ${String(error)}`;
  }
  return undefined;
}

describe('lock ids', () => {
  it('are the key text, its MurmurHash3 as a signed int32 objid, and the router bucket', () => {
    const identity = lockIdentity('tenant-7', bucketOf);
    expect(identity).toEqual({ key: 'tenant-7', objectId: hashKey('tenant-7') | 0, bucket: hashKey('tenant-7') % 1024 });
    expect(identity.objectId).toBeGreaterThanOrEqual(-(2 ** 31));
    expect(identity.objectId).toBeLessThan(2 ** 31);
    // 42, 42n and '42' are one key, as for routing.
    expect(lockIdentity(42, bucketOf)).toEqual(lockIdentity('42', bucketOf));
    expect(lockIdentity(42n, bucketOf)).toEqual(lockIdentity('42', bucketOf));
  });

  it('live in two classids of our own (int4, distinct from the library’s other advisory locks)', () => {
    const others = [0x50534852, 0x5053524d, 0x50535242];
    for (const id of [LOCK_CLASS_ID, GATE_CLASS_ID]) {
      expect(Number.isInteger(id) && id > 0 && id < 2 ** 31).toBe(true);
      expect(others).not.toContain(id);
    }
    expect(LOCK_CLASS_ID).not.toBe(GATE_CLASS_ID);
  });

  it('refuse bad keys with INVALID_KEY', () => {
    for (const key of ['', null, undefined, 1.5, Number.NaN, 2 ** 60, {}, [], true, 'x'.repeat(MAX_LOCK_KEY_LENGTH + 1)]) {
      expect(
        codeOf(() => lockIdentity(key, bucketOf)),
        String(key).slice(0, 12),
      ).toBe('INVALID_KEY');
    }
    expect(codeOf(() => lockIdentity('x'.repeat(MAX_LOCK_KEY_LENGTH), bucketOf))).toBeUndefined();
  });
});

describe('withLock options', () => {
  it('default and accept integers in range', () => {
    expect(resolveLockOptions(undefined)).toEqual({ waitMillis: DEFAULT_WAIT_MILLIS, leaseMillis: DEFAULT_LEASE_MILLIS });
    expect(resolveLockOptions({})).toEqual({ waitMillis: DEFAULT_WAIT_MILLIS, leaseMillis: DEFAULT_LEASE_MILLIS });
    expect(resolveLockOptions({ waitMillis: 0, leaseMillis: 300 })).toEqual({ waitMillis: 0, leaseMillis: 300 });
  });

  it('refuse anything else with INVALID_ARGUMENT', () => {
    const bad: unknown[] = [
      null,
      'fast',
      [],
      { waitMillis: -1 },
      { waitMillis: 0.5 },
      { waitMillis: Number.POSITIVE_INFINITY },
      { waitMillis: 2 ** 31 },
      { waitMillis: '10' },
      { leaseMillis: 299 },
      { leaseMillis: null },
      { wait: 10 },
    ];
    for (const options of bad)
      expect(
        codeOf(() => resolveLockOptions(options)),
        JSON.stringify(options),
      ).toBe('INVALID_ARGUMENT');
  });
});
