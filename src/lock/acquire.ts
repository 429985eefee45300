import { ShardRouterError, isStaleMap } from '../errors.js';
import { isConnectionLevel, translateError } from '../pool/pg-errors.js';
import { MAP_VERSION_SETTING } from '../pool/shard-pool.js';
import { GATE_CLASS_ID, LOCK_CLASS_ID, LOCK_TOKENS_KEY, lockTokensTable } from '../rebalance/lock-space.js';
import type { LockConnection, LockConnections } from './connections.js';
import type { LockContext } from './context.js';
import type { LockIdentity } from './lock-key.js';
import type { ResolvedLockOptions } from './options.js';
import { lockHooks } from './test-hooks.js';

/**
 * Taking a lock (docs/locks.md, "Acquire, hold, release"): on a connection of its own to the
 * owner of the key's bucket, the key's advisory lock, the bucket's gate (shared), then the next
 * fencing token, written from a connection stamped with the routing map version, so a shard that
 * lost the bucket refuses it (fence or capture trigger) and the attempt goes to the new owner.
 */

/** A lock held on a shard, before `fn` runs. */
export interface Acquired {
  readonly connection: LockConnection;
  readonly token: number;
}

/** idle_session_timeout exists from PostgreSQL 14 on. */
const IDLE_SESSION_TIMEOUT_VERSION = 140_000;

/**
 * Takes the lock, retrying on a refreshed map when the owner refused the token (the bucket
 * moved). @throws ShardRouterError LOCK_NOT_ACQUIRED, STALE_BUCKET_MAP, SHARD_UNAVAILABLE, CONNECTION_LOST
 */
export function acquire(
  context: LockContext,
  connections: LockConnections,
  identity: LockIdentity,
  options: ResolvedLockOptions,
): Promise<Acquired> {
  const deadline = Date.now() + options.waitMillis;
  let attempts = 0;
  return context.retryingStaleMap(async () => {
    // The first attempt waits exactly waitMillis (an unchanged lock_timeout costs no round trip).
    const wait = attempts++ === 0 || options.waitMillis === 0 ? options.waitMillis : Math.max(1, deadline - Date.now());
    const route = context.route(identity.bucket);
    const connection = await connections.take(route.shardId);
    try {
      return await acquireOn(context, connection, identity, options, wait, route.mapVersion);
    } catch (error) {
      if (!isConnectionLevel(error) && connection.lost === undefined) {
        // Whatever the statement left held (the key lock when the gate timed out) goes; the connection stays usable.
        await connection.connection.query('SELECT pg_advisory_unlock_all()').then(
          () => connections.give(connection),
          () => connections.discard(connection),
        );
      } else {
        await connections.discard(connection);
      }
      throw typed(connection.shardId, error, identity, options);
    }
  });
}

async function acquireOn(
  context: LockContext,
  connection: LockConnection,
  identity: LockIdentity,
  options: ResolvedLockOptions,
  wait: number,
  mapVersion: number,
): Promise<Acquired> {
  const settings: Record<string, string> = { [MAP_VERSION_SETTING]: String(mapVersion), lock_timeout: `${wait}ms` };
  if (context.serverVersion(connection.shardId) >= IDLE_SESSION_TIMEOUT_VERSION) settings.idle_session_timeout = `${options.leaseMillis}ms`;
  await connection.configure(settings);
  if (wait === 0) {
    const { rows } = await connection.connection.query<{ gate: boolean | null }>(
      'SELECT CASE WHEN pg_try_advisory_lock($1, $2) THEN pg_try_advisory_lock_shared($3, $4) END AS gate',
      [LOCK_CLASS_ID, identity.objectId, GATE_CLASS_ID, identity.bucket],
    );
    if (rows[0]?.gate !== true) throw notAcquired(identity, options);
  } else {
    // Key first, gate second: waiters hold no gate, so a move's cutover waits only for holders.
    await connection.connection.query('SELECT pg_advisory_lock($1, $2), pg_advisory_lock_shared($3, $4)', [
      LOCK_CLASS_ID,
      identity.objectId,
      GATE_CLASS_ID,
      identity.bucket,
    ]);
  }
  await lockHooks.step?.('locked', identity.key);
  const table = lockTokensTable(context.catalogSchema);
  const { rows } = await connection.connection.query<{ token: string }>(
    `INSERT INTO ${table} AS current (${LOCK_TOKENS_KEY}, token) VALUES ($1, 1)
     ON CONFLICT (${LOCK_TOKENS_KEY}) DO UPDATE SET token = current.token + 1 RETURNING token::text AS token`,
    [identity.key],
  );
  await lockHooks.step?.('token', identity.key);
  return { connection, token: Number(rows[0]!.token) };
}

function notAcquired(identity: LockIdentity, options: ResolvedLockOptions): ShardRouterError {
  const how = options.waitMillis === 0 ? 'at once (waitMillis: 0)' : `within ${options.waitMillis} ms`;
  return new ShardRouterError('LOCK_NOT_ACQUIRED', `lock "${identity.key}" is held by another holder: not acquired ${how}`);
}

function typed(shardId: string, error: unknown, identity: LockIdentity, options: ResolvedLockOptions): unknown {
  if (error instanceof ShardRouterError) return error;
  const translated = translateError(shardId, error, false);
  if (translated instanceof ShardRouterError && translated.code === 'LOCK_TIMEOUT' && !isStaleMap(translated))
    return new ShardRouterError('LOCK_NOT_ACQUIRED', notAcquired(identity, options).message, { shardId, cause: error });
  return translated;
}
