import { ShardRouterError } from '../errors.js';
import type { SelectPlan } from './plan/plan.js';

/** The map a broadcast routes by, and the shards it reads (taken together, in one tick). */
export interface BroadcastRouting {
  readonly mapVersion: number;
  /** The cluster's members in that map, in config order. */
  readonly shardIds: readonly string[];
  /** The owner of each bucket in that map. */
  readonly owners: readonly string[];
  /**
   * Set when the read needs the rows of these buckets only (router.query's pinned keys):
   * `shardIds` are then their owners alone, and coverage asks only that they own these buckets.
   */
  readonly buckets?: readonly number[];
}

/**
 * The routing of a read that needs only the rows of `buckets`: the members that own them in
 * this map version. Each attempt narrows its own map, so a retry after a move reads the new owners.
 */
export function narrowedTo(routing: BroadcastRouting, buckets: readonly number[] | undefined): BroadcastRouting {
  if (buckets === undefined) return routing;
  const owning = new Set(buckets.map((bucket) => routing.owners[bucket]));
  const shardIds = routing.shardIds.filter((shardId) => owning.has(shardId));
  // No key at all (e.g. an empty IN list): any one member answers, as the statement matches no row.
  return { ...routing, shardIds: shardIds.length > 0 || buckets.length > 0 ? shardIds : routing.shardIds.slice(0, 1), buckets };
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

/** Per map (its owners array): the members last checked against it, and the answer. */
const covered = new WeakMap<readonly string[], { readonly members: string; readonly ok: boolean }>();

/**
 * The shards a broadcast reads must together own every bucket of the map it routes by (or, for
 * a narrowed read, every bucket it needs), or some rows would be missing from the answer: then
 * it fails (retryable) rather than answer wrong.
 */
export function requireCoverage(routing: BroadcastRouting): void {
  let ok: boolean;
  if (routing.buckets !== undefined) ok = ownsBuckets(routing, routing.buckets);
  else {
    // Cached per map and member list: the members can change while the map does not.
    const members = routing.shardIds.join('\u0000');
    const cached = covered.get(routing.owners);
    if (cached?.members === members) ok = cached.ok;
    else {
      const read = new Set(routing.shardIds);
      ok = routing.owners.every((owner) => read.has(owner));
      covered.set(routing.owners, { members, ok });
    }
  }
  if (!ok) {
    throw new ShardRouterError(
      'STALE_BUCKET_MAP',
      `bucket map version ${routing.mapVersion} gives buckets to shards outside ${routing.shardIds.join(', ')}: a broadcast would miss their rows`,
    );
  }
}

/** Whether the shards read own every one of `buckets` (a bucket outside the map, or owned by no member, is not covered). */
function ownsBuckets(routing: BroadcastRouting, buckets: readonly number[]): boolean {
  const read = new Set(routing.shardIds);
  return buckets.every((bucket) => routing.owners[bucket] !== undefined && read.has(routing.owners[bucket]!));
}
