import type { ResolvedConfig } from '../config.js';
import type { Observer } from '../observe/observer.js';
import { withPublish } from '../outbox/publish.js';
import type { Transaction } from '../outbox/publish.js';
import type { PublishNotifier } from '../outbox/notifier.js';
import type { ShardKey } from '../placement/hash.js';
import type { QueryEngine } from '../query/engine.js';
import { runTransaction } from '../twopc/coordinator.js';
import type { CoordinatorContext } from '../twopc/coordinator.js';
import { resolveTransactionOptions } from '../twopc/transaction-options.js';
import type { TransactionOptions } from '../twopc/transaction-options.js';
import { routedContext } from './contexts.js';
import type { Topology } from './topology.js';

/** What `router.transaction` needs from the router that owns it. */
export interface TransactionsContext {
  readonly config: ResolvedConfig;
  readonly topology: Topology;
  readonly coordinator: CoordinatorContext;
  readonly observer: Observer;
  readonly queries: QueryEngine;
  readonly notifier: PublishNotifier;
}

/**
 * `router.transaction` without an idempotency key (arguments already checked): one-phase on one
 * shard, two-phase commit over several (docs/twopc.md), re-run whole on a refreshed map when a
 * fence refused it, and the outbox consumers of the shards it published on woken after it.
 */
export async function runRoutedTransaction<T>(
  context: TransactionsContext,
  keys: readonly ShardKey[],
  work: (tx: Transaction) => Promise<T>,
  options: TransactionOptions | undefined,
): Promise<T> {
  const { config, topology, coordinator, observer, queries } = context;
  const resolved = resolveTransactionOptions(options, config.transactions);
  const probe = observer.operation('transaction');
  // Shards that got an event in the attempt that committed: their consumers are woken after it.
  const published = new Set<string>();
  // Refused by a map fence (a bucket moved): nothing committed, so the whole transaction runs
  // again on the refreshed map, callback included, like a retried serialization failure.
  const result = await probe.run(() =>
    topology.retryingStaleMap(() => {
      // Every statement of this attempt routes by the map it started with, and its connections
      // carry that version: a bucket that moves meanwhile is refused by the old owner's fence
      // (STALE_BUCKET_MAP), and the attempt is re-run on the new map. A declared key is
      // therefore never refused because the map changed under the callback.
      const { context: routed, version, owners } = routedContext(coordinator, topology, probe);
      // tx.query routes by the same map as tx.execute.
      const map = { version, owners, shardFor: routed.shardFor };
      const attempt: CoordinatorContext = {
        ...routed,
        routeQuery: (tx, sql, params, readRaw) => queries.inTransaction(tx, map, sql, params, readRaw),
      };
      const declared = keys.map((key) => attempt.shardFor(key));
      // One fixed order (by shard id) for taking connections, in every router: no two
      // transactions can each hold a connection the other waits for.
      const shardIds = [...new Set(declared)].sort();
      // The first key's shard decides a two-phase commit: idempotency records rely on it.
      if (shardIds.length > 1 && !resolved.readOnly) topology.requirePreparedTransactions(shardIds);
      published.clear();
      return runTransaction(attempt, shardIds, declared[0]!, resolved, (tx, deferred) =>
        work(withPublish(tx, deferred, config.catalogSchema, published)),
      );
    }),
  );
  if (published.size > 0) context.notifier.notify(published);
  return result;
}
