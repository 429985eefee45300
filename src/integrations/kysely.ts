import { Kysely, PostgresDialect } from 'kysely';
import type { KyselyPlugin } from 'kysely';
import type { ShardKey } from '../placement/hash.js';
import type { ShardRouter } from '../router/shard-router.js';
import type { Transaction } from '../twopc/coordinator.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';
import { kyselyInTransaction } from './kysely-transaction.js';

/** Options of {@link shardedKysely}. */
export interface ShardedKyselyOptions {
  /** Kysely plugins for every instance (e.g. CamelCasePlugin). */
  readonly plugins?: readonly KyselyPlugin[];
}

/** The callback's handle in {@link ShardedKysely.transaction}. */
export interface ShardedKyselyTransaction<DB> {
  /** A Kysely instance whose queries run inside the transaction on the shard that owns `key` (a declared key's). */
  forKey(key: ShardKey): Kysely<DB>;
  /** The router's own transaction handle (raw SQL: `execute`, `executeOn`). */
  readonly router: Transaction;
}

/** Typed Kysely instances over a sharded cluster. */
export interface ShardedKysely<DB> {
  /**
   * The Kysely instance of the shard that owns `key`, cached per shard. It routes by the map of
   * the moment it was taken: after a bucket move, a write through an older instance is refused
   * with STALE_BUCKET_MAP (after the router refreshed its map), and `forKey` gives a new one.
   * Kysely's own `transaction()` works on it (one shard).
   */
  forKey(key: ShardKey): Kysely<DB>;
  /** The Kysely instance of one shard by id, for per-shard reads and DDL (like `router.executeOn`). */
  onShard(shardId: string): Kysely<DB>;
  /**
   * `router.transaction(keys, ...)` whose callback gets a Kysely instance per participant key:
   * atomic over every shard it touches (two-phase commit when there are several), run again
   * when a bucket moved under it.
   */
  transaction<T>(
    keys: readonly ShardKey[],
    work: (tx: ShardedKyselyTransaction<DB>) => Promise<T>,
    options?: TransactionOptions,
  ): Promise<T>;
}

/**
 * Kysely over a sharded cluster: `forKey(userId)` for one shard, `transaction(keys, ...)` across
 * shards. The instances draw connections from the router's pools (`router.poolOn`), so they
 * need no `destroy()`; `router.close()` closes everything.
 *
 * @example
 * const db = shardedKysely<Database>(router);
 * const orders = await db.forKey(userId).selectFrom('orders').selectAll().where('user_id', '=', userId).execute();
 * await db.transaction([from, to], async (tx) => {
 *   await tx.forKey(from).updateTable('accounts').set((eb) => ({ balance: eb('balance', '-', 10) })).where('id', '=', from).execute();
 *   await tx.forKey(to).updateTable('accounts').set((eb) => ({ balance: eb('balance', '+', 10) })).where('id', '=', to).execute();
 * });
 */
export function shardedKysely<DB>(router: ShardRouter, options: ShardedKyselyOptions = {}): ShardedKysely<DB> {
  const plugins = options.plugins ?? [];
  const create = (pool: ReturnType<ShardRouter['poolOn']>) =>
    new Kysely<DB>({ dialect: new PostgresDialect({ pool }), plugins: [...plugins] });
  const byShard = new Map<string, { readonly version: number; readonly db: Kysely<DB> }>();
  const onShard = new Map<string, Kysely<DB>>();
  return {
    forKey(key) {
      // Owner and version in one tick: the instance's connections carry the version it was routed by.
      const version = router.bucketMap.version;
      const shardId = router.shardFor(key);
      const cached = byShard.get(shardId);
      if (cached?.version === version) return cached.db;
      const db = create(router.poolOn(shardId, { mapVersion: version }));
      byShard.set(shardId, { version, db });
      return db;
    },
    onShard(shardId) {
      let db = onShard.get(shardId);
      if (!db) {
        db = create(router.poolOn(shardId));
        onShard.set(shardId, db);
      }
      return db;
    },
    transaction(keys, work, transactionOptions) {
      return router.transaction(
        keys,
        (tx) => {
          const instances = new Map<string, Kysely<DB>>();
          return work({
            router: tx,
            forKey(key) {
              const id = `${typeof key}:${String(key)}`;
              let db = instances.get(id);
              if (!db) {
                db = kyselyInTransaction<DB>(tx, key, plugins);
                instances.set(id, db);
              }
              return db;
            },
          });
        },
        transactionOptions,
      );
    },
  };
}
