import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redactConnectionString, ShardRouter } from '../../src/index.js';
import { startLocalCluster } from '../../src/local.js';
import type { VerifyReport } from '../../src/index.js';
import type { LocalCluster } from '../../src/local.js';
import { createScratchDatabases, withServer } from '../support/cluster.js';
import { runCli } from '../support/cli.js';
import type { CliRun } from '../support/cli.js';

/** The CLI's rebalancing commands (verify, move-bucket, rebalance, add-shard) through the CLI's entry, against real shards. */

/** The CLI against the scratch shards. */
const cli = (args: readonly string[]) => runCli(args, { PG_SHARD_URLS: scratch.urls.join(',') });

let scratch: Awaited<ReturnType<typeof createScratchDatabases>>;
/** A server of its own for add-shard (one server's databases share the prepared-transaction gids). */
let spare: LocalCluster;
let router: ShardRouter;
const keys = Array.from({ length: 200 }, (_, i) => `user-${i}`);

const ITEMS = 'CREATE TABLE items (id text PRIMARY KEY, n int NOT NULL, note text)';
const PLANS = 'CREATE TABLE plans (code text PRIMARY KEY, price int NOT NULL)';

/** Rows of `items` on each scratch server, read past the router. */
async function rowsPerServer(): Promise<number[]> {
  return Promise.all(
    scratch.urls.map((url) =>
      withServer(url, async (client) => (await client.query<{ n: number }>('SELECT count(*)::int AS n FROM items')).rows[0]!.n),
    ),
  );
}

/** Every key reads back through the router with its value. */
async function expectRowsIntact(): Promise<void> {
  const found = await Promise.all(
    keys.map(async (key, i) => (await router.execute<{ n: number }>(key, 'SELECT n FROM items WHERE id = $1', [key])).rows[0]?.n === i),
  );
  expect(found.every(Boolean)).toBe(true);
  expect((await rowsPerServer()).reduce((a, b) => a + b, 0)).toBe(keys.length);
}

function expectNoPassword(run: CliRun, url: string): void {
  const password = decodeURIComponent(new URL(url).password);
  if (password !== '') expect(run.stdout + run.stderr).not.toContain(password);
}

beforeAll(async () => {
  [scratch, spare] = await Promise.all([createScratchDatabases(), startLocalCluster({ shards: 1 })]);
  router = await ShardRouter.connect({
    shards: scratch.urls.map((connectionString, index) => ({ id: `s${index}`, connectionString })),
    bucketCount: 16,
    recovery: { intervalMillis: 0, atConnect: false },
  });
  for (const url of scratch.urls) {
    await withServer(url, async (client) => {
      await client.query(ITEMS);
      await client.query(PLANS);
    });
  }
  await router.registerShardedTable('items', 'id');
  await router.registerReferenceTable('plans');
  await router.broadcast("INSERT INTO plans (code, price) VALUES ('free', 0), ('pro', 10)");
  // Ten at a time (the pool's size), so a loaded machine never waits out the pool's acquire timeout.
  for (let start = 0; start < keys.length; start += 10) {
    await Promise.all(
      keys
        .slice(start, start + 10)
        .map((key, offset) =>
          router.execute(key, 'INSERT INTO items (id, n, note) VALUES ($1, $2, $3)', [key, start + offset, 'x'.repeat(100)]),
        ),
    );
  }
});

afterAll(async () => {
  await router?.close();
  await scratch?.drop();
  await spare?.stop();
});

