import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redactConnectionString, ShardRouter } from '../../src/index.js';
import { createScratchDatabases, shardUrls, uniqueName, withServer } from '../support/cluster.js';
import { runCli, runCliProcess } from '../support/cli.js';
import type { CliRun } from '../support/cli.js';

/**
 * The pg-shard-router CLI (status, recover) against real servers: in this process through its
 * entry, and as the real program where the exit code and output of the process are the point.
 */

const cli = runCli;

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
let clusterId: string;
/** A database with no catalog, on the first server. */
let noCatalogUrl: string;
const noCatalogDatabase = uniqueName('nocat');
const orphanGid = () => `psr:${clusterId}:s0:x-${'0'.repeat(16)}`;

function withDatabase(url: string, database: string): string {
  const copy = new URL(url);
  copy.pathname = `/${database}`;
  return copy.toString();
}

/** This database's prepared transactions on each scratch server. */
async function preparedGids(): Promise<string[][]> {
  return Promise.all(
    scratch.urls.map((url) =>
      withServer(url, async (client) =>
        (await client.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE database = current_database()')).rows.map(
          (row) => row.gid,
        ),
      ),
    ),
  );
}

beforeAll(async () => {
  scratch = await createScratchDatabases();
  noCatalogUrl = withDatabase(shardUrls()[0]!, noCatalogDatabase);
  await withServer(shardUrls()[0]!, (client) => client.query(`CREATE DATABASE ${noCatalogDatabase}`));
  const router = await ShardRouter.connect({
    shards: scratch.urls.map((connectionString, index) => ({ id: `s${index}`, connectionString })),
    recovery: { intervalMillis: 0, atConnect: false },
  });
  clusterId = router.clusterId;
  await router.close();
  await withServer(scratch.urls[1]!, (client) => client.query('CREATE TABLE cli_probe (id int)'));
});

afterAll(async () => {
  // A prepared transaction would block DROP DATABASE; a failed test may leave one behind.
  for (const url of scratch.urls) {
    await withServer(url, async (client) => {
      const { rows } = await client.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE database = current_database()');
      for (const { gid } of rows) await client.query(`ROLLBACK PREPARED '${gid.replace(/'/g, "''")}'`);
    });
  }
  await scratch.drop();
  await withServer(shardUrls()[0]!, (client) => client.query(`DROP DATABASE IF EXISTS ${noCatalogDatabase} WITH (FORCE)`));
});

function expectNoPasswords(run: CliRun, urls: readonly string[]): void {
  for (const url of urls) {
    const password = decodeURIComponent(new URL(url).password);
    if (password !== '') expect(run.stdout + run.stderr).not.toContain(password);
  }
}

