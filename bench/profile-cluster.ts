import { ShardRouter } from '../src/index.js';
import { startLocalCluster } from '../src/local.js';
import type { LocalCluster } from '../src/local.js';

/**
 * The set-up the hand-run profiles share (profile-publish.ts, profile-relay.ts): four local
 * shards and a router over them (pool of 20, no background recovery) under `schema`'s catalog;
 * runs `work`, then closes the router and stops the shards whatever happened.
 */
export async function withProfileCluster(
  schema: string,
  work: (router: ShardRouter, cluster: LocalCluster) => Promise<void>,
): Promise<void> {
  const cluster = await startLocalCluster({ shards: 4 });
  try {
    const router = await ShardRouter.connect({
      shards: cluster.shardConfigs(),
      catalogSchema: `${schema}_catalog`,
      pool: { max: 20 },
      recovery: { intervalMillis: 0, atConnect: false },
    });
    try {
      await work(router, cluster);
    } finally {
      await router.close();
    }
  } finally {
    await cluster.stop();
  }
}