describe('pg-shard-router rebalancing commands', () => {
  it('verify reports a clean cluster (exit 0), as text and JSON', async () => {
    const [text, json] = await Promise.all([cli(['verify']), cli(['verify', '--json'])]);
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`cluster ${router.clusterId}, bucket map version `);
    expect(text.stdout).toMatch(/^ {2}public\.items( +\d+){4} +200$/m);
    expect(text.stdout).toContain('misplaced rows: none');
    // 2: plans and the outbox's groups table (registered by the library).
    expect(text.stdout).toContain('reference tables: 2 identical on every shard');
    expect(text.stdout).toMatch(/\nOK\n$/);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as VerifyReport & { clusterId: string };
    // items, a reference table, the library's idempotency records, saga log and the outbox's 4 tables.
    expect(report).toMatchObject({ clusterId: router.clusterId, ok: true, misplaced: [], divergent: [], openMoves: 0, tablesChecked: 8 });
    expect(Object.values(report.rowCounts['public.items']!).reduce((a, b) => a + b, 0)).toBe(200);
  });

  it('move-bucket --dry-run changes nothing; without it the bucket moves with its rows', async () => {
    const bucket = router.bucketFor(keys[0]!);
    const from = router.bucketMap.ownerOf(bucket);
    const to = router.shardIds.find((id) => id !== from)!;
    const version = router.bucketMap.version;
    const before = await rowsPerServer();

    const dry = await cli(['move-bucket', String(bucket), to, '--dry-run']);
    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`move bucket ${bucket} to ${to} (dry run: nothing changes): 1 move, 1 bucket`);
    expect(dry.stdout).toMatch(new RegExp(`^ +1 {2}${from} +${to} +1 {2}${bucket}$`, 'm'));
    const unchanged = await router.refreshMap();
    expect(unchanged.version).toBe(version);
    expect(unchanged.ownerOf(bucket)).toBe(from);
    expect(await rowsPerServer()).toEqual(before);

    const real = await cli(['move-bucket', String(bucket), to]);
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/done: 1 move, 1 bucket, \d+ rows, [\d.]+ MB copied in /);
    expect(real.stdout).toContain('longest write pause: ');
    // Not a terminal: whole progress lines, the last one full.
    expect(real.stderr).toMatch(/^\[#{20}\] {2}1\/1 buckets {2}move 1\/1 .* done .*MB\/s {2}ETA 0 s$/m);
    expect(real.stderr).not.toContain('\r');
    const after = await router.refreshMap();
    expect(after.version).toBe(version + 1);
    expect(after.ownerOf(bucket)).toBe(to);
    await expectRowsIntact();
    const moved = before[Number(from.slice(1))]! - (await rowsPerServer())[Number(from.slice(1))]!;
    expect(moved).toBeGreaterThan(0);
    expect(real.stdout).toContain(`${moved} rows`);

    expect((await router.rebalancer().verify()).ok).toBe(true);
  });

  it('rebalance --dry-run prints the plan that evens the buckets out again; rebalance runs it', async () => {
    // After the move above one shard has 5 buckets and one 3.
    const counts = [...router.bucketMap.bucketsPerShard().values()].sort();
    expect(counts).toEqual([3, 4, 4, 5]);
    const version = router.bucketMap.version;

    const dry = await cli(['rebalance', '--dry-run', '--by', 'count']);
    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('rebalance plan (by count) (dry run: nothing changes): 1 move, 1 bucket');
    expect(dry.stdout).toMatch(/^ {2}s\d +5 +4$/m);
    expect(dry.stdout).toMatch(/^ {2}s\d +3 +4$/m);
    expect((await router.refreshMap()).version).toBe(version);

    const real = await cli(['rebalance', '--buckets-per-move', '4', '--resume']);
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/^resume: no open moves\n/);
    expect(real.stdout).toContain('rebalance plan (by count, 4 buckets per move): 1 move, 1 bucket');
    expect(real.stdout).toContain('done: 1 move, 1 bucket');
    const after = await router.refreshMap();
    expect([...after.bucketsPerShard().values()]).toEqual([4, 4, 4, 4]);
    await expectRowsIntact();

    const again = await cli(['rebalance', '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({
      clusterId: router.clusterId,
      dryRun: false,
      plan: [],
      moves: [],
      bucketsPerShard: { s0: 4, s1: 4, s2: 4, s3: 4 },
    });
  });

  it('verify exits 2 and lists a row on a shard that does not own its bucket; remove-shard --dry-run plans', async () => {
    const stray = 'stray-key';
    const owner = router.shardFor(stray);
    const wrong = router.shardIds.find((id) => id !== owner)!;
    const wrongUrl = scratch.urls[Number(wrong.slice(1))]!;
    // Past the router (no map version, so no fence): what a buggy migration might do.
    await withServer(wrongUrl, (client) => client.query('INSERT INTO items (id, n) VALUES ($1, -1)', [stray]));
    try {
      const version = router.bucketMap.version;
      const [verify, remove] = await Promise.all([cli(['verify']), cli(['remove-shard', 's3', '--dry-run'])]);
      expect(verify.code).toBe(2);
      expect(verify.stdout).toContain('misplaced rows: 1 (on a shard that does not own their bucket)');
      expect(verify.stdout).toMatch(new RegExp(`^ {2}public\\.items +${wrong} +${router.bucketFor(stray)} +${owner} +1 +${stray}$`, 'm'));
      expect(verify.stdout).toMatch(/NOT OK: misplaced or divergent rows \(exit code 2\)\n$/);

      expect(remove.code).toBe(0);
      expect(remove.stdout).toContain('remove shard s3: move its buckets to the others (dry run: nothing changes): ');
      expect(remove.stdout).toMatch(/^ {2}s3 +4 +0$/m);
      expect((await router.refreshMap()).version).toBe(version);
      expect(router.shardIds).toContain('s3');
    } finally {
      await withServer(wrongUrl, (client) => client.query('DELETE FROM items WHERE id = $1', [stray]));
    }
  });

  it('add-shard --dry-run checks a new server without changing anything, and never prints its password', async () => {
    const url = spare.connectionStrings[0]!;
    const notReady = await cli(['add-shard', 's4', url, '--dry-run']);
    expect(notReady.code).toBe(1);
    expect(notReady.stderr).toMatch(
      /^pg-shard-router: INVALID_ARGUMENT: shard s4 is not ready: public\.items does not exist; public\.plans does not exist/,
    );
    expectNoPassword(notReady, url);

    await withServer(url, async (client) => {
      await client.query(ITEMS);
      await client.query(PLANS);
    });
    const ready = await cli(['add-shard', 's4', url, '--dry-run']);
    expect(ready.stderr).toBe('');
    expect(ready.code).toBe(0);
    expect(ready.stdout).toContain(`add shard s4 (${redactConnectionString(url)}) (dry run: nothing changes)`);
    expect(ready.stdout).toContain('reference tables it would get a copy of: public.plans');
    expectNoPassword(ready, url);
    const { rows } = await withServer(url, (client) =>
      client.query<{ present: boolean }>("SELECT to_regnamespace('shard_router') IS NOT NULL AS present"),
    );
    expect(rows).toEqual([{ present: false }]);
    await router.refreshMap();
    expect(router.shardIds).toEqual(['s0', 's1', 's2', 's3']);
  });

  it('rejects bad arguments with exit code 1 and INVALID_ARGUMENT', async () => {
    const [bucket, by, shard, missing, undo] = await Promise.all([
      cli(['move-bucket', 'seven', 's1']),
      cli(['rebalance', '--by', 'weight']),
      cli(['move-bucket', '1', 's9']),
      cli(['remove-shard']),
      cli(['rebalance', '--undo']),
    ]);
    for (const run of [bucket, by, shard, missing, undo]) {
      expect(run.code).toBe(1);
      expect(run.stdout).toBe('');
    }
    expect(bucket.stderr).toBe('pg-shard-router: INVALID_ARGUMENT: <bucket> must be a non-negative integer, got "seven"\n');
    expect(by.stderr).toMatch(
      /^pg-shard-router: INVALID_ARGUMENT: --by must be "count" or "size", got "weight"\nusage: pg-shard-router rebalance /,
    );
    expect(shard.stderr).toBe('pg-shard-router: INVALID_ARGUMENT: unknown or removed shard "s9"\n');
    expect(undo.stderr).toMatch(/^pg-shard-router: INVALID_ARGUMENT: --undo goes with --resume\n/);
    expect(missing.stderr).toMatch(/^pg-shard-router: INVALID_ARGUMENT: missing <id>\nusage: pg-shard-router remove-shard <id>/);
  });
});
