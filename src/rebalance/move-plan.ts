import { ShardRouterError } from '../errors.js';
import type { BucketMap } from '../placement/bucket-map.js';

/** One bucket changing owner. */
export interface BucketMove {
  readonly bucket: number;
  readonly from: string;
  readonly to: string;
}

/** Buckets moved together (one copy, one cutover): same source and target. */
export interface PlannedMove {
  readonly buckets: readonly number[];
  readonly source: string;
  readonly target: string;
}

/**
 * The fewest bucket moves after which every shard in `shardIds` owns the mean number of buckets
 * +-1 (floor or ceil of buckets / shards) and shards outside it own none (a shard being
 * removed). Shards that stay keep as many of their own buckets as they can.
 */
export function planByCount(map: BucketMap, shardIds: readonly string[]): BucketMove[] {
  if (shardIds.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'rebalancing needs at least one shard to own buckets');
  const owned = bucketsByShard(map, shardIds);
  // The shards holding most get the ceil quotas, so fewer buckets move.
  const order = [...shardIds].sort((a, b) => owned.get(b)!.length - owned.get(a)!.length || (a < b ? -1 : 1));
  const floor = Math.floor(map.bucketCount / shardIds.length);
  const extra = map.bucketCount % shardIds.length;
  const quota = new Map(order.map((id, index) => [id, floor + (index < extra ? 1 : 0)]));
  return assign(owned, quota);
}

/**
 * Moves that even out data size instead of bucket counts: repeatedly the largest bucket of the
 * heaviest shard that fits goes to the lightest, while that narrows the gap between them.
 * `sizes` holds bytes per bucket (buckets without data are 0). Shards outside `shardIds` are
 * emptied first.
 */
export function planBySize(map: BucketMap, shardIds: readonly string[], sizes: ReadonlyMap<number, number>): BucketMove[] {
  if (shardIds.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'rebalancing needs at least one shard to own buckets');
  const owners = [...map.owners];
  const moves: BucketMove[] = [];
  const load = new Map(shardIds.map((id) => [id, 0]));
  const sizeOf = (bucket: number) => sizes.get(bucket) ?? 0;
  // Empty the shards being removed onto the lightest shard, bucket by bucket.
  for (let bucket = 0; bucket < owners.length; bucket++) {
    if (load.has(owners[bucket]!)) load.set(owners[bucket]!, load.get(owners[bucket]!)! + sizeOf(bucket));
  }
  const byDescendingSize = owners.map((_, bucket) => bucket).sort((a, b) => sizeOf(b) - sizeOf(a) || a - b);
  for (const bucket of byDescendingSize) {
    const from = owners[bucket]!;
    if (load.has(from)) continue;
    const to = lightest(load);
    moves.push({ bucket, from, to });
    owners[bucket] = to;
    load.set(to, load.get(to)! + sizeOf(bucket));
  }
  for (let guard = 0; guard < owners.length; guard++) {
    const heavy = heaviest(load);
    const light = lightest(load);
    const gap = load.get(heavy)! - load.get(light)!;
    // The largest bucket of the heavy shard that strictly narrows the gap (size < gap).
    const candidate = byDescendingSize.find((bucket) => owners[bucket] === heavy && sizeOf(bucket) > 0 && sizeOf(bucket) < gap);
    if (candidate === undefined) break;
    moves.push({ bucket: candidate, from: heavy, to: light });
    owners[candidate] = light;
    load.set(heavy, load.get(heavy)! - sizeOf(candidate));
    load.set(light, load.get(light)! + sizeOf(candidate));
  }
  return collapse(moves);
}

/** Groups bucket moves by (source, target) into moves of at most `bucketsPerMove` buckets. */
export function groupMoves(moves: readonly BucketMove[], bucketsPerMove: number): PlannedMove[] {
  const groups = new Map<string, BucketMove[]>();
  for (const move of moves) {
    const key = `${move.from}\u0000${move.to}`;
    const group = groups.get(key) ?? [];
    group.push(move);
    groups.set(key, group);
  }
  const planned: PlannedMove[] = [];
  for (const group of groups.values()) {
    const buckets = group.map((move) => move.bucket).sort((a, b) => a - b);
    for (let offset = 0; offset < buckets.length; offset += bucketsPerMove) {
      planned.push({ buckets: buckets.slice(offset, offset + bucketsPerMove), source: group[0]!.from, target: group[0]!.to });
    }
  }
  return planned;
}

function bucketsByShard(map: BucketMap, shardIds: readonly string[]): Map<string, number[]> {
  const owned = new Map<string, number[]>(shardIds.map((id) => [id, []]));
  map.owners.forEach((owner, bucket) => {
    const list = owned.get(owner) ?? [];
    list.push(bucket);
    owned.set(owner, list);
  });
  return owned;
}

/** Moves the surplus of over-quota shards (and everything on shards without a quota) to under-quota ones. */
function assign(owned: Map<string, number[]>, quota: Map<string, number>): BucketMove[] {
  const surplus: { bucket: number; from: string }[] = [];
  for (const [shard, buckets] of owned) {
    const keep = quota.get(shard) ?? 0;
    // Give away the highest-numbered buckets: a shard keeps a contiguous low range where it had one.
    for (const bucket of buckets.slice(keep)) surplus.push({ bucket, from: shard });
  }
  const moves: BucketMove[] = [];
  for (const [shard, want] of quota) {
    let missing = want - Math.min(owned.get(shard)!.length, want);
    while (missing-- > 0) {
      const next = surplus.shift();
      if (!next) break;
      moves.push({ bucket: next.bucket, from: next.from, to: shard });
    }
  }
  return moves.sort((a, b) => a.bucket - b.bucket);
}

function heaviest(load: Map<string, number>): string {
  return [...load].reduce((best, entry) => (entry[1] > best[1] ? entry : best))[0];
}

function lightest(load: Map<string, number>): string {
  return [...load].reduce((best, entry) => (entry[1] < best[1] ? entry : best))[0];
}

/** A bucket moved twice (a -> b -> c) becomes one move (a -> c); one moved back disappears. */
function collapse(moves: readonly BucketMove[]): BucketMove[] {
  const first = new Map<number, BucketMove>();
  const last = new Map<number, string>();
  for (const move of moves) {
    if (!first.has(move.bucket)) first.set(move.bucket, move);
    last.set(move.bucket, move.to);
  }
  return [...first.values()]
    .map((move) => ({ bucket: move.bucket, from: move.from, to: last.get(move.bucket)! }))
    .filter((move) => move.from !== move.to)
    .sort((a, b) => a.bucket - b.bucket);
}
