import { afterAll, describe, expect, it } from 'vitest';
import { ShardRouter, bucketOf } from '../../src/index.js';
import { dropSchemas, rejectionOf, shardConfigs, shardUrls, uniqueName, withServer } from '../support/cluster.js';

/** Every catalog schema a test creates, dropped at the end. */
const catalogs: string[] = [];
function newCatalog(): string {
  const name = uniqueName('cat');
  catalogs.push(name);
  return name;
}

afterAll(() => dropSchemas(...catalogs));

describe('bucket map and shard identity', () => {
  it('creates the cluster once: a second router sees the same cluster id, map and version', async () => {
    const catalogSchema = newCatalog();
    const first = await ShardRouter.connect({ shards: shardConfigs(), catalogSchema });
    const second = await ShardRouter.connect({ shards: [...shardConfigs()].reverse(), catalogSchema });
    try {
      expect(second.clusterId).toBe(first.clusterId);
      expect(second.bucketMap.version).toBe(1);
      expect(second.bucketMap.version).toBe(first.bucketMap.version);
      expect(second.bucketMap.owners).toEqual(first.bucketMap.owners);
      expect(first.bucketCount).toBe(1024);
      expect([...first.bucketMap.bucketsPerShard().values()]).toEqual([256, 256, 256, 256]);
      for (const key of ['a', 'b', 1, 2, 3n]) expect(second.shardFor(key)).toBe(first.shardFor(key));
    } finally {
      await Promise.all([first.close(), second.close()]);
    }
  });

  it('stores identity and the versioned map on every shard, in PostgreSQL', async () => {
    const catalogSchema = newCatalog();
    const router = await ShardRouter.connect({ shards: shardConfigs(), catalogSchema, bucketCount: 64 });
    await router.close();
    for (const { id, connectionString } of shardConfigs()) {
      await withServer(connectionString, async (client) => {
        const identity = await client.query(
          `SELECT cluster_id::text, shard_id, bucket_count, complete FROM ${catalogSchema}.shard_identity`,
        );
        expect(identity.rows).toEqual([{ cluster_id: router.clusterId, shard_id: id, bucket_count: 64, complete: true }]);
        const map = await client.query(`SELECT version::int, owners FROM ${catalogSchema}.bucket_map`);
        expect(map.rows).toEqual([{ version: 1, owners: router.bucketMap.owners }]);
      });
    }
  });

  it('keeps the bucket count chosen at creation: omitting it loads it, a different one is INVALID_CONFIG', async () => {
    const catalogSchema = newCatalog();
    await (await ShardRouter.connect({ shards: shardConfigs(), catalogSchema, bucketCount: 128 })).close();
    const again = await ShardRouter.connect({ shards: shardConfigs(), catalogSchema });
    expect(again.bucketCount).toBe(128);
    await again.close();
    await expect(ShardRouter.connect({ shards: shardConfigs(), catalogSchema, bucketCount: 256 })).rejects.toMatchObject({
      code: 'INVALID_CONFIG',
    });
  });

  it.each([1024, 1000, 7, 1])('routes by hashKey %% bucketCount, power of two or not (bucketCount %i)', async (bucketCount) => {
    const router = await ShardRouter.connect({ shards: shardConfigs(), catalogSchema: newCatalog(), bucketCount });
    try {
      for (const key of ['a', 'user-1', 'ü', 12345, -7, 2n ** 70n, ...Array.from({ length: 2000 }, (_, i) => `k${i}`)]) {
        const bucket = bucketOf(key, bucketCount);
        expect(router.bucketFor(key)).toBe(bucket);
        expect(router.shardFor(key)).toBe(router.bucketMap.ownerOf(bucket));
      }
    } finally {
      await router.close();
    }
  });

  it('fails with SHARD_IDENTITY_MISMATCH when shard URLs are swapped, and names the shard', async () => {
    const catalogSchema = newCatalog();
    await (await ShardRouter.connect({ shards: shardConfigs(), catalogSchema })).close();
    const urls = shardUrls();
    const swapped = [
      { id: 's0', connectionString: urls[1]! },
      { id: 's1', connectionString: urls[0]! },
      { id: 's2', connectionString: urls[2]! },
      { id: 's3', connectionString: urls[3]! },
    ];
    const error = await rejectionOf(ShardRouter.connect({ shards: swapped, catalogSchema }));
    expect(error).toMatchObject({ code: 'SHARD_IDENTITY_MISMATCH' });
    expect((error as Error).message).toMatch(/configured as shard s[01] .* reaches shard s[01] of cluster/);
    for (const url of urls) {
      const password = new URL(url).password;
      if (password !== '') expect((error as Error).message).not.toContain(password);
    }
  });

  it("fails with SHARD_IDENTITY_MISMATCH when a shard id points at another cluster's server", async () => {
    const catalogSchema = newCatalog();
    // Cluster A on servers 0-1, cluster B on servers 2-3, same catalog schema name.
    const a = await ShardRouter.connect({ shards: shardConfigs([0, 1]), catalogSchema });
    const b = await ShardRouter.connect({ shards: shardConfigs([2, 3]), catalogSchema });
    expect(a.clusterId).not.toBe(b.clusterId);
    await Promise.all([a.close(), b.close()]);
    // s1 of "A" is really s1 of B.
    const error = await rejectionOf(ShardRouter.connect({ shards: shardConfigs([0, 3]), catalogSchema }));
    expect(error).toMatchObject({ code: 'SHARD_IDENTITY_MISMATCH' });
    expect((error as Error).message).toContain('different clusters');
  });

  it('refuses a new or wiped server in place of a shard of a complete cluster', async () => {
    const catalogSchema = newCatalog();
    await (await ShardRouter.connect({ shards: shardConfigs([0, 1]), catalogSchema })).close();
    // Server 2 has never seen this catalog: as "s1" it would silently lose s1's data.
    const error = await rejectionOf(ShardRouter.connect({ shards: shardConfigs([0, 2]), catalogSchema }));
    expect(error).toMatchObject({ code: 'SHARD_IDENTITY_MISMATCH', shardId: 's1' });
    expect((error as Error).message).toContain('no pg-shard-router catalog');
  });

  it('refuses two shard ids that reach the same database', async () => {
    const catalogSchema = newCatalog();
    const url = new URL(shardUrls()[0]!);
    const sameDatabase = new URL(url);
    sameDatabase.hostname = 'localhost';
    const error = await rejectionOf(
      ShardRouter.connect({
        shards: [
          { id: 's0', connectionString: url.toString() },
          { id: 's1', connectionString: sameDatabase.toString() },
        ],
        catalogSchema,
      }),
    );
    expect(error).toMatchObject({ code: 'SHARD_IDENTITY_MISMATCH' });
  });

  it('learns a shard its config leaves out from the shard registry, and routes to it', async () => {
    const catalogSchema = newCatalog();
    const full = await ShardRouter.connect({ shards: shardConfigs(3), catalogSchema });
    const partial = await ShardRouter.connect({ shards: shardConfigs(2), catalogSchema });
    expect(partial.shardIds).toEqual(['s0', 's1', 's2']);
    const key = Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => full.shardFor(k) === 's2')!;
    expect(partial.shardFor(key)).toBe('s2');
    expect((await partial.execute(key, 'SELECT current_database() AS db')).shardId).toBe('s2');
    await Promise.all([full.close(), partial.close()]);
  });

  it('finishes a creation that was cut short, keeping the cluster id', async () => {
    const catalogSchema = newCatalog();
    const router = await ShardRouter.connect({ shards: shardConfigs(), catalogSchema });
    await router.close();
    // As if the creator died after installing shards 0-2 and before marking any complete.
    for (const [index, url] of shardUrls().entries()) {
      await withServer(url, (client) =>
        client.query(index === 3 ? `DROP SCHEMA ${catalogSchema} CASCADE` : `UPDATE ${catalogSchema}.shard_identity SET complete = false`),
      );
    }
    const resumed = await ShardRouter.connect({ shards: shardConfigs(), catalogSchema });
    expect(resumed.clusterId).toBe(router.clusterId);
    expect(resumed.bucketMap.owners).toEqual(router.bucketMap.owners);
    await resumed.close();
    for (const url of shardUrls()) {
      const { rows } = await withServer(url, (client) => client.query(`SELECT complete FROM ${catalogSchema}.shard_identity`));
      expect(rows).toEqual([{ complete: true }]);
    }
  });

  it('lets routers that connect to fresh shards at the same moment agree on one cluster', async () => {
    const catalogSchema = newCatalog();
    const routers = await Promise.all(Array.from({ length: 4 }, () => ShardRouter.connect({ shards: shardConfigs(), catalogSchema })));
    expect(new Set(routers.map((router) => router.clusterId)).size).toBe(1);
    await Promise.all(routers.map((router) => router.close()));
  });
});
