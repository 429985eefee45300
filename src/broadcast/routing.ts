import { ShardRouterError } from '../errors.js';
import type { SelectPlan } from './plan/plan.js';

/** The map a broadcast routes by, and the shards it reads (taken together, in one tick). */
export interface BroadcastRouting {
  readonly mapVersion: number;
  /** The cluster's members in that map, in config order. */
  readonly shardIds: readonly string[];
  /** The owner of each bucket in that map. */
  readonly owners: readonly string[];
}

/** The shard query's parameters: the caller's, then (for a guarded plan) the map version it routes by. */
export function guardedParams(plan: SelectPlan, params: readonly unknown[], routing: BroadcastRouting): readonly unknown[] {
  requireCoverage(routing);
  if (plan.mapVersionParam === undefined) return params;
  if (params.length !== plan.mapVersionParam - 1) {
    throw new ShardRouterError(
      'INVALID_ARGUMENT',
      `the statement's parameters go up to $${plan.mapVersionParam - 1}, but ${params.length} value(s) were given`,
    );
  }
  return [...params, routing.mapVersion];
}

const covered = new WeakMap<readonly string[], boolean>();

/**
 * The shards a broadcast reads must together own every bucket of the map it routes by, or some
 * rows would be missing from the answer: then it fails (retryable) rather than answer wrong.
 */
export function requireCoverage(routing: BroadcastRouting): void {
  let ok = covered.get(routing.owners);
  if (ok === undefined) {
    const members = new Set(routing.shardIds);
    ok = routing.owners.every((owner) => members.has(owner));
    covered.set(routing.owners, ok);
  }
  if (!ok) {
    throw new ShardRouterError(
      'STALE_BUCKET_MAP',
      `bucket map version ${routing.mapVersion} gives buckets to shards outside ${routing.shardIds.join(', ')}: a broadcast would miss their rows`,
    );
  }
}