describe('pg-shard-router status and recover', () => {
  it('lists an orphan prepared transaction, recover rolls it back, and status then lists none', async () => {
    await withServer(scratch.urls[1]!, async (client) => {
      await client.query('BEGIN');
      await client.query('INSERT INTO cli_probe VALUES (1)');
      await client.query(`PREPARE TRANSACTION '${orphanGid()}'`);
    });
    // URLs in reverse order: the shard ids come from the servers' catalogs, not from the order.
    const shards = ['--shards', [...scratch.urls].reverse().join(',')];

    const before = await cli(['status', ...shards]);
    expect(before.stderr).toBe('');
    expect(before.code).toBe(0);
    expect(before.stdout).toContain(`cluster ${clusterId}, bucket map version 1`);
    expect(before.stdout).toContain(`s1  ${redactConnectionString(scratch.urls[1]!)}`);
    expect(before.stdout).toMatch(new RegExp(`this cluster {2}${orphanGid()} {2}\\(owner \\w+\\)`));
    expect(before.stdout).toMatch(/max_prepared_transactions [1-9]/);
    expectNoPasswords(before, scratch.urls);

    const json = await cli(['status', '--json'], { PG_SHARD_URLS: scratch.urls.join(',') });
    expect(json.code).toBe(0);
    const status = JSON.parse(json.stdout) as {
      clusterId: string;
      shards: { shardId: string; reachable: boolean; preparedTransactions: { gid: string; ours: boolean }[] }[];
    };
    expect(status.clusterId).toBe(clusterId);
    expect(status.shards.map((shard) => [shard.shardId, shard.reachable])).toEqual([
      ['s0', true],
      ['s1', true],
      ['s2', true],
      ['s3', true],
    ]);
    expect(status.shards[1]!.preparedTransactions).toEqual([expect.objectContaining({ gid: orphanGid(), ours: true })]);
    // status changed nothing: the orphan is still there, although it is old enough for recovery.
    expect(await preparedGids()).toEqual([[], [orphanGid()], [], []]);

    const recovered = await cli(['recover', '--grace-ms', '0', ...shards]);
    expect(recovered.stderr).toBe('');
    expect(recovered.code).toBe(0);
    expect(recovered.stdout).toContain('committed 0, rolled back 1, in doubt 0');
    expect(recovered.stdout).toContain(`rolled back  s1  ${orphanGid()}`);
    expect(recovered.stdout).toMatch(/^s1 +1 +0 +1 +0 +0$/m);
    expect(await preparedGids()).toEqual([[], [], [], []]);
    const { rows } = await withServer(scratch.urls[1]!, (client) => client.query('SELECT count(*)::int AS n FROM cli_probe'));
    expect(rows).toEqual([{ n: 0 }]);

    const after = await cli(['status', ...shards]);
    expect(after.code).toBe(0);
    expect(after.stdout).not.toContain(orphanGid());
    expect(after.stdout.match(/prepared transactions: none/g)).toHaveLength(4);
    expect(after.stdout).toContain('no prepared transactions of this cluster');
  });

  it('recover exits 2 and says why when a transaction stays in doubt', async () => {
    // Its decision shard s9 is not part of the cluster, so recovery cannot settle it.
    const stuck = `psr:${clusterId}:s9:x-${'1'.repeat(16)}`;
    await withServer(scratch.urls[2]!, async (client) => {
      await client.query('BEGIN');
      await client.query(`PREPARE TRANSACTION '${stuck}'`);
    });
    try {
      const run = await runCliProcess(['recover', '--grace-ms', '0', '--json'], { PG_SHARD_URLS: scratch.urls.join(',') });
      expect(run.code).toBe(2);
      const report = JSON.parse(run.stdout) as { inDoubt: { gid: string; shardId: string; reason: string }[]; rolledBack: unknown[] };
      expect(report.rolledBack).toEqual([]);
      expect(report.inDoubt).toEqual([{ gid: stuck, shardId: 's2', reason: expect.stringContaining('s9') }]);
    } finally {
      await withServer(scratch.urls[2]!, (client) => client.query(`ROLLBACK PREPARED '${stuck}'`));
    }
  });

  it('rejects bad input with a clear error and exit code 1, without printing passwords', async () => {
    const unknownFlag = await runCliProcess(['status', '--bogus', '--shards', scratch.urls.join(',')]);
    expect(unknownFlag.code).toBe(1);
    expect(unknownFlag.stdout).toBe('');
    expect(unknownFlag.stderr).toMatch(/^pg-shard-router: INVALID_ARGUMENT: Unknown option '--bogus'/);

    const withoutCatalog = [...scratch.urls.slice(0, 3), noCatalogUrl];
    const noCatalog = await cli(['status', '--shards', withoutCatalog.join(',')]);
    expect(noCatalog.code).toBe(1);
    expect(noCatalog.stdout).toBe('');
    expect(noCatalog.stderr).toBe(
      `pg-shard-router: INVALID_ARGUMENT: ${redactConnectionString(noCatalogUrl)} has no pg-shard-router catalog ` +
        '(no table "shard_router".shard_identity): not a shard, or the wrong database or --catalog-schema\n',
    );
    expectNoPasswords(noCatalog, withoutCatalog);

    const badSchema = await cli(['recover', '--catalog-schema', 'Robert"; DROP', '--shards', scratch.urls.join(',')]);
    expect(badSchema.code).toBe(1);
    expect(badSchema.stderr).toMatch(/^pg-shard-router: INVALID_CONFIG: --catalog-schema .* is not valid/);

    const noShards = await cli(['recover']);
    expect(noShards.code).toBe(1);
    expect(noShards.stderr).toContain('INVALID_ARGUMENT: no shards given');
  });
});
