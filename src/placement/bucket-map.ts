import { ShardRouterError } from '../errors.js';

/**
 * Which shard owns each virtual bucket, at one version. Keys never change buckets
 * (bucket = hashKey(key) % bucketCount, bucketCount fixed for the cluster's life); only bucket
 * owners change, and every change bumps the version. Immutable.
 *
 * @example
 * const map = BucketMap.even(['s0', 's1'], 4); // buckets 0-1 on s0, 2-3 on s1, version 1
 * map.ownerOf(3); // 's1'
 */
export class BucketMap {
  readonly version: number;
  readonly #owners: readonly string[];

  private constructor(version: number, owners: readonly string[]) {
    this.version = version;
    this.#owners = owners;
  }

  /**
   * The map a new cluster starts with: contiguous bucket ranges, sizes differing by at most one,
   * in the given shard order. Contiguous ranges keep a later split (moving the top of one
   * shard's range to a new shard) a single range.
   */
  static even(shardIds: readonly string[], bucketCount: number, version = 1): BucketMap {
    if (shardIds.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'a bucket map needs at least one shard');
    if (!Number.isSafeInteger(bucketCount) || bucketCount < 1) {
      throw new ShardRouterError('INVALID_ARGUMENT', `bucketCount must be a positive integer, got ${bucketCount}`);
    }
    const owners = Array.from({ length: bucketCount }, (_, bucket) => shardIds[Math.floor((bucket * shardIds.length) / bucketCount)]!);
    return new BucketMap(version, Object.freeze(owners));
  }

  /** A map as stored in the catalog: `owners[bucket]` is the owning shard id. */
  static fromOwners(version: number, owners: readonly string[]): BucketMap {
    if (!Number.isSafeInteger(version) || version < 1) {
      throw new ShardRouterError('INVALID_ARGUMENT', `bucket map version must be a positive integer, got ${version}`);
    }
    if (owners.length === 0) throw new ShardRouterError('INVALID_ARGUMENT', 'a bucket map needs at least one bucket');
    return new BucketMap(version, Object.freeze([...owners]));
  }

  get bucketCount(): number {
    return this.#owners.length;
  }

  /** The owner of each bucket, indexed by bucket. */
  get owners(): readonly string[] {
    return this.#owners;
  }

  ownerOf(bucket: number): string {
    const owner = this.#owners[bucket];
    if (owner === undefined) throw new ShardRouterError('INVALID_ARGUMENT', `bucket ${bucket} is outside 0..${this.bucketCount - 1}`);
    return owner;
  }

  /** The distinct shard ids that own at least one bucket, in first-owned order. */
  shardIds(): string[] {
    return [...new Set(this.#owners)];
  }

  /** How many buckets each shard owns. */
  bucketsPerShard(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const owner of this.#owners) counts.set(owner, (counts.get(owner) ?? 0) + 1);
    return counts;
  }
}
