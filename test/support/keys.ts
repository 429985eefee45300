import type { ShardRouter } from '../../src/index.js';

/** The first key `${prefix}-<n>` (n = 0, 1, ...) that the router places on `shardId`, skipping `taken`. */
export function keyOn(
  router: Pick<ShardRouter, 'shardFor'>,
  shardId: string,
  prefix = 'k',
  taken: ReadonlySet<string> = new Set(),
): string {
  for (let n = 0; n < 1_000_000; n++) {
    const key = `${prefix}-${n}`;
    if (!taken.has(key) && router.shardFor(key) === shardId) return key;
  }
  throw new Error(`no key found for shard ${shardId}`);
}

/** One key per listed shard, in order. */
export function keysOn(router: Pick<ShardRouter, 'shardFor'>, shardIds: readonly string[], prefix = 'k'): string[] {
  return shardIds.map((shardId) => keyOn(router, shardId, prefix));
}
