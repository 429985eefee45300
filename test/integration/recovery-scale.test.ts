import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkBacklog, leaveBacklog, planBacklog } from '../../bench/prepared-backlog.js';
import type { BacklogOptions } from '../../bench/prepared-backlog.js';
import { ShardRouter } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { LocalCluster } from '../../src/local.js';

/**
 * Recovery of a crash that left hundreds of prepared transactions (the bench section
 * `recovery` does 10,000 and times it): one recover() settles every one to its decision, in
 * batches per decision shard, and collects the commit rows it no longer needs in the same pass.
 * Its own server (the shared test servers allow 64 prepared transactions), whose two databases
 * are the two shards: prepared names are per server, so this is also the two-databases layout.
 */

const COUNT = 300;
let cluster: LocalCluster;
let urls: string[];

beforeAll(async () => {
  cluster = await startLocalCluster({ shards: 1, maxPreparedTransactions: COUNT + 20 });
  const server = cluster.connectionStrings[0]!;
  const admin = new pg.Client({ connectionString: server });
  await admin.connect();
  try {
    for (const name of ['shard_a', 'shard_b']) await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  urls = ['shard_a', 'shard_b'].map((name) => {
    const url = new URL(server);
    url.pathname = `/${name}`;
    return url.toString();
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

async function onServer(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(sql).finally(() => client.end());
}

async function onEach(sql: string): Promise<void> {
  for (const url of urls) await onServer(url, sql);
}

describe('recovery of a large backlog', () => {
  it(`settles ${COUNT} prepared transactions in one pass, each to its decision, and collects their commit rows`, async () => {
    const router = await ShardRouter.connect({
      shards: urls.map((connectionString, i) => ({ id: `s${i}`, connectionString })),
      recovery: { intervalMillis: 0, atConnect: false },
    });
    try {
      await onEach('CREATE TABLE backlog (gid text PRIMARY KEY)');
      const options: BacklogOptions = {
        urls,
        clusterId: router.clusterId,
        catalog: 'shard_router',
        table: 'backlog',
        count: COUNT,
        connectionsPerShard: 4,
      };
      const entries = planBacklog(options);
      await leaveBacklog(options, entries);
      // Someone else's prepared transaction in the same database: another cluster's prefix.
      const foreign = (shard: number) => `psr:00000000-0000-4000-8000-000000000000:s0:x-${'0'.repeat(16)}:s${shard}`;
      for (const [shard, url] of urls.entries()) await onServer(url, `BEGIN; SELECT 1; PREPARE TRANSACTION '${foreign(shard)}'`);
      const before = await checkBacklog(options, entries);
      expect(before.preparedLeft).toBe(COUNT);

      const report = await router.recover({ graceMillis: 0 });
      const commits = entries.filter((entry) => entry.outcome === 'commit').length;
      expect(report.inDoubt).toEqual([]);
      expect(report.committed).toHaveLength(commits);
      expect(report.rolledBack).toHaveLength(COUNT - commits);
      // Each one settled on its voter's own database, under the name it was prepared with.
      for (const settled of [...report.committed, ...report.rolledBack]) {
        const entry = entries.find((candidate) => candidate.gid === settled.gid)!;
        expect(settled.shardId).toBe(`s${entry.voter}`);
        expect(settled.outcome).toBe(entry.outcome === 'commit' ? 'commit' : 'abort');
      }
      expect(report.decisionsCollected).toBe(commits);
      expect(await checkBacklog(options, entries)).toEqual({ wrongOutcomes: 0, preparedLeft: 0, commitRowsLeft: 0 });
      // The undecided ones got an abort row (kept for its retention); nothing else is left.
      const second = await router.recover({ graceMillis: 0 });
      expect(second.committed.length + second.rolledBack.length + second.inDoubt.length).toBe(0);

      // The other cluster's prepared transactions were left alone, in both databases.
      for (const [shard, url] of urls.entries()) {
        const client = new pg.Client({ connectionString: url });
        await client.connect();
        try {
          const { rows } = await client.query('SELECT gid FROM pg_prepared_xacts WHERE database = current_database()');
          expect(rows).toEqual([{ gid: foreign(shard) }]);
          await client.query(`ROLLBACK PREPARED '${foreign(shard)}'`);
        } finally {
          await client.end();
        }
      }
    } finally {
      await router.close();
    }
  }, 120_000);
});
