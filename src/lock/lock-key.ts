import { ShardRouterError } from '../errors.js';
import { keyText, signedHashKey } from '../placement/hash.js';

/** Longest lock key, in UTF-16 code units (the token table's primary key must stay well inside a btree entry). */
export const MAX_LOCK_KEY_LENGTH = 512;

/** A lock key as the server sees it: its text (the token row's key), its advisory-lock objid and its bucket. */
export interface LockIdentity {
  readonly key: string;
  /** MurmurHash3 of the key as a signed int32: the objid of `pg_advisory_lock(LOCK_CLASS_ID, objid)`. */
  readonly objectId: number;
  readonly bucket: number;
}

/**
 * Validates a lock key (a shard key: non-empty string, safe integer or bigint, at most
 * MAX_LOCK_KEY_LENGTH characters) and derives its identity. `bucketOf` is the router's.
 * @throws ShardRouterError INVALID_KEY
 */
export function lockIdentity(lockKey: unknown, bucketOf: (key: string) => number): LockIdentity {
  const key = keyText(lockKey);
  if (key.length > MAX_LOCK_KEY_LENGTH)
    throw new ShardRouterError('INVALID_KEY', `a lock key has at most ${MAX_LOCK_KEY_LENGTH} characters, this one ${key.length}`);
  return { key, objectId: signedHashKey(key), bucket: bucketOf(key) };
}
